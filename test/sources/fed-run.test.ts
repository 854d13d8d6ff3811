// The addon's fed runs (sealedOpenFed, file.begin, run.feed/finish/abort) used directly: the same
// results as a file job, and every misuse refused with the run's secure memory let go.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAddon, type NativeOpenResult, type NativeRunOptions } from '../../src/native/addon.js';
import { importKey, type NativeKeyHandle } from '../../src/native/key.js';
import { MemorySource } from '../../src/reader/source.js';
import { readPublicHeader } from '../../src/reader/sealed-file.js';
import { chunkFileOffset, chunkPlainLength, type Layout } from '../../src/format/layout.js';
import { TAG_LENGTH } from '../../src/format/constants.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';
import { vmLckBytes } from '../native/helpers.js';
import { sealFixtures } from './models.js';

const addon = loadAddon();
const dir = tempDir('st-fed-');
let path: string;
let bytes: Uint8Array;
let headerBytes: Uint8Array;
let layout: Layout;
let key: NativeKeyHandle;

beforeAll(async () => {
  const { www } = await sealFixtures(dir);
  path = join(www, 'model.sealed');
  bytes = new Uint8Array(readFileSync(path));
  ({ headerBytes, layout } = await readPublicHeader(new MemorySource(bytes)));
  key = importKey(new Uint8Array(TEST_KEY));
});
afterAll(() => key?.release());

const prefixLength = (): number => layout.headerLength + layout.tableLength;
const openFed = (b = bytes, size = b.length, prefix = b.subarray(0, prefixLength())): Promise<NativeOpenResult> =>
  addon.sealedOpenFed('fed test file', key, headerBytes, prefix, size);
const chunkBytes = (b: Uint8Array, c: number): Uint8Array => b.subarray(chunkFileOffset(layout, c), chunkFileOffset(layout, c) + chunkPlainLength(layout, c) + TAG_LENGTH);
const code = (fn: () => unknown): string => {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
};
const payload = (): number => layout.payloadLength;
const wholeRun = (): NativeRunOptions => ({
  ranges: Float64Array.of(0, payload()),
  destSize: payload(),
  destOffsets: Float64Array.of(0),
  allChunks: true,
  stopOnFailure: true,
  threads: 2,
});

