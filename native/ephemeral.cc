#include "ephemeral.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "errors.h"
#include "js_region.h"
#include "module.h"
#include "rsa_key.h"
#include "secure_heap.h"
#include "secure_memory.h"

namespace sealed {
namespace {

// Tags our ephemeral-key handles so another wrapped object is never read as one.
constexpr napi_type_tag kEphemeralTag = {0x5ea1ed0e9e3e7a11ULL, 0x657068656d6b6579ULL};

constexpr int kRsaBits = 3072;

// The OpenSSL error queue is per thread and Node's crypto reads it: never leave ours behind.
struct ClearErrors {
  ~ClearErrors() { ERR_clear_error(); }
};

// base64url without padding (RFC 7515 section 2), through OpenSSL's encoder.
std::string Base64Url(const uint8_t* data, size_t len) {
  std::vector<unsigned char> out(4 * ((len + 2) / 3) + 1);
  int n = EVP_EncodeBlock(out.data(), data, static_cast<int>(len));
  std::string s(reinterpret_cast<char*>(out.data()), n > 0 ? static_cast<size_t>(n) : 0);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return s;
}

// Public members only, in a fixed order; `alg` says which JWE key management the key is for.
std::string PublicJwk(const EphemeralKeyPair& key) {
  if (key.kind == EphemeralKind::kEcP256) {
    uint8_t point[65];
    size_t len = 0;
    if (EVP_PKEY_get_octet_string_param(key.ec, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof point, &len) != 1 || len != 65 ||
        point[0] != 0x04) {
      throw SealedError("ERR_UNSUPPORTED", "OpenSSL could not export the P-256 public point");
    }
    return R"({"kty":"EC","crv":"P-256","x":")" + Base64Url(point + 1, 32) + R"(","y":")" + Base64Url(point + 33, 32) +
           R"(","alg":"ECDH-ES+A256KW"})";
  }
  std::vector<uint8_t> n = RsaModulus(key.rsa), e = RsaPublicExponent(key.rsa);
  return R"({"kty":"RSA","n":")" + Base64Url(n.data(), n.size()) + R"(","e":")" + Base64Url(e.data(), e.size()) +
         R"(","alg":"RSA-OAEP-256"})";
}

void FreePair(EphemeralKeyPair& key) {
  EVP_PKEY_free(key.ec);  // BN_clear_free of the private scalar: cleansed, back to the secure heap
  RsaFree(key.rsa);
  key.ec = nullptr;
  key.rsa = nullptr;
}

EphemeralKeyPair Generate(EphemeralKind kind) {
  ClearErrors clear;
  EphemeralKeyPair key{kind};
  bool ok = false;
  if (kind == EphemeralKind::kEcP256) {
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
    ok = ctx != nullptr && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1 &&
         EVP_PKEY_generate(ctx, &key.ec) == 1;
    EVP_PKEY_CTX_free(ctx);
  } else {
    key.rsa = RsaGenerate(kRsaBits);
    ok = key.rsa != nullptr;
  }
  if (!ok) {
    FreePair(key);
    // A full secure heap is the likely cause (OpenSSL does not fall back to its ordinary heap then).
    throw SealedError("ERR_RESOURCE_LIMIT", std::string("OpenSSL could not generate the ephemeral ") +
                                                (kind == EphemeralKind::kEcP256 ? "P-256" : "RSA-3072") +
                                                " key (is its secure heap full? release unused ephemeral keys)");
  }
  return key;
}

class EphemeralKey : public Napi::ObjectWrap<EphemeralKey> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeEphemeralKey",
                       {InstanceMethod<&EphemeralKey::Release>("release"),
                        InstanceAccessor<&EphemeralKey::Released>("released"),
                        InstanceAccessor<&EphemeralKey::Kind>("kind")});
  }

  explicit EphemeralKey(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EphemeralKey>(info) {
    // Only ephemeralKeyGenerate constructs; it passes the key through an External.
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw MakeError(info.Env(), "ERR_INVALID_ARGUMENT", "use ephemeralKeyGenerate() to make an ephemeral key");
    }
    info.This().As<Napi::Object>().TypeTag(&kEphemeralTag);  // first: nothing below throws, so the key is never lost
    EphemeralKeyPair* key = info[0].As<Napi::External<EphemeralKeyPair>>().Data();
    key_ = *key;
    key->ec = nullptr;  // ours now
    key->rsa = nullptr;
  }

  // The finalizer: a handle collected without release() frees its key here.
  ~EphemeralKey() override { FreePair(key_); }

  static EphemeralKey* Unwrap(Napi::Object self) { return UnwrapTagged<EphemeralKey>(self, &kEphemeralTag, "NativeEphemeralKey"); }

  const EphemeralKeyPair& key() const { return key_; }
  bool live() const { return key_.ec != nullptr || key_.rsa != nullptr; }

 private:
  Napi::Value Release(const Napi::CallbackInfo& info) {
    bool was = live();
    FreePair(key_);
    return Napi::Boolean::New(info.Env(), was);
  }
  Napi::Value Released(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !live()); }
  Napi::Value Kind(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), key_.kind == EphemeralKind::kEcP256 ? "ec-p256" : "rsa-3072");
  }

  EphemeralKeyPair key_{EphemeralKind::kEcP256};
};

