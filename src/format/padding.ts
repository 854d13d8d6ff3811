import { FormatError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { MAX_PAYLOAD_LENGTH, MAX_TABLE_PLAINTEXT, MIN_TABLE_BUCKET, TABLE_LENGTH_PREFIX } from './constants.js';

/**
 * Padding (FORMAT.md sections 5.1 and 5.3). Without it the sealed table's length predicts a known
 * model's tensor names and shapes: the table is padded to a few public sizes, inside the AEAD.
 */

/** Padded table plaintext length for `needed` bytes (length prefix and JSON): a power of two from 4 KiB, capped at 100 MiB. */
export function tableBucket(needed: number): number {
  if (!Number.isSafeInteger(needed) || needed < 0) throw new InvalidArgumentError(`a table length must be a non-negative integer, got ${needed}`);
  // The safetensors file is fine (the reference loads it): sealed format v1 cannot hold its table.
  if (needed > MAX_TABLE_PLAINTEXT) {
    throw new UnsupportedError(`the sealed table would be ${needed} bytes, more than the 100 MiB sealed format v1 allows: too many tensors or too much metadata`);
  }
  let bucket = MIN_TABLE_BUCKET;
  while (bucket < needed) bucket *= 2;
  return Math.min(bucket, MAX_TABLE_PLAINTEXT);
}

/** Whether `length` is a padded table plaintext length version 1 allows. */
export function isTableBucket(length: number): boolean {
  if (length === MAX_TABLE_PLAINTEXT) return true;
  if (!Number.isSafeInteger(length) || length < MIN_TABLE_BUCKET || length > MAX_TABLE_PLAINTEXT) return false;
  return (length & (length - 1)) === 0;
}

/** `u32le(json.length) || json || zeros`, padded to its bucket. */
export function padTable(json: Uint8Array): Uint8Array {
  const out = new Uint8Array(tableBucket(TABLE_LENGTH_PREFIX + json.length));
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, TABLE_LENGTH_PREFIX);
  return out;
}

/** The JSON inside a decrypted, padded table (a view, not a copy); ERR_FORMAT unless framing and zero padding are exact. */
export function unpadTable(plain: Uint8Array): Uint8Array {
  if (!isTableBucket(plain.length)) throw new FormatError(`the decrypted table is ${plain.length} bytes, not a padded size version 1 allows`);
  const n = new DataView(plain.buffer, plain.byteOffset, plain.byteLength).getUint32(0, true);
  if (n > plain.length - TABLE_LENGTH_PREFIX) {
    throw new FormatError(`the table declares ${n} bytes of JSON in a ${plain.length}-byte padded table: written by a broken sealer`);
  }
  const end = TABLE_LENGTH_PREFIX + n;
  if (tableBucket(end) !== plain.length) {
    throw new FormatError(`the table is padded to ${plain.length} bytes, but ${end} bytes need a padded size of ${tableBucket(end)}`);
  }
  for (let i = end; i < plain.length; i++) {
    if (plain[i] !== 0) throw new FormatError(`the table's padding holds a non-zero byte at ${i}: written by a broken sealer`);
  }
  return plain.subarray(TABLE_LENGTH_PREFIX, end);
}

/**
 * Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication with
 * PURBs", PETS 2019): rounds up to a length whose low bits are zero, at most 12% larger, so a
 * length reveals O(log log n) bits instead of the exact parameter count.
 */
export function padmeLength(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`payload length must be a non-negative integer, got ${n}`);
  if (n < 2) return n;
  const e = Math.floor(Math.log2(n));
  const s = Math.floor(Math.log2(e)) + 1;
  const step = 2 ** (e - s);
  const padded = Math.ceil(n / step) * step;
  if (padded > MAX_PAYLOAD_LENGTH) throw new InvalidArgumentError(`a payload of ${n} bytes padded to ${padded} exceeds 2^53 - 1 bytes`);
  return padded;
}
