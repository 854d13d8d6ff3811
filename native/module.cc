#include "module.h"

#include <map>
#include <string>
#include <vector>

namespace sealed {
namespace {

struct Entry {
  const char* name;
  InitFn init;
};

// Function-local static: safe whatever order the translation units initialise in.
std::vector<Entry>& Registry() {
  static std::vector<Entry> entries;
  return entries;
}

// One per environment, owned by it (napi instance data): deleted when that environment ends.
struct InstanceData {
  std::map<std::string, Napi::FunctionReference> constructors;
};

}  // namespace

void SetConstructor(Napi::Env env, const char* name, Napi::Function cls) {
  env.GetInstanceData<InstanceData>()->constructors[name] = Napi::Persistent(cls);
}

Napi::Function Constructor(Napi::Env env, const char* name) {
  return env.GetInstanceData<InstanceData>()->constructors.at(name).Value();
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new InstanceData());
  Napi::Array modules = Napi::Array::New(env);
  uint32_t i = 0;
  for (const Entry& entry : Registry()) {
    entry.init(env, exports);
    modules.Set(i++, Napi::String::New(env, entry.name));
  }
  exports.Set("modules", modules);
  return exports;
}

bool RegisterModule(const char* name, InitFn init) {
  Registry().push_back(Entry{name, init});
  return true;
}

}  // namespace sealed

static Napi::Object InitSealedTensors(Napi::Env env, Napi::Object exports) {
  return sealed::InitAll(env, exports);
}

NODE_API_MODULE(sealed_tensors, InitSealedTensors)
