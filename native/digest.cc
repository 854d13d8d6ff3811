// SHA-256 and a constant-time compare for the JS side of the native path (header digests, tensor
// digest checks), so a native verify or load need not load node:crypto: it is the same OpenSSL.
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <string>

#include "crypto.h"
#include "errors.h"
#include "module.h"

namespace sealed {
namespace {

Napi::Uint8Array ByteView(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string(what) + " must be a Uint8Array");
  }
  return v.As<Napi::Uint8Array>();
}

// sha256(parts: Uint8Array[]): Uint8Array(32), the digest of the parts concatenated.
Napi::Value Sha256Parts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "parts must be an array of Uint8Array");
  Napi::Array parts = info[0].As<Napi::Array>();
  MdCtx md;
  if (!md.ctx || EVP_DigestInit_ex2(md.ctx, EVP_sha256(), nullptr) != 1) {
    throw MakeError(env, "ERR_UNSUPPORTED", "SHA-256 failed in OpenSSL");
  }
  for (uint32_t i = 0; i < parts.Length(); i++) {
    Napi::Uint8Array part = ByteView(env, parts.Get(i), "every part");
    if (EVP_DigestUpdate(md.ctx, part.Data(), part.ByteLength()) != 1) {
      throw MakeError(env, "ERR_UNSUPPORTED", "SHA-256 failed in OpenSSL");
    }
  }
  Napi::Uint8Array out = Napi::Uint8Array::New(env, 32);
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(md.ctx, out.Data(), &n) != 1 || n != 32) {
    throw MakeError(env, "ERR_UNSUPPORTED", "SHA-256 failed in OpenSSL");
  }
  return out;
}

// timingSafeEqual(a, b): false for different lengths (not secret), else CRYPTO_memcmp.
Napi::Value TimingSafeEqual(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array a = ByteView(env, info[0], "a");
  Napi::Uint8Array b = ByteView(env, info[1], "b");
  if (a.ByteLength() != b.ByteLength()) return Napi::Boolean::New(env, false);
  return Napi::Boolean::New(env, CRYPTO_memcmp(a.Data(), b.Data(), a.ByteLength()) == 0);
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("sha256", Napi::Function::New(env, Sha256Parts, "sha256"));
  exports.Set("timingSafeEqual", Napi::Function::New(env, TimingSafeEqual, "timingSafeEqual"));
}

}  // namespace

SEALED_REGISTER(digest, Init);

}  // namespace sealed
