import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sealFile } from '../../src/seal/seal-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { NativeSealedFileReader } from '../../src/reader/native-file.js';
import { importKey } from '../../src/native/key.js';
import { loadAddon } from '../../src/native/addon.js';
import { readPublicHeader } from '../../src/reader/sealed-file.js';
import { FileSource } from '../../src/reader/source.js';
import { buildSafetensors, patternBytes } from '../helpers/safetensors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir('st-native-prop-');
let n = 0;

describe('native reader properties', () => {
  it('random models, chunk sizes, suites, thread counts and sub-blocks: native = reference', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 20_000 }), { minLength: 0, maxLength: 8 }),
        fc.constantFrom(4096, 8192, 12288),
        fc.constantFrom(1, 2) as fc.Arbitrary<1 | 2>,
        fc.integer({ min: 1, max: 5 }),
        fc.constantFrom(4096, 8192, 65536),
        async (lengths, chunkSize, suite, threads, subBlock) => {
          const id = n++;
          const tensors = lengths.map((len, i) => ({ name: `t${i}`, dtype: 'U8' as const, shape: [len], data: patternBytes(len, id * 31 + i) }));
          const input = join(dir, `${id}.safetensors`);
          const output = join(dir, `${id}.sealed`);
          writeFileSync(input, buildSafetensors(tensors).bytes);
          await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'prop', suite, chunkSize });
          const ref = await SealedFileReader.open(output, TEST_KEY);
          const key = importKey(new Uint8Array(TEST_KEY));
          const nat = await NativeSealedFileReader.open(output, key, { threads, subBlock });
          try {
            expect(await nat.verifyOrThrow({ plainSha256: true })).toEqual(await ref.verify());
            const all = await nat.loadAll();
            for (const t of tensors) expect(Buffer.from(all.tensors.get(t.name)!.bytes).equals(Buffer.from(t.data))).toBe(true);
            all.release();
            if (tensors.length > 0) {
              const pick = tensors[id % tensors.length]!;
              const one = await nat.readTensor(pick.name);
              expect(Buffer.from(one.bytes).equals(Buffer.from(pick.data))).toBe(true);
              one.release();
            }
          } finally {
            nat.close();
            key.release();
            await ref.close();
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it('keeps the JS thread free while a job runs', async () => {
    const len = 24 << 20;
    const input = join(dir, 'big.safetensors');
    const output = join(dir, 'big.sealed');
    writeFileSync(input, buildSafetensors([{ name: 'w', dtype: 'U8', shape: [len], data: patternBytes(len, 5) }]).bytes);
    await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'prop', chunkSize: 1 << 20 });
    const key = importKey(new Uint8Array(TEST_KEY));
    const r = await NativeSealedFileReader.open(output, key, { threads: 1 });
    let turns = 0;
    let done = false;
    const spin = (): void => {
      if (done) return;
      turns++;
      setImmediate(spin);
    };
    spin();
    const checks = await r.verify();
    done = true;
    expect(checks[0]!.ok).toBe(true);
    // 24 MiB of decrypt + hash takes many event-loop turns unless the job blocked the loop.
    expect(turns).toBeGreaterThan(3);
    r.close();
    key.release();
  });

  it('runs jobs on one file concurrently, and close() waits for none of them', async () => {
    const len = 3 << 20;
    const input = join(dir, 'conc.safetensors');
    const output = join(dir, 'conc.sealed');
    const data = patternBytes(len, 9);
    writeFileSync(input, buildSafetensors([{ name: 'w', dtype: 'U8', shape: [len], data }]).bytes);
    await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'prop', chunkSize: 1 << 16 });
    const key = importKey(new Uint8Array(TEST_KEY));
    const r = await NativeSealedFileReader.open(output, key, { threads: 2 });
    const jobs = [r.verify(), r.loadAll(), r.readTensor('w'), r.verify()] as const;
    r.close(); // the running jobs keep the descriptor and key until they finish
    const [v1, all, one, v2] = await Promise.all(jobs);
    expect(v1[0]!.ok && v2[0]!.ok).toBe(true);
    expect(Buffer.from(all.tensors.get('w')!.bytes).equals(Buffer.from(data))).toBe(true);
    expect(Buffer.from(one.bytes).equals(Buffer.from(data))).toBe(true);
    all.release();
    one.release();
    await expect(r.verify()).rejects.toMatchObject({ code: 'ERR_RELEASED' });
    key.release();
  });

  it('refuses released and foreign key handles', async () => {
    const addon = loadAddon();
    const input = join(dir, 'k.safetensors');
    const output = join(dir, 'k.sealed');
    writeFileSync(input, buildSafetensors([{ name: 'w', dtype: 'U8', shape: [10] }]).bytes);
    await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'prop' });
    const src = await FileSource.open(output);
    const { headerBytes } = await readPublicHeader(src);
    await src.close();
    const key = importKey(new Uint8Array(TEST_KEY));
    key.release();
    expect(() => addon.sealedOpen(output, key, headerBytes)).toThrow(expect.objectContaining({ code: 'ERR_RELEASED' }));
    expect(() => addon.sealedOpen(output, {} as never, headerBytes)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
    // A key handle can only come from keyImport.
    expect(() => new (addon as unknown as { NativeKeyHandle: new () => unknown }).NativeKeyHandle()).toThrow(/keyImport/);
  });
});
