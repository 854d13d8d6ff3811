/** An empty payload's one chunk covers no tensor byte, and is authenticated all the same. */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { importKey } from '../../src/native/key.js';
import { NativeSealedFileReader } from '../../src/reader/native-file.js';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir('st-empty-');

/** A copy of `path` with one bit of its last chunk's tag (the file's last byte) flipped. */
function flipLastTagBit(path: string): string {
  const bytes = readFileSync(path);
  bytes[bytes.length - 1]! ^= 0x01;
  writeFileSync(path + '.bad', bytes);
  return path + '.bad';
}

describe('an empty payload', () => {
  it('readTensor authenticates its one chunk, on both readers', async () => {
    const input = join(dir, 'empty.safetensors');
    const path = join(dir, 'empty.sealed');
    writeSafetensors(input, [
      { name: 'nothing', dtype: 'F32', shape: [0, 3] },
      { name: 'none', dtype: 'U8', shape: [0] },
    ]);
    await sealFile(input, path, { dataKey: TEST_KEY, keyId: 'test-key', chunkSize: 4096 });
    const bad = flipLastTagBit(path);
    const key = importKey(new Uint8Array(TEST_KEY));
    try {
      const good = await NativeSealedFileReader.open(path, key, { threads: 2 });
      const t = await good.readTensor('nothing');
      expect(t.bytes.length).toBe(0);
      t.release();
      good.close();
      const r = await NativeSealedFileReader.open(bad, key, { threads: 2 });
      for (const name of ['nothing', 'none']) await expect(r.readTensor(name)).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
      r.close();
    } finally {
      key.release();
    }
    const refGood = await SealedFileReader.open(path, TEST_KEY);
    expect(await refGood.readTensor('none')).toEqual(new Uint8Array(0));
    await refGood.close();
    const ref = await SealedFileReader.open(bad, TEST_KEY);
    await expect(ref.readTensor('nothing')).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    await ref.close();
  });

  it('a sealed shard index: the native reader authenticates its chunk on open, as the reference reader does', async () => {
    const { path: model } = makeShardedModel(dir, 'sharded');
    const sealed = await sealModelDirectory(model, join(dir, 'sharded.sealed'), { dataKey: TEST_KEY, keyId: 'test-key', chunkSize: 4096 });
    const index = sealed.index.path;
    const bad = flipLastTagBit(index);
    const key = importKey(new Uint8Array(TEST_KEY));
    try {
      (await NativeSealedFileReader.open(index, key)).close();
      await expect(NativeSealedFileReader.open(bad, key)).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
      (await NativeSealedModelReader.open(index, key)).close();
    } finally {
      key.release();
    }
    await expect(SealedFileReader.open(bad, TEST_KEY)).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
  });
});
