import { copyFileSync, mkdirSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { SealedModelReader } from '../../src/reader/sealed-model.js';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir();

function makeShardedModel(name: string, seed = 0): { path: string; data: Map<string, Uint8Array> } {
  const path = join(dir, name);
  mkdirSync(path);
  const shards: TensorSpec[][] = [
    [{ name: 'model.embed', dtype: 'F16', shape: [64, 33 + seed] }, { name: 'model.norm', dtype: 'F32', shape: [64] }],
    [{ name: 'layers.0.w', dtype: 'BF16', shape: [3000] }],
    [{ name: 'lm_head', dtype: 'I8', shape: [5000] }, { name: 'flag', dtype: 'BOOL', shape: [] }],
  ];
  const data = new Map<string, Uint8Array>();
  const weightMap: Record<string, string> = {};
  shards.forEach((tensors, i) => {
    const file = `model-0000${i + 1}-of-00003.safetensors`;
    for (const [k, v] of writeSafetensors(join(path, file), tensors, { format: 'pt' })) data.set(k, v);
    for (const t of tensors) weightMap[t.name] = file;
  });
  writeFileSync(join(path, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 12345 }, weight_map: weightMap }));
  return { path, data };
}

async function seal(input: string, output: string, key = TEST_KEY) {
  return sealModelDirectory(input, output, { dataKey: key, keyId: 'shard-key', chunkSize: 4096 });
}

async function outcome(path: string): Promise<string> {
  try {
    const m = await SealedModelReader.open(path, TEST_KEY);
    try {
      await m.verify();
    } finally {
      await m.close();
    }
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

describe('sharded models', () => {
  const m1 = makeShardedModel('m1');
  const m2 = makeShardedModel('m2', 1);

  it('seals shards plus an index and reads every tensor back', async () => {
    const out = join(dir, 'm1.sealed');
    const summary = await seal(m1.path, out);
    expect(summary.shards).toHaveLength(3);
    expect(readdirSync(out).sort()).toEqual([
      'model-00001-of-00003.safetensors.sealed',
      'model-00002-of-00003.safetensors.sealed',
      'model-00003-of-00003.safetensors.sealed',
      'model.safetensors.index.json.sealed',
    ]);
    const m = await SealedModelReader.open(out, TEST_KEY);
    expect(m.sharded).toBe(true);
    expect(m.tensors().map((t) => t.name).sort()).toEqual([...m1.data.keys()].sort());
    for (const [name, bytes] of m1.data) expect(await m.readTensor(name)).toEqual(bytes);
    expect(m.index?.indexTable?.indexMetadata).toEqual({ total_size: 12345 });
    await m.close();
    expect(await outcome(out)).toBe('ok');
  });

  it('rejects a shard swapped in from another model, from another sealing of the same model, or reordered', async () => {
    const a = join(dir, 'swap-a');
    const b = join(dir, 'swap-b');
    const again = join(dir, 'swap-again');
    await seal(m1.path, a);
    await seal(m2.path, b);
    await seal(m1.path, again); // same model, same key, a new version of the sealed files
    const shard = 'model-00002-of-00003.safetensors.sealed';

    const fromOtherModel = join(dir, 'mixed-1');
    mkdirSync(fromOtherModel);
    for (const f of readdirSync(a)) copyFileSync(join(a, f), join(fromOtherModel, f));
    copyFileSync(join(b, shard), join(fromOtherModel, shard));
    expect(await outcome(fromOtherModel)).toBe('ERR_INTEGRITY');

    const fromOtherRun = join(dir, 'mixed-2');
    mkdirSync(fromOtherRun);
    for (const f of readdirSync(a)) copyFileSync(join(a, f), join(fromOtherRun, f));
    copyFileSync(join(again, shard), join(fromOtherRun, shard));
    expect(await outcome(fromOtherRun)).toBe('ERR_INTEGRITY');

    const reordered = join(dir, 'mixed-3');
    mkdirSync(reordered);
    for (const f of readdirSync(a)) copyFileSync(join(a, f), join(reordered, f));
    renameSync(join(reordered, 'model-00001-of-00003.safetensors.sealed'), join(reordered, 'tmp'));
    renameSync(join(reordered, shard), join(reordered, 'model-00001-of-00003.safetensors.sealed'));
    renameSync(join(reordered, 'tmp'), join(reordered, shard));
    expect(await outcome(reordered)).toBe('ERR_INTEGRITY');

    const missing = join(dir, 'mixed-4');
    mkdirSync(missing);
    for (const f of readdirSync(a)) if (f !== shard) copyFileSync(join(a, f), join(missing, f));
    expect(await outcome(missing)).toBe('ERR_IO');
  });

  it('rejects a shard opened on its own, and a model sealed under another key', async () => {
    const out = join(dir, 'own');
    await seal(m1.path, out);
    expect(await outcome(join(out, 'model-00001-of-00003.safetensors.sealed'))).toBe('ERR_FORMAT');
    const other = join(dir, 'otherkey');
    await seal(m1.path, other, OTHER_KEY);
    expect(await outcome(other)).toBe('ERR_KEY_MISMATCH');
  });

  it('refuses an index that disagrees with its shards, and leaves no output behind', async () => {
    const bad = makeShardedModel('bad');
    writeFileSync(
      join(bad.path, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { 'model.embed': 'model-00002-of-00003.safetensors' } }),
    );
    const out = join(dir, 'bad.sealed');
    await expect(seal(bad.path, out)).rejects.toMatchObject({ code: 'ERR_SAFETENSORS' });
    expect(readdirSync(dir).filter((n) => n.startsWith('bad.sealed') || n.startsWith('.bad.sealed'))).toEqual([]);
  });
});
