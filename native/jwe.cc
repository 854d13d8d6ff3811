// jweUnwrapDataKey: opens the broker's flattened JWE (RFC 7516, enc A256GCM; alg ECDH-ES+A256KW or
// RSA-OAEP-256, RFC 7518) with the session's ephemeral key, entirely in the addon: every
// intermediate secret (Z, KEK, CEK, the plaintext) lives in one of our secure regions and is wiped,
// and the data key goes straight into a NativeKeyHandle. JavaScript gets the handle and the
// manifest (public JSON) only.
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <cctype>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "crypto.h"
#include "ephemeral.h"
#include "errors.h"
#include "key_handle.h"
#include "module.h"
#include "rsa_key.h"
#include "secure_memory.h"

namespace sealed {
namespace {

constexpr char kMagic[4] = {'S', 'T', 'K', '1'};
constexpr size_t kCekBytes = 32;
constexpr size_t kWrappedCekBytes = kCekBytes + 8;  // RFC 3394: one 64-bit block longer
constexpr size_t kCoordBytes = 32;
constexpr size_t kIvBytes = 12;
constexpr size_t kTagBytes = 16;
constexpr size_t kMinPlaintext = sizeof kMagic + kDataKeyBytes;
constexpr size_t kMaxPlaintext = kMinPlaintext + (size_t{64} << 10);  // the manifest's limit (protocol/resource.ts)
constexpr size_t kMaxProtected = 16 << 10;
constexpr size_t kMaxRsaBytes = 1024;  // 8192-bit modulus
constexpr size_t kMaxPartyInfo = 1024;

// Scratch layout inside one secure page: Z | KEK | unwrapped CEK (+ room) | RSA output.
constexpr size_t kZAt = 0;
constexpr size_t kKekAt = 64;
constexpr size_t kCekAt = 128;
constexpr size_t kRsaOutAt = 256;
constexpr size_t kScratchBytes = kRsaOutAt + kMaxRsaBytes;

// Any cryptographic failure: one message, whatever the step, so a caller (or whoever tampers with
// the JWE) learns nothing about which check failed.
struct Unauthentic {};

struct ClearErrors {
  ~ClearErrors() { ERR_clear_error(); }
};

struct PkeyCtx {
  EVP_PKEY_CTX* ctx;
  explicit PkeyCtx(EVP_PKEY_CTX* c) : ctx(c) {}
  ~PkeyCtx() { EVP_PKEY_CTX_free(ctx); }
  PkeyCtx(const PkeyCtx&) = delete;
  PkeyCtx& operator=(const PkeyCtx&) = delete;
};

struct Pkey {
  EVP_PKEY* pkey = nullptr;
  ~Pkey() { EVP_PKEY_free(pkey); }
};

void Check(bool ok) {
  if (!ok) throw Unauthentic{};
}

struct Bytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// The members are public (ciphertext, wrapped key, point) and copied out as they are read: a getter
// on the input object could otherwise detach an array read earlier, leaving a dangling pointer.
struct Owned {
  std::vector<uint8_t> bytes;
  Bytes view() const { return Bytes{bytes.data(), bytes.size()}; }
};

// A Uint8Array member of `obj`, `min`..`max` bytes, else ERR_INVALID_ARGUMENT.
Owned Member(Napi::Env env, Napi::Object obj, const char* name, size_t min, size_t max) {
  Napi::Value v = obj.Get(name);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", std::string("JWE member ") + name + " must be a Uint8Array");
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() < min || a.ByteLength() > max) {
    std::string want = min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max);
    throw MakeError(env, "ERR_INVALID_ARGUMENT",
                    std::string("JWE member ") + name + " must be " + want + " bytes, got " + std::to_string(a.ByteLength()));
  }
  Owned out;
  out.bytes.assign(a.Data(), a.Data() + a.ByteLength());
  return out;
}

Owned OptionalMember(Napi::Env env, Napi::Object obj, const char* name, size_t max) {
  if (obj.Get(name).IsUndefined()) return Owned{};
  return Member(env, obj, name, 0, max);
}

// RFC 7518 section 4.6.2: AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo, each of the first
// three length-prefixed (32-bit big-endian), SuppPubInfo = keydatalen in bits.
std::vector<uint8_t> OtherInfo(const char* alg, Bytes apu, Bytes apv, uint32_t keydatalen_bits) {
  const size_t alg_len = std::strlen(alg);
  std::vector<uint8_t> out(4 + alg_len + 4 + apu.size + 4 + apv.size + 4);
  uint8_t* p = out.data();
  auto put32 = [&p](size_t n) {
    for (int shift = 24; shift >= 0; shift -= 8) *p++ = static_cast<uint8_t>(n >> shift);
  };
  auto put = [&p, &put32](const void* data, size_t n) {
    put32(n);
    if (n) std::memcpy(p, data, n);
    p += n;
  };
  put(alg, alg_len);
  put(apu.data, apu.size);
  put(apv.data, apv.size);
  put32(keydatalen_bits);
  return out;
}

