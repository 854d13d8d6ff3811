// The RSA object API is deprecated in OpenSSL 3 in favour of EVP_PKEY, but only it lets us turn off
// the private-key cache (see rsa_key.h); it is OpenSSL's own code either way.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "rsa_key.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

namespace sealed {

RSA* RsaGenerate(int bits) {
  RSA* rsa = RSA_new();
  BIGNUM* e = BN_new();
  bool ok = rsa != nullptr && e != nullptr && BN_set_word(e, RSA_F4) == 1 && RSA_generate_key_ex(rsa, bits, e, nullptr) == 1;
  BN_free(e);
  if (!ok) {
    RSA_free(rsa);
    return nullptr;
  }
  // Without the cache each private operation builds its Montgomery contexts for p and q and frees
  // them (BN_MONT_CTX_free clears them) when it ends, instead of keeping them for the key's life.
  RSA_clear_flags(rsa, RSA_FLAG_CACHE_PRIVATE);
  return rsa;
}

void RsaFree(RSA* rsa) { RSA_free(rsa); }  // BN_clear_free of every private part

size_t RsaModulusBytes(const RSA* rsa) { return static_cast<size_t>(RSA_size(rsa)); }

namespace {
std::vector<uint8_t> BigEndian(const BIGNUM* bn) {
  std::vector<uint8_t> out(static_cast<size_t>(BN_num_bytes(bn)));
  BN_bn2bin(bn, out.data());
  return out;
}
}  // namespace

std::vector<uint8_t> RsaModulus(const RSA* rsa) { return BigEndian(RSA_get0_n(rsa)); }
std::vector<uint8_t> RsaPublicExponent(const RSA* rsa) { return BigEndian(RSA_get0_e(rsa)); }

bool RsaOaepSha256Decrypt(RSA* rsa, const uint8_t* in, size_t in_len, uint8_t* em, uint8_t* out, size_t out_len) {
  const int n = RSA_size(rsa);
  if (in_len != static_cast<size_t>(n)) return false;
  // The raw RSA step (blinded, CRT), then OAEP decoding: what OpenSSL's own EVP path does for OAEP.
  if (RSA_private_decrypt(n, in, em, rsa, RSA_NO_PADDING) != n) return false;
  int len = RSA_padding_check_PKCS1_OAEP_mgf1(out, static_cast<int>(out_len), em, n, n, nullptr, 0, EVP_sha256(), EVP_sha256());
  return len == static_cast<int>(out_len);
}

bool RsaPrivateNative(const RSA* rsa, uint8_t* out, size_t out_len) {
  const int n = RSA_size(rsa);
  const int half = n / 2;
  if (out_len != static_cast<size_t>(n + 5 * half)) return false;
  const BIGNUM* parts[] = {RSA_get0_d(rsa), RSA_get0_p(rsa), RSA_get0_q(rsa), RSA_get0_dmp1(rsa), RSA_get0_dmq1(rsa), RSA_get0_iqmp(rsa)};
  size_t at = 0;
  for (int i = 0; i < 6; ++i) {
    const int len = i == 0 ? n : half;
    if (parts[i] == nullptr || BN_bn2nativepad(parts[i], out + at, len) != len) return false;
    at += static_cast<size_t>(len);
  }
  return true;
}

}  // namespace sealed
