// The @noble backend, in its own module so that importing the library does not load @noble
// (tests cross-check every file through it; `backend: 'noble'` selects it in the reader).
import { gcm } from '@noble/ciphers/aes.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { Suite, type SuiteId } from '../format/constants.js';
import { authFailed, type CryptoBackend, type Sha256 } from './backend.js';

export const nobleBackend: CryptoBackend = {
  name: 'noble',
  hkdfSha256(ikm, salt, info, length) {
    return hkdf(sha256, ikm, salt, new TextEncoder().encode(info), length);
  },
  aeadSeal(suite, key, nonce, aad, plaintext) {
    return nobleCipher(suite, key, nonce, aad).encrypt(plaintext);
  },
  aeadOpen(suite, key, nonce, aad, sealed) {
    try {
      return nobleCipher(suite, key, nonce, aad).decrypt(sealed);
    } catch (cause) {
      throw authFailed(cause);
    }
  },
  sha256() {
    const h = sha256.create();
    const wrapper: Sha256 = {
      update(data) {
        h.update(data);
        return wrapper;
      },
      digest: () => h.digest(),
    };
    return wrapper;
  },
};

function nobleCipher(suite: SuiteId, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array) {
  return suite === Suite.AES_256_GCM ? gcm(key, nonce, aad) : chacha20poly1305(key, nonce, aad);
}
