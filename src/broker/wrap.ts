/**
 * The released resource as a flattened JWE to the session's tee-pubkey: ECDH-ES+A256KW for EC
 * P-256, RSA-OAEP-256 for RSA, content A256GCM; exactly the five members KBS clients expect (no aad,
 * no unprotected header: everything the receiver relies on is in the protected header).
 *
 * Trustee's clients do not use the `protected` string they receive as the AAD: they decode it into
 * kbs-types' ProtectedHeader and take the AAD from its re-serialization (alg, enc, then the other
 * members in serde_json's sorted-map order, nested objects sorted too, no whitespace). A header that
 * is already in that form survives the round trip byte for byte, so that is the form sent here.
 * jose puts `epk`'s members in the order x, crv, kty, y and cannot be told otherwise, so the EC path
 * is composed from node:crypto (OpenSSL): ECDH, the JWA Concat KDF's single SHA-256 round, AES key
 * wrap, AES-256-GCM. jose decrypts every JWE made here in the tests, as does the session's addon.
 */
import { createCipheriv, createHash, diffieHellman, generateKeyPairSync, publicEncrypt, randomBytes, constants } from 'node:crypto';
import { publicKeyFromJwk, type PublicJwk } from '../protocol/jwk.js';
import type { FlattenedJwe } from '../protocol/messages.js';
import { BrokerError } from '../errors.js';
import { wipe } from '../bytes.js';

export const CONTENT_ENC = 'A256GCM';
const CEK_BYTES = 32;
const AES_KW_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex'); // RFC 3394 default IV

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

function u32be(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * RFC 7518 section 4.6.2 (NIST SP 800-56A single-step KDF with SHA-256): for a key of at most 256
 * bits the counter stops at 1, so it is one hash over the standard's inputs, and no more.
 */
export function concatKdfSha256(z: Uint8Array, algorithmId: string, keyBits: number, apu: Uint8Array = new Uint8Array(0), apv: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (keyBits <= 0 || keyBits > 256 || keyBits % 8 !== 0) throw new BrokerError(`Concat KDF: ${keyBits}-bit keys are not supported here (one SHA-256 round gives at most 256)`);
  const alg = Buffer.from(algorithmId, 'ascii');
  const h = createHash('sha256');
  for (const part of [u32be(1), z, u32be(alg.length), alg, u32be(apu.length), apu, u32be(apv.length), apv, u32be(keyBits)]) h.update(part);
  const out = h.digest();
  return new Uint8Array(out.buffer, out.byteOffset, keyBits / 8);
}

/** The protected header as kbs-types re-serializes it: alg, enc, then the rest with sorted members. */
function kbsProtectedHeader(alg: string, extra: Record<string, unknown>): string {
  const sorted = (v: unknown): unknown => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])]));
  };
  const rest = sorted(extra) as Record<string, unknown>;
  return JSON.stringify({ alg, enc: CONTENT_ENC, ...rest });
}

function wrapCek(teePubkey: PublicJwk, cek: Uint8Array): { protectedJson: string; encryptedKey: Uint8Array } {
  if (teePubkey.kty === 'RSA') {
    const encryptedKey = publicEncrypt({ key: publicKeyFromJwk(teePubkey), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);
    return { protectedJson: kbsProtectedHeader('RSA-OAEP-256', {}), encryptedKey };
  }
  const recipient = publicKeyFromJwk(teePubkey);
  const ephemeral = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const z = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient });
  const kek = concatKdfSha256(z, 'ECDH-ES+A256KW', 256);
  try {
    const kw = createCipheriv('id-aes256-wrap', kek, AES_KW_IV);
    const encryptedKey = Buffer.concat([kw.update(cek), kw.final()]);
    const epk = ephemeral.publicKey.export({ format: 'jwk' });
    return { protectedJson: kbsProtectedHeader('ECDH-ES+A256KW', { epk: { kty: 'EC', crv: 'P-256', x: epk.x, y: epk.y } }), encryptedKey };
  } finally {
    wipe(z);
    wipe(kek);
  }
}

export async function encryptToTeePubkey(teePubkey: PublicJwk, plaintext: Uint8Array): Promise<FlattenedJwe> {
  const cek = randomBytes(CEK_BYTES);
  try {
    const { protectedJson, encryptedKey } = wrapCek(teePubkey, cek);
    const protectedB64 = Buffer.from(protectedJson, 'utf8').toString('base64url');
    const iv = randomBytes(12);
    const gcm = createCipheriv('aes-256-gcm', cek, iv);
    gcm.setAAD(Buffer.from(protectedB64, 'ascii'));
    const ciphertext = Buffer.concat([gcm.update(plaintext), gcm.final()]);
    return { protected: protectedB64, encrypted_key: b64url(encryptedKey), iv: b64url(iv), ciphertext: b64url(ciphertext), tag: b64url(gcm.getAuthTag()) };
  } finally {
    wipe(cek);
  }
}
