#include "module.h"

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

}  // namespace

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
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
