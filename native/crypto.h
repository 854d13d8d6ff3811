// Thin RAII over OpenSSL EVP (Node's own OpenSSL): the suites, SHA-256 and HKDF of FORMAT.md.
#pragma once
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>

namespace sealed {

constexpr uint16_t kSuiteAesGcm = 1;
constexpr uint16_t kSuiteChaChaPoly = 2;
constexpr size_t kNonceBytes = 12;

// Explicitly fetched algorithms: implicit fetches take a global lock on every init.
struct Algorithms {
  EVP_CIPHER* cipher = nullptr;
  EVP_MD* sha256 = nullptr;
  explicit Algorithms(uint16_t suite);  // throws SealedError
  ~Algorithms();
  Algorithms(const Algorithms&) = delete;
  Algorithms& operator=(const Algorithms&) = delete;
};

// Not copyable: a copy would free the same context twice.
struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  CipherCtx() = default;
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }  // cleanses the key schedule
  CipherCtx(const CipherCtx&) = delete;
  CipherCtx& operator=(const CipherCtx&) = delete;
};

struct MdCtx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  MdCtx() = default;
  ~MdCtx() { EVP_MD_CTX_free(ctx); }
  MdCtx(const MdCtx&) = delete;
  MdCtx& operator=(const MdCtx&) = delete;
};

// HKDF-SHA256 (RFC 5869) extract-and-expand into `out`; throws SealedError.
void HkdfSha256(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len, const char* info, uint8_t* out,
                size_t out_len);

void Sha256(const uint8_t* data, size_t len, uint8_t out[32]);

// One-shot AEAD open in place: `data` holds ciphertext, `tag` the 16-byte tag. False if the tag fails.
bool AeadOpenInPlace(const Algorithms& alg, const uint8_t* key, const uint8_t nonce[kNonceBytes], const uint8_t* aad,
                     size_t aad_len, uint8_t* data, size_t len, const uint8_t* tag);

}  // namespace sealed