// ECDH with the sender's ephemeral point (checked: on the curve, not infinity, right order), the
// JWA Concat KDF (= SP 800-56A single-step KDF, OpenSSL's SSKDF) with SHA-256, then AES key unwrap.
void UnwrapEcdh(EVP_PKEY* own, Bytes x, Bytes y, Bytes apu, Bytes apv, Bytes wrapped, uint8_t* scratch) {
  uint8_t point[1 + 2 * kCoordBytes];
  point[0] = 0x04;
  std::memcpy(point + 1, x.data, kCoordBytes);
  std::memcpy(point + 1 + kCoordBytes, y.data, kCoordBytes);
  char group[] = "P-256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
                         OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point), OSSL_PARAM_construct_end()};
  Pkey peer;
  {
    PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    Check(ctx.ctx != nullptr && EVP_PKEY_fromdata_init(ctx.ctx) == 1 &&
          EVP_PKEY_fromdata(ctx.ctx, &peer.pkey, EVP_PKEY_PUBLIC_KEY, params) == 1);
  }
  {
    // Import already refuses a point off the curve; the full public-key check says so explicitly.
    PkeyCtx check(EVP_PKEY_CTX_new_from_pkey(nullptr, peer.pkey, nullptr));
    Check(check.ctx != nullptr && EVP_PKEY_public_check(check.ctx) == 1);
  }
  uint8_t* z = scratch + kZAt;
  {
    PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, own, nullptr));
    size_t zlen = kCoordBytes;
    Check(ctx.ctx != nullptr && EVP_PKEY_derive_init(ctx.ctx) == 1 && EVP_PKEY_derive_set_peer_ex(ctx.ctx, peer.pkey, 1) == 1 &&
          EVP_PKEY_derive(ctx.ctx, z, &zlen) == 1 && zlen == kCoordBytes);
  }
  uint8_t* kek = scratch + kKekAt;
  {
    std::vector<uint8_t> info = OtherInfo("ECDH-ES+A256KW", apu, apv, 256);
    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "SSKDF", nullptr);
    EVP_KDF_CTX* kctx = kdf ? EVP_KDF_CTX_new(kdf) : nullptr;
    EVP_KDF_free(kdf);
    char digest[] = "SHA256";
    OSSL_PARAM kp[] = {OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
                       OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, z, kCoordBytes),
                       OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()), OSSL_PARAM_construct_end()};
    bool ok = kctx != nullptr && EVP_KDF_derive(kctx, kek, kCekBytes, kp) == 1;
    EVP_KDF_CTX_free(kctx);  // cleanses its copy of Z
    Check(ok);
  }
  {
    CipherCtx c;
    EVP_CIPHER* wrap = EVP_CIPHER_fetch(nullptr, "AES-256-WRAP", nullptr);
    int outl = 0, finl = 0;
    bool ok = c.ctx != nullptr && wrap != nullptr && (EVP_CIPHER_CTX_set_flags(c.ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW), true) &&
              EVP_DecryptInit_ex2(c.ctx, wrap, kek, nullptr, nullptr) == 1 &&
              EVP_DecryptUpdate(c.ctx, scratch + kCekAt, &outl, wrapped.data, static_cast<int>(wrapped.size)) == 1 &&
              EVP_DecryptFinal_ex(c.ctx, scratch + kCekAt + outl, &finl) == 1 && outl + finl == static_cast<int>(kCekBytes);
    EVP_CIPHER_free(wrap);
    Check(ok);  // the RFC 3394 integrity check failed: wrong key, or the wrapped key was altered
  }
}

// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 7518 section 4.3).
void UnwrapRsa(RSA* own, Bytes encrypted, uint8_t* scratch) {
  Check(RsaOaepSha256Decrypt(own, encrypted.data, encrypted.size, scratch + kRsaOutAt, scratch + kCekAt, kCekBytes));
}

