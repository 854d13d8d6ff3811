import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sealFile } from '../../src/seal/seal-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { NativeSealedFileReader } from '../../src/reader/native-file.js';
import { importKey } from '../../src/native/key.js';
import { Suite } from '../../src/format/constants.js';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { TEST_KEY, OTHER_KEY, tempDir } from '../helpers/tmp.js';
import { canLock } from './helpers.js';

const dir = tempDir('st-native-');
const CS = 4096;

function key(bytes = TEST_KEY) {
  return importKey(new Uint8Array(bytes)); // import wipes its argument: pass a copy
}

async function seal(tensors: TensorSpec[], opts: { suite?: 1 | 2; chunkSize?: number } = {}) {
  const id = Math.random().toString(36).slice(2);
  const input = join(dir, `${id}.safetensors`);
  const output = join(dir, `${id}.sealed`);
  const data = writeSafetensors(input, tensors, { format: 'pt' });
  await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'test-key', suite: opts.suite ?? Suite.AES_256_GCM, chunkSize: opts.chunkSize ?? CS });
  return { path: output, data };
}

/** The cross-check: the native reader gives exactly what the TypeScript reference reader gives. */
async function crossCheck(path: string, data: Map<string, Uint8Array>, threads: number) {
  const ref = await SealedFileReader.open(path, TEST_KEY);
  const k = key();
  const nat = await NativeSealedFileReader.open(path, k, { threads, subBlock: 8192 });
  try {
    expect(nat.tensors()).toEqual(ref.tensors());
    expect(nat.metadata).toEqual(ref.metadata);
    expect(nat.header).toEqual(ref.header);
    expect(nat.headerDigest).toEqual(ref.headerDigest);
    for (const t of ref.tensors()) {
      const want = await ref.readTensor(t.name);
      expect(want).toEqual(data.get(t.name));
      const got = await nat.readTensor(t.name);
      expect(Buffer.from(got.bytes).equals(Buffer.from(want)), t.name).toBe(true);
      got.release();
      expect(() => got.bytes).toThrow(/released/);
    }
    const all = await nat.loadAll();
    for (const t of ref.tensors()) expect(Buffer.from(all.tensors.get(t.name)!.bytes).equals(Buffer.from(data.get(t.name)!))).toBe(true);
    all.release();
    const refChecks = await ref.verify();
    expect(await nat.verifyOrThrow({ plainSha256: true })).toEqual(refChecks);
    const checks = await nat.verify({ plainSha256: true });
    expect(checks.map(({ ok, ...c }) => (expect(ok).toBe(true), c))).toEqual(refChecks);
  } finally {
    nat.close();
    k.release();
    await ref.close();
  }
}

describe('native reader = reference reader', () => {
  const sizes = [0, 1, CS - 1, CS, CS + 1, 2 * CS + 500, 5 * CS];
  for (const suite of [Suite.AES_256_GCM, Suite.CHACHA20_POLY1305] as const) {
    for (const n of sizes) {
      it(`suite ${suite}, one U8 tensor of ${n} bytes, 1 and 3 threads`, async () => {
        const { path, data } = await seal([{ name: 'w', dtype: 'U8', shape: [n] }], { suite });
        await crossCheck(path, data, 1);
        await crossCheck(path, data, 3);
      });
    }
  }
  it('many tensors of mixed sizes, empty ones at chunk boundaries, 2 threads', async () => {
    const tensors: TensorSpec[] = [
      { name: 'empty.first', dtype: 'F32', shape: [0] },
      { name: 'a', dtype: 'F32', shape: [1024] }, // exactly one chunk
      { name: 'empty.at.boundary', dtype: 'U8', shape: [0, 7] },
      { name: 'b', dtype: 'BF16', shape: [3, 1000] },
      { name: 'scalar', dtype: 'F64', shape: [] },
      ...Array.from({ length: 40 }, (_, i) => ({ name: `small.${i}`, dtype: 'U8' as const, shape: [i * 37] })),
      { name: 'big', dtype: 'F32', shape: [5000] },
      { name: 'empty.last', dtype: 'I64', shape: [0] },
    ];
    const { path, data } = await seal(tensors);
    await crossCheck(path, data, 2);
  });
});

