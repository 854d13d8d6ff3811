// The session's ephemeral key pair: generated in the addon, private half only in OpenSSL's secure
// heap (see secure_heap.h), behind an opaque handle; JavaScript sees the public JWK only.
#pragma once
#include <napi.h>
#include <openssl/types.h>

namespace sealed {

enum class EphemeralKind { kEcP256, kRsa3072 };

// One of the two, by kind. EC goes through EVP_PKEY; RSA through the RSA object (rsa_key.h says why).
struct EphemeralKeyPair {
  EphemeralKind kind;
  EVP_PKEY* ec = nullptr;
  RSA* rsa = nullptr;
};

// The live key behind a handle from ephemeralKeyGenerate (borrowed: owned by the handle, valid
// while the caller stays on the JS thread). Throws a JS error (ERR_INVALID_ARGUMENT, ERR_RELEASED).
const EphemeralKeyPair& EphemeralFromHandle(Napi::Env env, Napi::Value handle);

}  // namespace sealed
