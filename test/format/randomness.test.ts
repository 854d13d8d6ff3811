import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, expectTypeOf, it } from 'vitest';
import * as api from '../../src/index.js';
import type { SealOptions } from '../../src/index.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

// Salts and bundle ids must come from the CSPRNG: a caller-chosen source that repeats them repeats
// (subkey, nonce) pairs, which under AES-GCM leaks the authentication key.
const dir = tempDir();
const options: SealOptions = { dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096 };
const constant = (n: number): Uint8Array => new Uint8Array(n).fill(7);
const bundleIdAndSalt = (path: string): string => readFileSync(path).subarray(40, 88).toString('hex');

describe('randomness of a sealed file is not a caller option', () => {
  it('is not part of the public option types', () => {
    expectTypeOf<SealOptions>().not.toHaveProperty('randomBytes');
    expectTypeOf<Parameters<typeof api.sealFile>[2]>().not.toHaveProperty('randomBytes');
    expectTypeOf<Parameters<typeof api.sealModelDirectory>[2]>().not.toHaveProperty('randomBytes');
    // @ts-expect-error randomBytes is not a seal option
    const withRandom: SealOptions = { ...options, randomBytes: constant };
    expect(withRandom).toBeDefined();
    // The internal entry points that accept a source stay out of the package's exports.
    for (const name of ['resolveSealOptions', 'sealFileResolved', 'sealModelDirectoryResolved']) expect(Object.keys(api)).not.toContain(name);
  });

  it('is refused when a JavaScript caller passes it anyway', async () => {
    const input = join(dir, 'refused.safetensors');
    writeSafetensors(input, [{ name: 'a', dtype: 'F32', shape: [10] }]);
    const sneaky = { ...options, randomBytes: constant } as SealOptions;
    await expect(api.sealFile(input, join(dir, 'refused.sealed'), sneaky)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    const model = makeShardedModel(dir, 'refused-sharded');
    await expect(api.sealModelDirectory(model.path, join(dir, 'refused-out'), sneaky)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });

  it('gives every sealing run a fresh salt and bundle id', async () => {
    const input = join(dir, 'twice.safetensors');
    writeSafetensors(input, [{ name: 'a', dtype: 'F32', shape: [2000] }]);
    await api.sealFile(input, join(dir, 'twice-1.sealed'), options);
    await api.sealFile(input, join(dir, 'twice-2.sealed'), options);
    const [a, b] = [bundleIdAndSalt(join(dir, 'twice-1.sealed')), bundleIdAndSalt(join(dir, 'twice-2.sealed'))];
    expect(a.slice(0, 32)).not.toBe(b.slice(0, 32));
    expect(a.slice(32)).not.toBe(b.slice(32));

    const model = makeShardedModel(dir, 'twice-sharded');
    const [m1, m2] = [await api.sealModelDirectory(model.path, join(dir, 'twice-m1'), options), await api.sealModelDirectory(model.path, join(dir, 'twice-m2'), options)];
    const files = [...m1.shards, m1.index, ...m2.shards, m2.index].map((s) => s.path);
    const salts = files.map((f) => bundleIdAndSalt(f).slice(32));
    expect(new Set(salts).size).toBe(files.length);
    expect(Buffer.from(m1.index.header.bundleId).equals(Buffer.from(m2.index.header.bundleId))).toBe(false);
  });
});
