// Secure buffers as JS ArrayBuffers: how other native modules find the region behind one.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>

#include "secure_memory.h"

namespace sealed {

struct JsRegion {
  std::unique_ptr<SecureRegion> region;  // null once released
  std::atomic<int> pins{0};              // running native jobs writing into it; release refuses while > 0
};

// A new ArrayBuffer over the region; zeroized and unmapped by release or by its finalizer.
Napi::ArrayBuffer NewSecureArrayBuffer(Napi::Env env, std::unique_ptr<SecureRegion> region);

// The live region behind a secure ArrayBuffer, or null if it is not one (or released). JS thread only.
JsRegion* LookupRegion(Napi::ArrayBuffer ab);

}  // namespace sealed
