// One addon, several jobs: each .cc registers its exports here instead of editing a shared Init.
#pragma once
#include <napi.h>

#include <string>

namespace sealed {

using InitFn = void (*)(Napi::Env env, Napi::Object exports);

// Returns true so it can initialise a namespace-scope constant at load time.
bool RegisterModule(const char* name, InitFn init);

// Each Node environment (the main thread, every worker) initialises the addon anew, and a JS
// function belongs to the environment that made it: classes are kept per environment, never in statics.
void SetConstructor(Napi::Env env, const char* name, Napi::Function cls);
Napi::Function Constructor(Napi::Env env, const char* name);

// node-addon-api reaches an instance through T::Unwrap(this) before every prototype method and
// accessor; a class defines its Unwrap with this, so a method called with another object as
// `this` (.call, Reflect.apply) throws a TypeError instead of reading that object as a T.
template <typename T>
T* UnwrapTagged(Napi::Object self, const napi_type_tag* tag, const char* class_name) {
  napi_env env = self.Env();
  napi_valuetype type = napi_undefined;
  bool tagged = false;
  if (napi_typeof(env, self, &type) != napi_ok || (type != napi_object && type != napi_function) ||
      napi_check_object_type_tag(env, self, tag, &tagged) != napi_ok || !tagged) {
    Napi::TypeError err = Napi::TypeError::New(env, std::string("this is not a ") + class_name +
                                                        ": call its methods on the object itself");
    err.Set("code", Napi::String::New(env, "ERR_INVALID_THIS"));
    throw err;
  }
  return Napi::ObjectWrap<T>::Unwrap(self);
}

}  // namespace sealed

#define SEALED_REGISTER(name, fn) \
  static const bool sealed_registered_##name = ::sealed::RegisterModule(#name, fn)
