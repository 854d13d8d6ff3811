// Data keys behind opaque handles: the bytes live only in a SecureRegion, never on the JS heap.
#pragma once
#include <napi.h>

#include <memory>

#include "secure_memory.h"

namespace sealed {

constexpr size_t kDataKeyBytes = 32;

// The key region behind a handle made by keyImport; throws a JS error (ERR_INVALID_ARGUMENT,
// ERR_RELEASED) otherwise. Shared so a running job keeps the key after the handle is released.
std::shared_ptr<SecureRegion> KeyFromHandle(Napi::Env env, Napi::Value handle);

}  // namespace sealed

namespace sealed {

// A new NativeKeyHandle (the kind keyImport makes) owning `key` (kDataKeyBytes in a SecureRegion).
Napi::Object NewKeyHandle(Napi::Env env, std::shared_ptr<SecureRegion> key);

}  // namespace sealed
