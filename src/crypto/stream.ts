import { NONCE_LENGTH } from '../format/constants.js';

/** Nonce of payload chunk i (FORMAT.md 5.2): 3 zero bytes || u64be(i) || last flag. Derived, never counted by callers. */
export function chunkNonce(index: number, last: boolean): Uint8Array {
  const nonce = new Uint8Array(NONCE_LENGTH);
  new DataView(nonce.buffer).setBigUint64(3, BigInt(index), false);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** The table's key encrypts exactly one message, so its nonce is fixed. */
export const TABLE_NONCE: Uint8Array = new Uint8Array(NONCE_LENGTH);