// ephemeralKeyGenerate(kind = 'ec-p256') -> { handle, jwk }
Napi::Value EphemeralKeyGenerate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EphemeralKind kind = EphemeralKind::kEcP256;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    std::string name = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : std::string();
    if (name == "rsa-3072") {
      kind = EphemeralKind::kRsa3072;
    } else if (name != "ec-p256") {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "ephemeral key kind must be 'ec-p256' or 'rsa-3072'");
    }
  }
  HardenProcess();             // before the first private byte exists
  EnsureOpensslSecureHeap();   // where OpenSSL puts the private BIGNUMs
  EphemeralKeyPair key{kind};
  std::string jwk;
  try {
    key = Generate(kind);
    jwk = PublicJwk(key);
  } catch (const SealedError& e) {
    FreePair(key);
    throw MakeError(env, e);
  }
  Napi::Object handle;
  try {
    Napi::External<EphemeralKeyPair> ext = Napi::External<EphemeralKeyPair>::New(env, &key);
    handle = Constructor(env, "NativeEphemeralKey").New({ext});
  } catch (...) {
    FreePair(key);  // no handle took it
    throw;
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("handle", handle);
  out.Set("jwk", Napi::String::New(env, jwk));
  return out;
}

// Test only: the private components in native byte order (as BIGNUM limbs lie in memory on this
// machine), written by OpenSSL straight into a secure buffer, so a test can search the process for
// copies. EC: the 32-byte scalar. RSA: d (384), p, q, dP, dQ, qInv (192 each).
Napi::Value TestEphemeralPrivate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const EphemeralKeyPair& key = EphemeralFromHandle(env, info[0]);
  ClearErrors clear;
  const size_t total = key.kind == EphemeralKind::kEcP256 ? 32 : RsaModulusBytes(key.rsa) * 7 / 2;
  std::unique_ptr<SecureRegion> region;
  try {
    region = SecureRegion::Allocate(total);
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
  bool ok;
  if (key.kind == EphemeralKind::kEcP256) {
    OSSL_PARAM params[] = {OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, region->data(), total), OSSL_PARAM_construct_end()};
    ok = EVP_PKEY_get_params(key.ec, params) == 1;
  } else {
    ok = RsaPrivateNative(key.rsa, region->data(), total);
  }
  if (!ok) throw MakeError(env, "ERR_UNSUPPORTED", "OpenSSL would not export the private key");
  return NewSecureArrayBuffer(env, std::move(region));
}

Napi::Value TestOpensslSecureUsed(const Napi::CallbackInfo& info) {
  // CRYPTO_secure_used takes a lock that exists only once the heap is set up.
  return Napi::Number::New(info.Env(), CRYPTO_secure_malloc_initialized() ? static_cast<double>(CRYPTO_secure_used()) : 0.0);
}

void Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = EphemeralKey::Define(env);
  SetConstructor(env, "NativeEphemeralKey", cls);
  exports.Set("NativeEphemeralKey", cls);
  exports.Set("ephemeralKeyGenerate", Napi::Function::New(env, EphemeralKeyGenerate, "ephemeralKeyGenerate"));
  Napi::Object testing = exports.Has("_testing") ? exports.Get("_testing").As<Napi::Object>() : Napi::Object::New(env);
  // Exporting the private key is for the memory-scan tests only: a production process never gets it.
  const char* hooks = std::getenv("SEALED_TENSORS_TEST_HOOKS");
  if (hooks != nullptr && std::string(hooks) == "1") {
    testing.Set("ephemeralPrivate", Napi::Function::New(env, TestEphemeralPrivate, "ephemeralPrivate"));
  }
  testing.Set("opensslSecureUsed", Napi::Function::New(env, TestOpensslSecureUsed, "opensslSecureUsed"));
  exports.Set("_testing", testing);
}

}  // namespace

const EphemeralKeyPair& EphemeralFromHandle(Napi::Env env, Napi::Value handle) {
  if (!handle.IsObject() || !handle.As<Napi::Object>().CheckTypeTag(&kEphemeralTag)) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "expected an ephemeral key from ephemeralKeyGenerate()");
  }
  EphemeralKey* key = EphemeralKey::Unwrap(handle.As<Napi::Object>());
  if (!key->live()) throw MakeError(env, "ERR_RELEASED", "ephemeral key was released");
  return key->key();
}

SEALED_REGISTER(ephemeral, Init);

}  // namespace sealed
