import { assertBytes, constantTimeEqual, wipe } from '../bytes.js';
import { KeyMismatchError } from '../errors.js';
import { COMMITMENT_LENGTH, DATA_KEY_LENGTH, SALT_LENGTH, hkdfInfo } from '../format/constants.js';
import type { CryptoBackend } from './backend.js';

/** Per-file subkeys (FORMAT.md section 4). Call `destroy()` when done with them. */
export interface FileKeys {
  readonly commitment: Uint8Array;
  readonly tableKey: Uint8Array;
  readonly payloadKey: Uint8Array;
  destroy(): void;
}

/** The header fields every subkey is bound to (a PublicHeader is one). */
export interface KeyContext {
  version: number;
  suite: number;
  kind: number;
  salt: Uint8Array;
}

export function deriveFileKeys(backend: CryptoBackend, dataKey: Uint8Array, context: KeyContext): FileKeys {
  assertBytes(dataKey, 'data key', DATA_KEY_LENGTH);
  const { salt } = context;
  assertBytes(salt, 'salt', SALT_LENGTH);
  const commitment = backend.hkdfSha256(dataKey, salt, hkdfInfo('key commitment', context), COMMITMENT_LENGTH);
  const tableKey = backend.hkdfSha256(dataKey, salt, hkdfInfo('table key', context), 32);
  const payloadKey = backend.hkdfSha256(dataKey, salt, hkdfInfo('payload key', context), 32);
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
  header: KeyContext & { keyCommitment: Uint8Array; keyId: string },
): FileKeys {
  const keys = deriveFileKeys(backend, dataKey, header);
  if (!constantTimeEqual(keys.commitment, header.keyCommitment)) {
    keys.destroy();
    throw new KeyMismatchError(
      `the data key does not open this file (its key id is "${header.keyId}"): use the key the file was sealed with`,
    );
  }
  return keys;
}
