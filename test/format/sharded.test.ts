import { copyFileSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { SealedModelReader } from '../../src/reader/sealed-model.js';
import { makeShardedModel as makeSharded } from '../helpers/sharded.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';
import { bitsToFlip, tablePaddingRange } from '../helpers/sealed.js';

const dir = tempDir();

function makeShardedModel(name: string, seed = 0): { path: string; data: Map<string, Uint8Array> } {
  return makeSharded(dir, name, seed);
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

  it('rejects every single-bit flip of the sealed index file (one bit per byte of table padding)', async () => {
    const out = join(dir, 'index-flips');
    await seal(m1.path, out);
    const indexPath = join(out, 'model.safetensors.index.json.sealed');
    const original = readFileSync(indexPath);
    const copy = Buffer.from(original);
    const seen = new Map<string, number>();
    const padding = tablePaddingRange(original, TEST_KEY);
    let cases = 0;
    for (let pos = 0; pos < copy.length; pos++) {
      for (const bit of bitsToFlip(pos, padding)) {
        cases++;
        copy[pos]! ^= 1 << bit;
        writeFileSync(indexPath, copy);
        const o = await outcome(out);
        copy[pos]! ^= 1 << bit;
        if (o === 'ok') expect.fail(`flip of bit ${bit} at byte ${pos} of the index was accepted`);
        seen.set(o, (seen.get(o) ?? 0) + 1);
      }
    }
    writeFileSync(indexPath, original);
    expect(await outcome(out)).toBe('ok');
    console.log(`index bit flips: ${cases} cases ->`, Object.fromEntries(seen));
  }, 300_000);

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