describe('secure destinations', () => {
  it.skipIf(!canLock(6 << 20))('loadAll locks exactly the payload\'s pages (filled chunk by chunk by the workers) until release (needs 6 MiB lockable)', async () => {
    const { vmLckBytes } = await import('./helpers.js');
    const { path, data } = await seal([{ name: 'x', dtype: 'U8', shape: [5 * 1024 * 1024 + 5] }], { chunkSize: 1 << 20 });
    const k = key();
    const r = await NativeSealedFileReader.open(path, k, { threads: 2 });
    const before = vmLckBytes();
    const all = await r.loadAll();
    expect(vmLckBytes() - before).toBe(5 * 1024 * 1024 + 4096);
    expect(Buffer.from(all.tensors.get('x')!.bytes).equals(Buffer.from(data.get('x')!))).toBe(true);
    all.release();
    expect(vmLckBytes()).toBe(before);
    r.close();
    k.release();
  });

  it('loadAll into a reused secure buffer: same bytes, wiped when the file fails', async () => {
    const { SecureBuffer } = await import('../../src/native/secure-buffer.js');
    const { path, data } = await seal([{ name: 'a', dtype: 'U8', shape: [2 * CS + 3] }, { name: 'b', dtype: 'F32', shape: [700] }]);
    const k = key();
    const into = SecureBuffer.allocate(4 * CS);
    const r = await NativeSealedFileReader.open(path, k, { threads: 2 });
    const all = await r.loadAll({ into });
    for (const [name, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(name)!))).toBe(true);
    await expect(r.loadAll({ into: SecureBuffer.allocate(10) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    // A plain array is not a place for plaintext: a typed refusal, not a TypeError from inside.
    await expect(r.loadAll({ into: new Uint8Array(4 * CS) as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    r.close();
    const bad = readFileSync(path);
    bad[bad.length - 40]! ^= 1; // last chunk: tensor b
    writeFileSync(path + '.bad', bad);
    const rb = await NativeSealedFileReader.open(path + '.bad', k, { threads: 1 });
    await expect(rb.loadAll({ into })).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    expect(into.bytes.every((x) => x === 0)).toBe(true);
    rb.close();
    into.release();
    k.release();
  });

  it('decrypts into a caller\'s secure buffer, which the job takes (detached, so not released under it) and hands back', async () => {
    const { loadAddon } = await import('../../src/native/addon.js');
    const { readPublicHeader } = await import('../../src/reader/sealed-file.js');
    const { FileSource } = await import('../../src/reader/source.js');
    const { path, data } = await seal([{ name: 'a', dtype: 'U8', shape: [3 * CS + 7] }, { name: 'b', dtype: 'U8', shape: [100] }]);
    const src = await FileSource.open(path);
    const { headerBytes } = await readPublicHeader(src);
    await src.close();
    const addon = loadAddon();
    const k = key();
    const { file } = await addon.sealedOpen(path, k, headerBytes);
    const dest = addon.secureAlloc(200);
    // Only tensor b, placed at offset 50 of the caller's buffer.
    const job = file.run({ ranges: Float64Array.of(3 * CS + 7, 3 * CS + 107), dest, destOffsets: Float64Array.of(50), allChunks: false, stopOnFailure: true, threads: 2 });
    expect(dest.byteLength).toBe(0);
    expect(addon.secureRelease(dest)).toBe(false);
    const result = await job;
    expect(result.failedChunks).toEqual([]);
    const back = result.dest!;
    expect(Buffer.from(new Uint8Array(back, 50, 100)).equals(Buffer.from(data.get('b')!))).toBe(true);
    expect(() => file.run({ ranges: Float64Array.of(0, 1), dest: new ArrayBuffer(8), destOffsets: Float64Array.of(0), allChunks: false, stopOnFailure: true, threads: 1 })).toThrow(/secure buffer/);
    expect(addon.secureRelease(back)).toBe(true);
    file.close();
    await expect(Promise.resolve().then(() => file.run({ ranges: new Float64Array(0), allChunks: true, stopOnFailure: false, threads: 1 }))).rejects.toMatchObject({ code: 'ERR_RELEASED' });
    k.release();
  });
});

describe('a load that fails', () => {
  it.skipIf(!canLock(7 << 20))('wipes what it wrote, and does not fault in the rest of the buffer to wipe it (needs 7 MiB lockable)', async () => {
    const { runChild } = await import('./helpers.js');
    // Six 1 MiB chunks (three 2 MiB huge pages where THP backs the buffer): the failed first chunk
    // touches at most one of them.
    const size = 6 << 20;
    const { path } = await seal([{ name: 'w', dtype: 'U8', shape: [size] }], { chunkSize: 1 << 20 });
    const bad = readFileSync(path);
    const { parseHeader } = await import('../../src/format/header.js');
    const { header, length } = parseHeader(bad);
    bad[length + header.tableLength + 100]! ^= 1; // chunk 0
    writeFileSync(path + '.bad', bad);
    const r = runChild(`
      const fs = require('fs');
      const bytes = fs.readFileSync(${JSON.stringify(path + '.bad')});
      const header = bytes.subarray(0, 120 + bytes[13]);
      const key = addon.keyImport(new Uint8Array(${JSON.stringify([...TEST_KEY])}));
      addon._testing.setReleaseProbe(true);
      (async () => {
        const { file } = await addon.sealedOpen(${JSON.stringify(path + '.bad')}, key, header);
        let code;
        const res = await file.run({ ranges: Float64Array.of(0, ${size}), destSize: ${size}, destOffsets: Float64Array.of(0), allChunks: true, stopOnFailure: true, threads: 1 });
        if (res.failedChunks.length > 0 && res.dest === undefined) code = 'ERR_INTEGRITY';
        const p = addon._testing.releaseProbe();
        console.log(JSON.stringify({ code, resident: p.residentBytes, nonzero: p.nonzeroBytes, scanned: p.bytesScanned }));
      })();`);
    expect(r.stderr).toBe('');
    const out = r.json as { code?: string; resident: number; nonzero: number; scanned: number };
    expect(out.code).toBe('ERR_INTEGRITY');
    expect(out.nonzero).toBe(0); // the failed buffer (and the scratch) read back zero
    expect(out.scanned).toBeGreaterThanOrEqual(size);
    // Only the chunk it decrypted came into memory, never the whole buffer: counted with mincore before
    // the wipe, so neither the probe's own pass nor the process's other memory (VmHWM) blurs it.
    expect(out.resident).toBeGreaterThan(0);
    expect(out.resident).toBeLessThan(size / 2);
  });
});

describe('an empty payload', () => {
  it('still has its one chunk authenticated: a flipped tag fails verify and load, as in the reference reader', async () => {
    const { path } = await seal([{ name: 'nothing', dtype: 'F32', shape: [0, 3] }]);
    const bad = readFileSync(path);
    bad[bad.length - 1]! ^= 0x80;
    writeFileSync(path + '.bad', bad);
    const k = key();
    const r = await NativeSealedFileReader.open(path + '.bad', k, { threads: 2 });
    await expect(r.verify()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    await expect(r.verifyOrThrow()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    await expect(r.loadAll()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    r.close();
    const ref = await SealedFileReader.open(path + '.bad', TEST_KEY);
    await expect(ref.verify()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    await ref.close();
    k.release();
  });
});
