// The reference reader compares each tensor's digest in constant time, as the native path does
// (the digests are of plaintext that the secret table describes).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { resolveSealOptions, sealFileResolved } from '../../src/seal/seal-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { MemorySource } from '../../src/reader/source.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { fixedRandom } from '../helpers/sealed.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const compared = vi.hoisted((): number[] => []);
vi.mock('../../src/bytes.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../../src/bytes.js')>();
  return {
    ...actual,
    constantTimeEqual: (a: Uint8Array, b: Uint8Array) => {
      compared.push(a.length);
      return actual.constantTimeEqual(a, b);
    },
  };
});

describe('reference reader digest checks', () => {
  it('verify() compares every tensor digest through constantTimeEqual', async () => {
    const dir = tempDir('st-review-ct-');
    const input = join(dir, 'm.safetensors');
    writeSafetensors(input, [
      { name: 'a', dtype: 'U8', shape: [5000] },
      { name: 'b', dtype: 'F32', shape: [3] },
      { name: 'c', dtype: 'U8', shape: [9000] },
    ]);
    const out = join(dir, 'm.sealed');
    await sealFileResolved(input, out, resolveSealOptions({ dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096 }, fixedRandom(77), 'typescript'));
    const r = await SealedFileReader.open(new MemorySource(new Uint8Array(readFileSync(out))), TEST_KEY);
    try {
      compared.length = 0;
      expect((await r.verify()).map((c) => c.name)).toEqual(['a', 'b', 'c']);
      expect(compared.filter((n) => n === 32).length).toBe(3);
    } finally {
      await r.close();
    }
  });
});
