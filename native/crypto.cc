#include "crypto.h"

#include <openssl/kdf.h>

#include <climits>
#include <cstring>

#include "errors.h"

namespace sealed {

Algorithms::Algorithms(uint16_t suite) {
  const char* name = suite == kSuiteAesGcm ? "AES-256-GCM" : suite == kSuiteChaChaPoly ? "ChaCha20-Poly1305" : nullptr;
  if (!name) throw SealedError("ERR_UNSUPPORTED_VERSION", "cipher suite " + std::to_string(suite) + " is not implemented");
  cipher = EVP_CIPHER_fetch(nullptr, name, nullptr);
  sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (!cipher || !sha256) {
    EVP_CIPHER_free(cipher);
    EVP_MD_free(sha256);
    throw SealedError("ERR_UNSUPPORTED", std::string("OpenSSL in this Node lacks ") + name + " or SHA-256");
  }
}

Algorithms::~Algorithms() {
  EVP_CIPHER_free(cipher);
  EVP_MD_free(sha256);
}

void HkdfSha256(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len, const char* info, uint8_t* out,
                size_t out_len) {
  EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  size_t len = out_len;
  bool ok = pctx && EVP_PKEY_derive_init(pctx) > 0 && EVP_PKEY_CTX_set_hkdf_md(pctx, EVP_sha256()) > 0 &&
            EVP_PKEY_CTX_set1_hkdf_salt(pctx, salt, static_cast<int>(salt_len)) > 0 &&
            EVP_PKEY_CTX_set1_hkdf_key(pctx, ikm, static_cast<int>(ikm_len)) > 0 &&
            EVP_PKEY_CTX_add1_hkdf_info(pctx, reinterpret_cast<const unsigned char*>(info), static_cast<int>(std::strlen(info))) > 0 &&
            EVP_PKEY_derive(pctx, out, &len) > 0 && len == out_len;
  EVP_PKEY_CTX_free(pctx);
  if (!ok) throw SealedError("ERR_UNSUPPORTED", "HKDF-SHA256 failed in OpenSSL");
}

void Sha256(const uint8_t* data, size_t len, uint8_t out[32]) {
  unsigned int n = 0;
  if (EVP_Digest(data, len, out, &n, EVP_sha256(), nullptr) != 1 || n != 32) {
    throw SealedError("ERR_UNSUPPORTED", "SHA-256 failed in OpenSSL");
  }
}

bool AeadOpenInPlace(const Algorithms& alg, const uint8_t* key, const uint8_t nonce[kNonceBytes], const uint8_t* aad,
                     size_t aad_len, uint8_t* data, size_t len, const uint8_t* tag) {
  CipherCtx c;
  int outl = 0;
  if (!c.ctx || EVP_DecryptInit_ex2(c.ctx, alg.cipher, key, nonce, nullptr) != 1) return false;
  if (EVP_DecryptUpdate(c.ctx, nullptr, &outl, aad, static_cast<int>(aad_len)) != 1) return false;
  size_t done = 0;
  while (done < len) {
    int n = static_cast<int>(std::min<size_t>(len - done, size_t{1} << 30));
    if (EVP_DecryptUpdate(c.ctx, data + done, &outl, data + done, n) != 1) return false;
    done += static_cast<size_t>(n);
  }
  if (EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_AEAD_SET_TAG, 16, const_cast<uint8_t*>(tag)) != 1) return false;
  return EVP_DecryptFinal_ex(c.ctx, data + len, &outl) == 1;
}

}  // namespace sealed
