import { createCipheriv, createDecipheriv, createHash, hkdfSync } from 'node:crypto';
import { IntegrityError } from '../errors.js';
import { Suite, type SuiteId, TAG_LENGTH } from '../format/constants.js';

/** Incremental SHA-256. */
export interface Sha256 {
  update(data: Uint8Array): Sha256;
  digest(): Uint8Array;
}

/**
 * The primitives the format needs, from one vetted library. Two backends implement it
 * (node:crypto, i.e. OpenSSL, and @noble): tests run every file through both so either
 * one misbehaving shows up as a disagreement.
 */
export interface CryptoBackend {
  readonly name: 'node' | 'noble';
  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: string, length: number): Uint8Array;
  /** Returns ciphertext || 16-byte tag. */
  aeadSeal(suite: SuiteId, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** Returns plaintext, or throws IntegrityError (no detail: which bit failed is nobody's business). */
  aeadOpen(suite: SuiteId, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array;
  sha256(): Sha256;
}

// The cast at the call sites only picks an overload: both AEAD cipher types share setAAD/getAuthTag.
const NODE_CIPHER: Record<SuiteId, 'aes-256-gcm' | 'chacha20-poly1305'> = {
  [Suite.AES_256_GCM]: 'aes-256-gcm',
  [Suite.CHACHA20_POLY1305]: 'chacha20-poly1305',
};

export function authFailed(cause?: unknown): IntegrityError {
  return new IntegrityError('authentication failed', cause === undefined ? undefined : { cause });
}

export const nodeBackend: CryptoBackend = {
  name: 'node',
  hkdfSha256(ikm, salt, info, length) {
    return new Uint8Array(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'ascii'), length));
  },
  aeadSeal(suite, key, nonce, aad, plaintext) {
    const c = createCipheriv(NODE_CIPHER[suite] as 'aes-256-gcm', key, nonce, { authTagLength: TAG_LENGTH });
    c.setAAD(aad, { plaintextLength: plaintext.length });
    const out = new Uint8Array(plaintext.length + TAG_LENGTH);
    const body = c.update(plaintext);
    const rest = c.final();
    out.set(body, 0);
    out.set(rest, body.length);
    out.set(c.getAuthTag(), plaintext.length);
    return out;
  },
  aeadOpen(suite, key, nonce, aad, sealed) {
    if (sealed.length < TAG_LENGTH) throw authFailed();
    const bodyLength = sealed.length - TAG_LENGTH;
    const d = createDecipheriv(NODE_CIPHER[suite] as 'aes-256-gcm', key, nonce, { authTagLength: TAG_LENGTH });
    d.setAAD(aad, { plaintextLength: bodyLength });
    d.setAuthTag(sealed.subarray(bodyLength));
    const out = new Uint8Array(bodyLength);
    const body = d.update(sealed.subarray(0, bodyLength));
    out.set(body, 0);
    // OpenSSL's output is a copy of its own: wipe it, so `out` is the only plaintext left.
    body.fill(0);
    try {
      const rest = d.final();
      out.set(rest, body.length);
      rest.fill(0);
    } catch (cause) {
      // Unauthenticated plaintext never leaves this function.
      out.fill(0);
      throw authFailed(cause);
    }
    return out;
  },
  sha256() {
    const h = createHash('sha256');
    const wrapper: Sha256 = {
      update(data) {
        h.update(data);
        return wrapper;
      },
      digest: () => new Uint8Array(h.digest()),
    };
    return wrapper;
  },
};

/** The backend of that name; @noble loads only when asked for (it costs start-up time otherwise). */
export async function backendByName(name: 'node' | 'noble'): Promise<CryptoBackend> {
  return name === 'node' ? nodeBackend : (await import('./noble-backend.js')).nobleBackend;
}
