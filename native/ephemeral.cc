#include "ephemeral.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <memory>
#include <string>
#include <vector>

#include "errors.h"
#include "js_region.h"
#include "module.h"
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

std::string BnParamBase64Url(EVP_PKEY* pkey, const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) throw SealedError("ERR_UNSUPPORTED", std::string("OpenSSL could not export the public ") + name);
  std::vector<uint8_t> bytes(static_cast<size_t>(BN_num_bytes(bn)));
  BN_bn2bin(bn, bytes.data());
  BN_free(bn);  // public values
  return Base64Url(bytes.data(), bytes.size());
}

// Public members only, in a fixed order; `alg` says which JWE key management the key is for.
std::string PublicJwk(EVP_PKEY* pkey, EphemeralKind kind) {
  if (kind == EphemeralKind::kEcP256) {
    uint8_t point[65];
    size_t len = 0;
    if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof point, &len) != 1 || len != 65 ||
        point[0] != 0x04) {
      throw SealedError("ERR_UNSUPPORTED", "OpenSSL could not export the P-256 public point");
    }
    return R"({"kty":"EC","crv":"P-256","x":")" + Base64Url(point + 1, 32) + R"(","y":")" + Base64Url(point + 33, 32) +
           R"(","alg":"ECDH-ES+A256KW"})";
  }
  return R"({"kty":"RSA","n":")" + BnParamBase64Url(pkey, OSSL_PKEY_PARAM_RSA_N) + R"(","e":")" +
         BnParamBase64Url(pkey, OSSL_PKEY_PARAM_RSA_E) + R"(","alg":"RSA-OAEP-256"})";
}

EVP_PKEY* Generate(EphemeralKind kind) {
  ClearErrors clear;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, kind == EphemeralKind::kEcP256 ? "EC" : "RSA", nullptr);
  EVP_PKEY* pkey = nullptr;
  bool ok = ctx != nullptr && EVP_PKEY_keygen_init(ctx) == 1;
  if (ok && kind == EphemeralKind::kEcP256) ok = EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1;
  if (ok && kind == EphemeralKind::kRsa3072) ok = EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, kRsaBits) == 1;  // e = 65537
  ok = ok && EVP_PKEY_generate(ctx, &pkey) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) {
    EVP_PKEY_free(pkey);
    // A full secure heap is the likely cause (OpenSSL does not fall back to its ordinary heap then).
    throw SealedError("ERR_RESOURCE_LIMIT", std::string("OpenSSL could not generate the ephemeral ") +
                                                (kind == EphemeralKind::kEcP256 ? "P-256" : "RSA-3072") +
                                                " key (is its secure heap full? release unused ephemeral keys)");
  }
  return pkey;
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
    if (info.Length() != 2 || !info[0].IsExternal() || !info[1].IsNumber()) {
      throw MakeError(info.Env(), "ERR_INVALID_ARGUMENT", "use ephemeralKeyGenerate() to make an ephemeral key");
    }
    pkey_ = info[0].As<Napi::External<EVP_PKEY>>().Data();
    kind_ = info[1].As<Napi::Number>().Int32Value() == 1 ? EphemeralKind::kRsa3072 : EphemeralKind::kEcP256;
    info.This().As<Napi::Object>().TypeTag(&kEphemeralTag);
  }

  // The finalizer: a handle collected without release() frees its key here.
  ~EphemeralKey() override { EVP_PKEY_free(pkey_); }

  static EphemeralKey* Unwrap(Napi::Object self) { return UnwrapTagged<EphemeralKey>(self, &kEphemeralTag, "NativeEphemeralKey"); }

  EVP_PKEY* pkey() const { return pkey_; }
  EphemeralKind kind() const { return kind_; }

 private:
  Napi::Value Release(const Napi::CallbackInfo& info) {
    bool was = pkey_ != nullptr;
    EVP_PKEY_free(pkey_);  // BN_clear_free of the private parts: cleansed, back to the secure heap
    pkey_ = nullptr;
    return Napi::Boolean::New(info.Env(), was);
  }
  Napi::Value Released(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), pkey_ == nullptr); }
  Napi::Value Kind(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), kind_ == EphemeralKind::kEcP256 ? "ec-p256" : "rsa-3072");
  }

  EVP_PKEY* pkey_ = nullptr;
  EphemeralKind kind_ = EphemeralKind::kEcP256;
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
  EVP_PKEY* pkey = nullptr;
  std::string jwk;
  try {
    pkey = Generate(kind);
    jwk = PublicJwk(pkey, kind);
  } catch (const SealedError& e) {
    EVP_PKEY_free(pkey);
    throw MakeError(env, e);
  }
  Napi::Object handle;
  try {
    Napi::External<EVP_PKEY> ext = Napi::External<EVP_PKEY>::New(env, pkey);
    handle = Constructor(env, "NativeEphemeralKey").New({ext, Napi::Number::New(env, kind == EphemeralKind::kRsa3072 ? 1 : 0)});
  } catch (...) {
    EVP_PKEY_free(pkey);  // no handle owns it
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
  EphemeralKind kind;
  EVP_PKEY* pkey = EphemeralFromHandle(env, info[0], &kind);
  ClearErrors clear;
  struct Part {
    const char* name;
    size_t bytes;
  };
  std::vector<Part> parts;
  if (kind == EphemeralKind::kEcP256) {
    parts = {{OSSL_PKEY_PARAM_PRIV_KEY, 32}};
  } else {
    parts = {{OSSL_PKEY_PARAM_RSA_D, 384},         {OSSL_PKEY_PARAM_RSA_FACTOR1, 192},  {OSSL_PKEY_PARAM_RSA_FACTOR2, 192},
             {OSSL_PKEY_PARAM_RSA_EXPONENT1, 192}, {OSSL_PKEY_PARAM_RSA_EXPONENT2, 192}, {OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 192}};
  }
  size_t total = 0;
  for (const Part& p : parts) total += p.bytes;
  std::unique_ptr<SecureRegion> region;
  try {
    region = SecureRegion::Allocate(total);
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
  std::vector<OSSL_PARAM> params;
  size_t at = 0;
  for (const Part& p : parts) {
    params.push_back(OSSL_PARAM_construct_BN(p.name, region->data() + at, p.bytes));
    at += p.bytes;
  }
  params.push_back(OSSL_PARAM_construct_end());
  if (EVP_PKEY_get_params(pkey, params.data()) != 1) throw MakeError(env, "ERR_UNSUPPORTED", "OpenSSL would not export the private key");
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
  testing.Set("ephemeralPrivate", Napi::Function::New(env, TestEphemeralPrivate, "ephemeralPrivate"));
  testing.Set("opensslSecureUsed", Napi::Function::New(env, TestOpensslSecureUsed, "opensslSecureUsed"));
  exports.Set("_testing", testing);
}

}  // namespace

EVP_PKEY* EphemeralFromHandle(Napi::Env env, Napi::Value handle, EphemeralKind* kind) {
  if (!handle.IsObject() || !handle.As<Napi::Object>().CheckTypeTag(&kEphemeralTag)) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "expected an ephemeral key from ephemeralKeyGenerate()");
  }
  EphemeralKey* key = EphemeralKey::Unwrap(handle.As<Napi::Object>());
  if (key->pkey() == nullptr) throw MakeError(env, "ERR_RELEASED", "ephemeral key was released");
  *kind = key->kind();
  return key->pkey();
}

SEALED_REGISTER(ephemeral, Init);

}  // namespace sealed
