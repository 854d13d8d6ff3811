import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { EvidenceFormatError } from '../../errors.js';

// SubjectPublicKeyInfo prefix for an uncompressed P-256 point (id-ecPublicKey, prime256v1).
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/** Imports a raw 64-byte x||y P-256 public key, as TDX quotes carry the attestation key. */
export function p256RawKey(xy: Uint8Array, what: string): KeyObject {
  if (xy.length !== 64) throw new EvidenceFormatError(`${what} must be 64 bytes (x||y), got ${xy.length}`);
  try {
    return createPublicKey({ key: Buffer.concat([P256_SPKI_PREFIX, Buffer.from([0x04]), Buffer.from(xy)]), format: 'der', type: 'spki' });
  } catch (err) {
    throw new EvidenceFormatError(`${what} is not a point on P-256; the evidence is corrupt`, { cause: err });
  }
}

/** ECDSA verification with a raw r||s signature; false (never a throw) for a bad signature. */
export function ecdsaVerifyRaw(hash: 'sha256' | 'sha384', key: KeyObject, data: Uint8Array, rs: Uint8Array): boolean {
  try {
    return cryptoVerify(hash, data, { key, dsaEncoding: 'ieee-p1363' }, rs);
  } catch {
    return false;
  }
}
