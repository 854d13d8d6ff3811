/**
 * Arguments of the raw addon that could make it touch other memory or another file than the one
 * named. run() reads its options object, whose getters are caller code: none of them may free or
 * swap the destination between the addon's check of it and the job taking it. In a child, so a
 * write into freed memory fails the test instead of killing the runner.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { loadAddon } from '../../src/native/addon.js';
import { toHex } from '../../src/bytes.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { sealUnaligned, spawnNode } from './child.js';

const dir = tempDir('st-addon-args-');

const CHILD = `
const a = JSON.parse(process.env.ST_ARGS);
(async () => {
  const key = addon.keyImport(Uint8Array.from(Buffer.from(a.key, 'hex')));
  const { file } = await addon.sealedOpen(a.path, key, Uint8Array.from(Buffer.from(a.header, 'hex')));
  const total = a.tensors[a.tensors.length - 1].end;
  const dest = addon.secureAlloc(total);
  const opts = { ranges: Float64Array.from(a.tensors.flatMap((t) => [t.begin, t.end])), allChunks: true, stopOnFailure: true, threads: 1, dest };
  let other;
  // Frees dest while run() reads its options, then maps a new secure buffer (the kernel tends to
  // hand back the same addresses): a job that kept dest's old pointer would decrypt into it.
  Object.defineProperty(opts, 'destOffsets', { enumerable: true, get() {
    addon.secureRelease(dest);
    other = new Uint8Array(addon.secureAlloc(total));
    return Float64Array.from(a.tensors, (t) => t.begin);
  } });
  let outcome;
  try {
    await file.run(opts);
    outcome = 'resolved';
  } catch (e) {
    outcome = e.code;
  }
  console.log(JSON.stringify({ outcome, otherNonzero: other.some((b) => b !== 0) }));
})();
`;

describe('run() options with getters', () => {
  it('a destOffsets getter that releases dest gets a typed refusal, and nothing is written anywhere', async () => {
    const s = await sealUnaligned(dir);
    const r = spawnNode(CHILD, { ST_ARGS: JSON.stringify({ ...s, key: toHex(TEST_KEY) }) });
    expect(r.signal, r.stderr).toBeNull();
    expect(r.json, r.stderr).toEqual({ outcome: 'ERR_INVALID_ARGUMENT', otherNonzero: false });
  });
});

describe('sealedOpen paths', () => {
  it('a path with a NUL is refused, not cut short to another file', async () => {
    const s = await sealUnaligned(dir);
    const addon = loadAddon();
    const key = addon.keyImport(new Uint8Array(TEST_KEY));
    const header = new Uint8Array(readFileSync(s.path).subarray(0, s.header.length / 2));
    const open = (path: string) => Promise.resolve().then(() => addon.sealedOpen(path, key, header)); // a throw or a rejection
    try {
      // The part before the NUL is a valid sealed file with this header: opening it would succeed.
      await expect(open(`${s.path}\0.not-this`)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
      await expect(open('')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
      const opened = await addon.sealedOpen(s.path, key, header);
      opened.file.close();
    } finally {
      key.release();
    }
  });
});

// The native path's header digests and digest compares (instead of node:crypto, see native-file.ts).
describe('sha256 and timingSafeEqual', () => {
  it('hash the parts as one message, and compare like node:crypto', async () => {
    const addon = loadAddon();
    const { createHash, timingSafeEqual } = await import('node:crypto');
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    expect(toHex(addon.sha256([enc('abc')]))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'); // FIPS 180-2 B.1
    expect(toHex(addon.sha256([]))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    const big = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 31) & 0xff);
    const parts = [big.subarray(0, 1), big.subarray(1, 4096), new Uint8Array(0), big.subarray(4096)];
    expect(toHex(addon.sha256(parts))).toBe(createHash('sha256').update(big).digest('hex'));
    const a = addon.sha256([enc('x')]);
    for (const b of [a.slice(), addon.sha256([enc('y')]), a.subarray(0, 31), new Uint8Array(0)]) {
      expect(addon.timingSafeEqual(a, b)).toBe(a.length === b.length && timingSafeEqual(a, b));
    }
    expect(addon.timingSafeEqual(new Uint8Array(0), new Uint8Array(0))).toBe(true);
  });

  it('refuse what is not bytes with a typed error', () => {
    const addon = loadAddon();
    for (const bad of [undefined, 'abc', [new Uint16Array(2)], [Buffer.from('a').buffer]]) {
      expect(() => addon.sha256(bad as unknown as Uint8Array[]), String(bad)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
    }
    expect(() => addon.timingSafeEqual(new Uint8Array(1), 'a' as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
  });
});
