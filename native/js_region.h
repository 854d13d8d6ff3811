// Secure buffers as JS ArrayBuffers: how other native modules find the region behind one.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>

#include "secure_memory.h"

namespace sealed {

struct JsRegion {
  std::unique_ptr<SecureRegion> region;  // null once released, or lent to a native job (TakeRegion)
};

// A new ArrayBuffer over the region; zeroized and unmapped by release or by its finalizer.
Napi::ArrayBuffer NewSecureArrayBuffer(Napi::Env env, std::unique_ptr<SecureRegion> region);

// The live region behind a secure ArrayBuffer, or null if it is not one (or released). JS thread only.
JsRegion* LookupRegion(Napi::ArrayBuffer ab);

// Lends a live secure buffer's region to a native job: moves it out and detaches the ArrayBuffer, so
// no JS view reads the region while the job writes to it (unauthenticated plaintext) and release()
// cannot free it under the job. The job hands it back in a new ArrayBuffer (NewSecureArrayBuffer),
// or wipes and unmaps it. Null if `ab` is not a live secure buffer. JS thread only.
std::unique_ptr<SecureRegion> TakeRegion(Napi::ArrayBuffer ab);

}  // namespace sealed
