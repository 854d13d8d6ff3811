// One addon, several jobs: each .cc registers its exports here instead of editing a shared Init.
#pragma once
#include <napi.h>

namespace sealed {

using InitFn = void (*)(Napi::Env env, Napi::Object exports);

// Returns true so it can initialise a namespace-scope constant at load time.
bool RegisterModule(const char* name, InitFn init);

}  // namespace sealed

#define SEALED_REGISTER(name, fn) \
  static const bool sealed_registered_##name = ::sealed::RegisterModule(#name, fn)
