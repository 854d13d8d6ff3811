// Sharded models on the native path: the reference reader's binding rules, the same outcomes.
import { copyFileSync, mkdirSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { SealedModelReader } from '../../src/reader/sealed-model.js';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { importKey } from '../../src/native/key.js';
import { makeShardedModel as makeSharded } from '../helpers/sharded.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir('st-native-shards-');

function makeShardedModel(name: string, seed = 0): Map<string, Uint8Array> {
  return makeSharded(dir, name, seed).data;
}

async function nativeOutcome(path: string): Promise<string> {
  const key = importKey(new Uint8Array(TEST_KEY));
  try {
    const m = await NativeSealedModelReader.open(path, key, { threads: 2 });
    try {
      await m.verifyOrThrow();
    } finally {
      m.close();
    }
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  } finally {
    key.release();
  }
}

async function referenceOutcome(path: string): Promise<string> {
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

function copyDir(from: string, to: string, skip = ''): void {
  mkdirSync(to);
  for (const f of readdirSync(from)) if (f !== skip) copyFileSync(join(from, f), join(to, f));
}

describe('sharded models, native path', () => {
  const data1 = makeShardedModel('m1');
  makeShardedModel('m2', 1);
  const shard = 'model-00002-of-00003.safetensors.sealed';
  const seal = (input: string, output: string, key = TEST_KEY) => sealModelDirectory(join(dir, input), join(dir, output), { dataKey: key, keyId: 'shard-key', chunkSize: 4096 });

  it('reads every tensor of every shard, and verifies, like the reference reader', async () => {
    await seal('m1', 'a');
    const key = importKey(new Uint8Array(TEST_KEY));
    const m = await NativeSealedModelReader.open(join(dir, 'a'), key);
    expect(m.sharded).toBe(true);
    const ref = await SealedModelReader.open(join(dir, 'a'), TEST_KEY);
    expect(m.tensors()).toEqual(ref.tensors());
    const all = await m.loadAll();
    for (const [name, bytes] of data1) {
      expect(Buffer.from(all.tensors.get(name)!.bytes).equals(Buffer.from(bytes))).toBe(true);
      const one = await m.readTensor(name);
      expect(Buffer.from(one.bytes).equals(Buffer.from(bytes))).toBe(true);
      one.release();
    }
    all.release();
    // An unknown name (often a caller's input) rejects, as a single file's reader does: never a
    // synchronous throw that escapes a promise chain's .catch.
    const missing = [m.readTensor('no-such-tensor'), ref.readTensor('no-such-tensor')].map((p) => p.catch((e: { code?: string }) => e.code));
    expect(await Promise.all(missing)).toEqual(['ERR_NOT_FOUND', 'ERR_NOT_FOUND']);
    expect(await m.verifyOrThrow({ plainSha256: true })).toEqual(await ref.verify());
    m.close();
    await ref.close();
    key.release();
  });

  it('rejects foreign, re-sealed, reordered and missing shards, a lone shard and another key, as the reference does', async () => {
    await seal('m2', 'b');
    await seal('m1', 'again');
    await seal('m1', 'otherkey', OTHER_KEY);
    copyDir(join(dir, 'a'), join(dir, 'mixed-1'));
    copyFileSync(join(dir, 'b', shard), join(dir, 'mixed-1', shard));
    copyDir(join(dir, 'a'), join(dir, 'mixed-2'));
    copyFileSync(join(dir, 'again', shard), join(dir, 'mixed-2', shard));
    copyDir(join(dir, 'a'), join(dir, 'mixed-3'));
    const first = join(dir, 'mixed-3', 'model-00001-of-00003.safetensors.sealed');
    renameSync(first, join(dir, 'mixed-3', 'tmp'));
    renameSync(join(dir, 'mixed-3', shard), first);
    renameSync(join(dir, 'mixed-3', 'tmp'), join(dir, 'mixed-3', shard));
    copyDir(join(dir, 'a'), join(dir, 'mixed-4'), shard);
    const cases: [string, string][] = [
      ['mixed-1', 'ERR_INTEGRITY'],
      ['mixed-2', 'ERR_INTEGRITY'],
      ['mixed-3', 'ERR_INTEGRITY'],
      ['mixed-4', 'ERR_IO'],
      ['a/model-00001-of-00003.safetensors.sealed', 'ERR_FORMAT'],
      ['otherkey', 'ERR_KEY_MISMATCH'],
    ];
    for (const [path, code] of cases) {
      expect(await nativeOutcome(join(dir, path)), path).toBe(code);
      expect(await referenceOutcome(join(dir, path)), path).toBe(code);
    }
  });
});