// jweUnwrapDataKey(ephemeral, { protectedB64, alg, epk?: {x, y}, apu?, apv?, encryptedKey, iv, ciphertext, tag })
//   -> { key: NativeKeyHandle, manifest: Uint8Array }
Napi::Value JweUnwrapDataKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // Reading the input may run JavaScript (getters) that could release the key: look at it now for
  // its kind and size only, and take it again once every input is read.
  const EphemeralKind kind = EphemeralFromHandle(env, info[0]).kind;
  const size_t rsa_bytes = kind == EphemeralKind::kRsa3072 ? RsaModulusBytes(EphemeralFromHandle(env, info[0]).rsa) : 0;
  if (!info[1].IsObject()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "expected the JWE's decoded members as an object");
  Napi::Object jwe = info[1].As<Napi::Object>();

  Napi::Value prot = jwe.Get("protectedB64");
  if (!prot.IsString()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "protectedB64 must be the JWE's protected member (a string)");
  // The AAD is the protected member exactly as received (ASCII: base64url).
  std::string aad = prot.As<Napi::String>().Utf8Value();
  if (aad.empty() || aad.size() > kMaxProtected) throw MakeError(env, "ERR_INVALID_ARGUMENT", "protectedB64 is empty or too long");
  for (char c : aad) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "protectedB64 must be base64url without padding");
    }
  }
  Napi::Value alg_v = jwe.Get("alg");
  std::string alg = alg_v.IsString() ? alg_v.As<Napi::String>().Utf8Value() : std::string();
  const bool ecdh = alg == "ECDH-ES+A256KW";
  if (!ecdh && alg != "RSA-OAEP-256") throw MakeError(env, "ERR_INVALID_ARGUMENT", "alg must be ECDH-ES+A256KW or RSA-OAEP-256");
  if (ecdh != (kind == EphemeralKind::kEcP256)) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "alg " + alg + " does not fit this ephemeral key (" +
                                                     (kind == EphemeralKind::kEcP256 ? "EC P-256: ECDH-ES+A256KW" : "RSA: RSA-OAEP-256") + ")");
  }
  Owned x, y, apu, apv, encrypted;
  if (ecdh) {
    Napi::Value epk = jwe.Get("epk");
    if (!epk.IsObject()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "ECDH-ES+A256KW needs epk {x, y}");
    x = Member(env, epk.As<Napi::Object>(), "x", kCoordBytes, kCoordBytes);
    y = Member(env, epk.As<Napi::Object>(), "y", kCoordBytes, kCoordBytes);
    apu = OptionalMember(env, jwe, "apu", kMaxPartyInfo);
    apv = OptionalMember(env, jwe, "apv", kMaxPartyInfo);
    encrypted = Member(env, jwe, "encryptedKey", kWrappedCekBytes, kWrappedCekBytes);
  } else {
    if (!jwe.Get("epk").IsUndefined()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "RSA-OAEP-256 takes no epk");
    encrypted = Member(env, jwe, "encryptedKey", rsa_bytes, rsa_bytes);
  }
  Owned iv = Member(env, jwe, "iv", kIvBytes, kIvBytes);
  Owned ciphertext = Member(env, jwe, "ciphertext", kMinPlaintext, kMaxPlaintext);
  Owned tag = Member(env, jwe, "tag", kTagBytes, kTagBytes);
  // No JavaScript runs from here to the end: the key stays valid.
  const EphemeralKeyPair& own = EphemeralFromHandle(env, info[0]);

  // All secure memory up front: a failure here is ERR_MEMLOCK (with advice), not an integrity error.
  std::unique_ptr<SecureRegion> scratch, plain;
  std::shared_ptr<SecureRegion> key;
  try {
    scratch = SecureRegion::Allocate(kScratchBytes);
    plain = SecureRegion::Allocate(ciphertext.bytes.size());
    key = SecureRegion::Allocate(kDataKeyBytes);
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }

  ClearErrors clear;
  try {
    if (ecdh) {
      UnwrapEcdh(own.ec, x.view(), y.view(), apu.view(), apv.view(), encrypted.view(), scratch->data());
    } else {
      UnwrapRsa(own.rsa, encrypted.view(), scratch->data());
    }
    std::memcpy(plain->data(), ciphertext.bytes.data(), ciphertext.bytes.size());
    Algorithms gcm(kSuiteAesGcm);
    Check(AeadOpenInPlace(gcm, scratch->data() + kCekAt, iv.bytes.data(), reinterpret_cast<const uint8_t*>(aad.data()), aad.size(),
                          plain->data(), plain->size(), tag.bytes.data()));
    Check(CRYPTO_memcmp(plain->data(), kMagic, sizeof kMagic) == 0);
  } catch (const Unauthentic&) {
    // The regions' destructors wipe whatever was derived or decrypted so far.
    throw MakeError(env, "ERR_INTEGRITY",
                    "the released key could not be decrypted: the JWE was not made for this session's key, or it was altered");
  } catch (const SealedError& e) {
    throw MakeError(env, e);
  }
  scratch.reset();  // Z, KEK, CEK wiped now
  std::memcpy(key->data(), plain->data() + sizeof kMagic, kDataKeyBytes);
  const size_t manifest_len = plain->size() - kMinPlaintext;
  Napi::Uint8Array manifest = Napi::Uint8Array::New(env, manifest_len);
  if (manifest_len) std::memcpy(manifest.Data(), plain->data() + kMinPlaintext, manifest_len);
  plain.reset();
  Napi::Object out = Napi::Object::New(env);
  out.Set("key", NewKeyHandle(env, std::move(key)));
  out.Set("manifest", manifest);
  return out;
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("jweUnwrapDataKey", Napi::Function::New(env, JweUnwrapDataKey, "jweUnwrapDataKey"));
}

}  // namespace

SEALED_REGISTER(jwe, Init);

}  // namespace sealed
