// One addon, several jobs: each .cc registers its exports here instead of editing a shared Init.
#pragma once
#include <napi.h>

namespace sealed {

using InitFn = void (*)(Napi::Env env, Napi::Object exports);

// Returns true so it can initialise a namespace-scope constant at load time.
bool RegisterModule(const char* name, InitFn init);

// Each Node environment (the main thread, every worker) initialises the addon anew, and a JS
// function belongs to the environment that made it: classes are kept per environment, never in statics.
void SetConstructor(Napi::Env env, const char* name, Napi::Function cls);
Napi::Function Constructor(Napi::Env env, const char* name);

}  // namespace sealed

#define SEALED_REGISTER(name, fn) \
  static const bool sealed_registered_##name = ::sealed::RegisterModule(#name, fn)
