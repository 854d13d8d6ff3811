// Sealed models for the source tests, big enough that a tensor's chunks lie past a range source's
// first request (64 KiB), so that "reads only its chunks" is visible in the server's log.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sealFile } from '../../src/seal/seal-file.js';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { FileSource } from '../../src/reader/source.js';
import { readPublicHeader } from '../../src/reader/sealed-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { chunkFileOffset, chunkPlainLength, type Layout } from '../../src/format/layout.js';
import { TAG_LENGTH } from '../../src/format/constants.js';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { TEST_KEY } from '../helpers/tmp.js';

export const CHUNK = 4096;

export const SINGLE: TensorSpec[] = [
  { name: 'embed', dtype: 'F32', shape: [300, 100] },
  { name: 'bias', dtype: 'BF16', shape: [1500] },
  { name: 'head', dtype: 'U8', shape: [70000] },
  { name: 'scalar', dtype: 'F32', shape: [] },
];

export const SHARDS: TensorSpec[][] = [
  [{ name: 'model.embed', dtype: 'F16', shape: [256, 200] }, { name: 'model.norm', dtype: 'F32', shape: [256] }],
  [{ name: 'layers.0.big', dtype: 'U8', shape: [100000] }, { name: 'layers.0.w', dtype: 'BF16', shape: [20000] }, { name: 'layers.0.b', dtype: 'F32', shape: [64] }],
  [{ name: 'lm_head', dtype: 'I8', shape: [90000] }, { name: 'flag', dtype: 'BOOL', shape: [] }],
];

export const INDEX_NAME = 'model.safetensors.index.json.sealed';
export const shardName = (i: number): string => `model-0000${i + 1}-of-0000${SHARDS.length}.safetensors.sealed`;

/** Seals SINGLE as `www/model.sealed` and SHARDS under `www/sharded/`; plaintext stays in `plain/`. */
export async function sealFixtures(dir: string): Promise<{ data: Map<string, Uint8Array>; www: string }> {
  const plain = join(dir, 'plain');
  const www = join(dir, 'www');
  mkdirSync(plain);
  mkdirSync(www);
  const data = new Map<string, Uint8Array>();
  for (const [k, v] of writeSafetensors(join(plain, 'model.safetensors'), SINGLE, { format: 'pt' })) data.set(k, v);
  await sealFile(join(plain, 'model.safetensors'), join(www, 'model.sealed'), { dataKey: new Uint8Array(TEST_KEY), keyId: 'test-key', chunkSize: CHUNK });
  const shardDir = join(plain, 'sharded');
  mkdirSync(shardDir);
  const weightMap: Record<string, string> = {};
  SHARDS.forEach((tensors, i) => {
    const file = `model-0000${i + 1}-of-0000${SHARDS.length}.safetensors`;
    for (const [k, v] of writeSafetensors(join(shardDir, file), tensors, { format: 'pt' })) data.set(k, v);
    for (const t of tensors) weightMap[t.name] = file;
  });
  writeFileSync(join(shardDir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await sealModelDirectory(shardDir, join(www, 'sharded'), { dataKey: new Uint8Array(TEST_KEY), keyId: 'test-key', chunkSize: CHUNK });
  return { data, www };
}

/** The file bytes [first, last] (inclusive, as in a Range header) holding the chunks of tensor `name`. */
export async function tensorChunkRange(path: string, name: string): Promise<{ first: number; last: number; layout: Layout }> {
  const file = await FileSource.open(path);
  const { layout } = await readPublicHeader(file).finally(() => file.close());
  const reader = await SealedFileReader.open(path, new Uint8Array(TEST_KEY));
  try {
    const t = reader.tensors().find((x) => x.name === name)!;
    const c0 = Math.floor(t.begin / layout.chunkSize);
    const c1 = Math.floor((t.end - 1) / layout.chunkSize);
    return { first: chunkFileOffset(layout, c0), last: chunkFileOffset(layout, c1) + chunkPlainLength(layout, c1) + TAG_LENGTH - 1, layout };
  } finally {
    await reader.close();
  }
}
