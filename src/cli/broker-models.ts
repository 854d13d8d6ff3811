/**
 * What `broker key add|bind|rotate --model SEALED` records of a sealed model: the bundle id and
 * header digest of its top-level file (the model file, or the sealed index of a sharded model),
 * read from its public header. Lives in the CLI, not in src/broker: the broker never imports the
 * readers.
 */
import { createHash } from 'node:crypto';
import { basename, resolve } from 'node:path';
import { toHex } from '../bytes.js';
import { nodeBackend } from '../crypto/backend.js';
import { deriveCheckedFileKeys } from '../crypto/file-keys.js';
import { InvalidArgumentError, KeyMismatchError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import type { DataKey } from '../keys/key-file.js';
import type { ModelBinding } from '../broker/keystore.js';
import { resolveSealedModelPath } from '../reader/model-binding.js';
import { readPublicHeader } from '../reader/public-header.js';
import { FileSource } from '../reader/source.js';
import { explainNotSealed } from './not-sealed.js';

/**
 * The binding of the sealed model at `path` (file, sealed index, or sealed model folder), checked
 * against `key`: same key id, and the key opens it (the header's key commitment).
 */
export async function readModelBinding(path: string, key: DataKey): Promise<ModelBinding> {
  let header;
  let headerBytes;
  let file: string;
  try {
    file = await resolveSealedModelPath(path);
    const source = await FileSource.open(file);
    try {
      ({ header, headerBytes } = await readPublicHeader(source));
    } finally {
      await source.close();
    }
  } catch (err) {
    throw await explainNotSealed(path, err);
  }
  if (header.kind === FileKind.SHARD) {
    throw new InvalidArgumentError(`${file} is one shard of a sharded model: bind the model by its sealed index or its folder`);
  }
  if (header.keyId !== key.id) {
    throw new KeyMismatchError(`${file} was sealed under key id "${header.keyId}", not "${key.id}": a key is bound only to models sealed under it`);
  }
  // The id matches; the key must also be the one the model was sealed with.
  deriveCheckedFileKeys(nodeBackend, key.key, header).destroy();
  const label = basename(resolve(path));
  return {
    bundleId: toHex(header.bundleId),
    headerDigest: createHash('sha256').update(headerBytes).digest('hex'),
    ...(label ? { label } : {}),
  };
}
