/**
 * What ties evidence to one protocol run and one session key, computed as Trustee computes it
 * (trustee kbs/src/attestation/backend.rs and attestation-service parse_runtime_data): the hash of
 * the RFC 8785 canonical JSON of the runtime data, zero-padded to the hardware's report-data size.
 */
import { nodeCrypto } from '../crypto-builtin.js';
import canonicalize from 'canonicalize';
import { ProtocolError } from '../errors.js';

export const REPORT_DATA_BYTES = 64;
/** SPDM requester nonces (NVIDIA GPUs) are 32 bytes: the device binding is truncated to them. */
export const DEVICE_NONCE_BYTES = 32;

export type BindingHash = 'sha256' | 'sha384' | 'sha512';

/** RFC 8785 text of a JSON value; refuses what JSON cannot represent instead of guessing. */
export function jcs(value: unknown): string {
  let text: string | undefined;
  try {
    text = canonicalize(value);
  } catch (cause) {
    throw new ProtocolError(`value cannot be canonicalized as JSON (RFC 8785): ${(cause as Error).message}`, { cause });
  }
  if (typeof text !== 'string') throw new ProtocolError('value cannot be canonicalized as JSON (RFC 8785)');
  return text;
}

/**
 * The primary evidence's report data: HASH(JCS({"additional-evidence", "nonce", "tee-pubkey"}))
 * zero-padded to 64 bytes. SHA-384 for SEV-SNP and TDX as Trustee uses; the same for our
 * extension types (simulated, Nitro's nonce field). `teePubkey` is the JWK exactly as the session
 * sent it (a broker hashes the received object, not a normalized copy).
 */
export function kbsReportData(nonce: string, teePubkey: object, additionalEvidence = '', hash: BindingHash = 'sha384'): Uint8Array {
  if (typeof nonce !== 'string' || nonce.length === 0) throw new ProtocolError('the binding needs the challenge nonce');
  if (typeof additionalEvidence !== 'string') throw new ProtocolError('additional-evidence must be a string (JSON text or empty)');
  const digest = nodeCrypto().createHash(hash).update(jcs({ 'additional-evidence': additionalEvidence, nonce, 'tee-pubkey': teePubkey }), 'utf8').digest();
  const out = new Uint8Array(REPORT_DATA_BYTES);
  out.set(digest.subarray(0, REPORT_DATA_BYTES));
  return out;
}

/** Additional (device) evidence binds HASH(JCS({"nonce", "tee-pubkey"})), truncated to the SPDM nonce. */
export function kbsDeviceNonce(nonce: string, teePubkey: object, hash: BindingHash = 'sha384'): Uint8Array {
  if (typeof nonce !== 'string' || nonce.length === 0) throw new ProtocolError('the binding needs the challenge nonce');
  const digest = nodeCrypto().createHash(hash).update(jcs({ nonce, 'tee-pubkey': teePubkey }), 'utf8').digest();
  return new Uint8Array(digest.subarray(0, DEVICE_NONCE_BYTES));
}
