import { assertBytes, constantTimeEqual, wipe } from '../bytes.js';
import { KeyMismatchError } from '../errors.js';
import {
  COMMITMENT_LENGTH,
  DATA_KEY_LENGTH,
  LABEL_COMMITMENT,
  LABEL_PAYLOAD_KEY,
  LABEL_TABLE_KEY,
  SALT_LENGTH,
} from '../format/constants.js';
import type { CryptoBackend } from './backend.js';

/** Per-file subkeys (FORMAT.md section 4). Call `destroy()` when done with them. */
export interface FileKeys {
  readonly commitment: Uint8Array;
  readonly tableKey: Uint8Array;
  readonly payloadKey: Uint8Array;
  destroy(): void;
}

export function deriveFileKeys(backend: CryptoBackend, dataKey: Uint8Array, salt: Uint8Array): FileKeys {
  assertBytes(dataKey, 'data key', DATA_KEY_LENGTH);
  assertBytes(salt, 'salt', SALT_LENGTH);
  const commitment = backend.hkdfSha256(dataKey, salt, LABEL_COMMITMENT, COMMITMENT_LENGTH);
  const tableKey = backend.hkdfSha256(dataKey, salt, LABEL_TABLE_KEY, 32);
  const payloadKey = backend.hkdfSha256(dataKey, salt, LABEL_PAYLOAD_KEY, 32);
  return {
    commitment,
    tableKey,
    payloadKey,
    destroy: () => wipe(commitment, tableKey, payloadKey),
  };
}

/** Derive and check the key commitment first, so a wrong key is caught before any decryption. */
export function deriveCheckedFileKeys(
  backend: CryptoBackend,
  dataKey: Uint8Array,
  salt: Uint8Array,
  expectedCommitment: Uint8Array,
  keyId: string,
): FileKeys {
  const keys = deriveFileKeys(backend, dataKey, salt);
  if (!constantTimeEqual(keys.commitment, expectedCommitment)) {
    keys.destroy();
    throw new KeyMismatchError(
      `the data key does not open this file (its key id is "${keyId}"): use the key the file was sealed with`,
    );
  }
  return keys;
}
