// The session's ephemeral key pair: generated in the addon, private half only in OpenSSL's secure
// heap (see secure_heap.h), behind an opaque handle; JavaScript sees the public JWK only.
#pragma once
#include <napi.h>
#include <openssl/evp.h>

namespace sealed {

enum class EphemeralKind { kEcP256, kRsa3072 };

// The live key behind a handle from ephemeralKeyGenerate (borrowed: owned by the handle, valid
// while the caller stays on the JS thread). Throws a JS error (ERR_INVALID_ARGUMENT, ERR_RELEASED).
EVP_PKEY* EphemeralFromHandle(Napi::Env env, Napi::Value handle, EphemeralKind* kind);

}  // namespace sealed