describe('fed runs', () => {
  it('feeding every chunk, in windows of any whole-chunk size, gives what the file job gives', async () => {
    const fromFile = await addon.sealedOpen(path, key, headerBytes);
    const expected = await fromFile.file.run(wholeRun());
    const fed = await openFed();
    expect(Buffer.from(fed.table).equals(Buffer.from(fromFile.table))).toBe(true);
    for (const per of [1, 3, 1000]) {
      const run = fed.file.begin(wholeRun());
      const chunks = [...run.chunks];
      expect(chunks).toEqual([...Array(chunks.length).keys()]);
      for (let i = 0; i < chunks.length; i += per) {
        const group = chunks.slice(i, i + per);
        // Pieces split anywhere: the addon concatenates them.
        const whole = bytes.subarray(chunkFileOffset(layout, group[0]!), chunkFileOffset(layout, group.at(-1)!) + chunkBytes(bytes, group.at(-1)!).length);
        const cut = Math.floor(whole.length / 3);
        expect(await run.feed(chunkFileOffset(layout, group[0]!), [whole.subarray(0, cut), whole.subarray(cut)])).toBe(i + per < chunks.length);
      }
      const result = run.finish();
      expect(Buffer.from(result.digests).equals(Buffer.from(expected.digests))).toBe(true);
      expect(Buffer.from(new Uint8Array(result.dest!)).equals(Buffer.from(new Uint8Array(expected.dest!)))).toBe(true);
      addon.secureRelease(result.dest!);
    }
    addon.secureRelease(expected.dest!);
    fed.file.close();
    fromFile.file.close();
  });

  it('open refuses a prefix that is not header and table, a size the header disagrees with, another key', async () => {
    const codeOf = (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: { code?: string }) => e.code ?? String(e));
    expect(await codeOf(openFed(bytes, bytes.length, bytes.subarray(0, prefixLength() - 1)))).toBe('ERR_INVALID_ARGUMENT');
    expect(await codeOf(openFed(bytes, bytes.length, bytes.subarray(0, prefixLength() + 1)))).toBe('ERR_INVALID_ARGUMENT');
    expect(await codeOf(openFed(bytes, bytes.length - 1))).toBe('ERR_TRUNCATED');
    expect(await codeOf(openFed(bytes, bytes.length + 1))).toBe('ERR_FORMAT');
    const flipped = new Uint8Array(bytes);
    flipped[layout.headerLength + 10]! ^= 1; // the sealed table
    expect(await codeOf(openFed(flipped))).toBe('ERR_INTEGRITY');
    const other = importKey(new Uint8Array(OTHER_KEY));
    expect(await codeOf(addon.sealedOpenFed('x', other, headerBytes, bytes.subarray(0, prefixLength()), bytes.length))).toBe('ERR_KEY_MISMATCH');
    other.release();
    expect(code(() => addon.sealedOpenFed('x', key, headerBytes, new Float64Array(2) as unknown as Uint8Array, 1))).toBe('ERR_INVALID_ARGUMENT');
    expect(code(() => addon.sealedOpenFed('x', key, headerBytes, bytes, -1))).toBe('ERR_INVALID_ARGUMENT');
  });

  it('refuses feeds that are not the next whole chunks, a second feed in flight, run() on a fed file', async () => {
    const fed = await openFed();
    expect(code(() => fed.file.run(wholeRun()))).toBe('ERR_INVALID_ARGUMENT');
    const run = fed.file.begin(wholeRun());
    const c0 = chunkBytes(bytes, 0);
    expect(code(() => run.feed(chunkFileOffset(layout, 1), [chunkBytes(bytes, 1)]))).toBe('ERR_INVALID_ARGUMENT'); // not the next
    expect(code(() => run.feed(chunkFileOffset(layout, 0), [c0.subarray(1)]))).toBe('ERR_INVALID_ARGUMENT'); // not whole
    expect(code(() => run.feed(chunkFileOffset(layout, 0), [c0, new Uint8Array(1)]))).toBe('ERR_INVALID_ARGUMENT'); // trailing bytes
    expect(code(() => run.feed(chunkFileOffset(layout, 0), c0 as unknown as Uint8Array[]))).toBe('ERR_INVALID_ARGUMENT');
    expect(code(() => run.feed(chunkFileOffset(layout, 0), [new Float64Array(1) as unknown as Uint8Array]))).toBe('ERR_INVALID_ARGUMENT');
    expect(code(() => run.feed(0.5, [c0]))).toBe('ERR_INVALID_ARGUMENT');
    const first = run.feed(chunkFileOffset(layout, 0), [c0]);
    expect(code(() => run.feed(chunkFileOffset(layout, 1), [chunkBytes(bytes, 1)]))).toBe('ERR_INVALID_ARGUMENT'); // one at a time
    expect(code(() => run.finish())).toBe('ERR_INVALID_ARGUMENT');
    expect(await first).toBe(true);
    run.abort();
    expect(code(() => run.finish())).toBe('ERR_RELEASED');
    expect(code(() => run.feed(chunkFileOffset(layout, 1), [chunkBytes(bytes, 1)]))).toBe('ERR_RELEASED');
    fed.file.close();
  });

  it('finish() before the last chunk, abort() while a window is decrypted: nothing handed out, memory let go', async () => {
    const fed = await openFed();
    const locked = vmLckBytes();
    const run = fed.file.begin(wholeRun());
    expect(await run.feed(chunkFileOffset(layout, 0), [chunkBytes(bytes, 0), chunkBytes(bytes, 1)])).toBe(true);
    expect(vmLckBytes()).toBeGreaterThan(locked);
    expect(code(() => run.finish())).toBe('ERR_TRUNCATED');
    expect(vmLckBytes()).toBe(locked);

    const n = fed.file.chunkCount;
    const all = bytes.subarray(chunkFileOffset(layout, 0), bytes.length);
    const run2 = fed.file.begin(wholeRun());
    const busy = run2.feed(chunkFileOffset(layout, 0), [all]);
    run2.abort(); // during the job: it stops, and the job discards the run as it ends
    expect(await busy).toBe(false);
    expect(code(() => run2.finish())).toBe('ERR_RELEASED');
    expect(vmLckBytes()).toBe(locked);
    expect(n).toBeGreaterThan(2);
    fed.file.close();
  });

  it('a finished run lets go of the file: closing it frees its payload key while the run object lives on', async () => {
    const before = vmLckBytes();
    const fed = await openFed();
    const run = fed.file.begin(wholeRun());
    expect(await run.feed(chunkFileOffset(layout, 0), [bytes.subarray(chunkFileOffset(layout, 0))])).toBe(false);
    const result = run.finish();
    addon.secureRelease(result.dest!);
    expect(vmLckBytes()).toBeGreaterThan(before); // the payload key, until the file is closed
    fed.file.close();
    expect(vmLckBytes()).toBe(before);
    expect(code(() => run.finish())).toBe('ERR_RELEASED'); // `run` is still referenced here
  });

  it('a tampered chunk with stopOnFailure: the feed says stop, finish() reports it and hands out no buffer', async () => {
    const fed = await openFed();
    const bad = new Uint8Array(bytes);
    bad[chunkFileOffset(layout, 1) + 5]! ^= 1;
    const run = fed.file.begin(wholeRun());
    expect(await run.feed(chunkFileOffset(layout, 0), [bad.subarray(chunkFileOffset(layout, 0), chunkFileOffset(layout, 3))])).toBe(false);
    expect(await run.feed(chunkFileOffset(layout, 3), [chunkBytes(bytes, 3)])).toBe(false); // stopped: nothing processed
    const result = run.finish();
    expect(result.failedChunks).toEqual([1]);
    expect(result.dest).toBeUndefined();
    fed.file.close();
  });
});
