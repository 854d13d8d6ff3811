// RSA ephemeral keys through OpenSSL's RSA object directly, not EVP_PKEY: the provider's RSA caches
// Montgomery contexts holding copies of p and q in OpenSSL's ordinary (unlocked) heap for the key's
// whole life after its first private operation (RSA_FLAG_CACHE_PRIVATE). Here that flag is cleared,
// so those copies exist only during a decryption and are cleansed at its end; p, q, d and the CRT
// values stay in OpenSSL's secure heap (BN_secure_new in its key generation).
#pragma once
#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sealed {

// A fresh key with e = 65537, or nullptr. Free with RsaFree.
RSA* RsaGenerate(int bits);
void RsaFree(RSA* rsa);
size_t RsaModulusBytes(const RSA* rsa);
// Big-endian modulus and public exponent, for the JWK.
std::vector<uint8_t> RsaModulus(const RSA* rsa);
std::vector<uint8_t> RsaPublicExponent(const RSA* rsa);

// RSAES-OAEP decryption with SHA-256 and MGF1-SHA-256, empty label (RFC 8017 7.1.2). `em` is scratch
// of RsaModulusBytes bytes (secure memory: it holds the encoded message); the message goes to `out`
// and must be exactly `out_len` bytes. False on any failure (nothing says which).
bool RsaOaepSha256Decrypt(RSA* rsa, const uint8_t* in, size_t in_len, uint8_t* em, uint8_t* out, size_t out_len);

// Test only: d (modulus bytes) then p, q, dP, dQ, qInv (half that each), native byte order, into `out`.
bool RsaPrivateNative(const RSA* rsa, uint8_t* out, size_t out_len);

}  // namespace sealed
