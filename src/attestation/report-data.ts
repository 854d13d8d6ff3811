import { nodeCrypto } from '../crypto-builtin.js';
import { assertBytes } from '../bytes.js';
import { InvalidArgumentError } from '../errors.js';

const LABEL = Buffer.from('sealed-tensors report-data v1\0', 'latin1');

function lengthPrefixed(b: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length, 0);
  return Buffer.concat([len, b]);
}

/**
 * The 64 bytes a session binds into its evidence: SHA-512 over a label, the verifier's nonce and the
 * session's ephemeral public key, each length-prefixed so no two (nonce, key) pairs collide. The
 * broker computes the same value and passes it as `expectedReportData`: evidence then proves both
 * freshness (the nonce) and which key the data key may be wrapped to.
 */
export function bindReportData(nonce: Uint8Array, publicKey: Uint8Array): Uint8Array {
  assertBytes(nonce, 'nonce');
  assertBytes(publicKey, 'publicKey');
  if (nonce.length < 16) throw new InvalidArgumentError(`nonce must be at least 16 bytes, got ${nonce.length}`);
  if (publicKey.length === 0) throw new InvalidArgumentError('publicKey must not be empty');
  return new Uint8Array(nodeCrypto().createHash('sha512').update(LABEL).update(lengthPrefixed(nonce)).update(lengthPrefixed(publicKey)).digest());
}
