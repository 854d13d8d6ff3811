/** Shared pieces of the session tests: sealed models with known keys, their bindings, a fake broker. */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { toHex } from '../../src/bytes.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { readPublicHeader } from '../../src/reader/sealed-file.js';
import { FileSource } from '../../src/reader/source.js';
import { resolveSealedModelPath } from '../../src/reader/model-binding.js';
import type { ModelBinding } from '../../src/protocol/resource.js';
import { loadAddon } from '../../src/native/addon.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { SMALL_MODEL } from '../helpers/sealed.js';

/** The (bundle id, header digest) of a sealed model's top-level file, as a broker registers it. */
export async function bindingOf(path: string): Promise<ModelBinding> {
  const source = await FileSource.open(await resolveSealedModelPath(path));
  try {
    const { header, headerBytes } = await readPublicHeader(source);
    return { bundleId: toHex(header.bundleId), headerDigest: createHash('sha256').update(headerBytes).digest('hex') };
  } finally {
    await source.close();
  }
}

/** A one-file sealed model under `keyId`, with its plaintext tensors. */
export async function sealedFile(dir: string, name: string, key: Uint8Array, keyId: string, tensors: TensorSpec[] = SMALL_MODEL) {
  const input = join(dir, `${name}.safetensors`);
  const path = join(dir, `${name}.sealed`);
  const data = writeSafetensors(input, tensors, { format: 'pt' });
  await sealFile(input, path, { dataKey: key, keyId, chunkSize: 4096 });
  return { path, data, binding: await bindingOf(path) };
}

/** A three-shard sealed model folder under `keyId`, with its plaintext tensors. */
export async function sealedSharded(dir: string, name: string, key: Uint8Array, keyId: string) {
  const model = makeShardedModel(dir, `${name}-plain`);
  const path = join(dir, name);
  await sealModelDirectory(model.path, path, { dataKey: key, keyId, chunkSize: 4096 });
  return { path, data: model.data, binding: await bindingOf(path) };
}

export function lockedBytes(): number {
  return loadAddon().secureLockedBytes();
}
