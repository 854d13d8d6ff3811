import { describe, expect, it } from 'vitest';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { MemorySource, type ByteSource } from '../../src/reader/source.js';
import { parseHeader } from '../../src/format/header.js';
import { chunkCount, chunkFileOffset, type Layout } from '../../src/format/layout.js';
import { TAG_LENGTH } from '../../src/format/constants.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';
import { bitsToFlip, openOutcome, sealSmall, tablePaddingRange } from '../helpers/sealed.js';

const dir = tempDir();
const REJECTIONS = new Set(['ERR_INTEGRITY', 'ERR_KEY_MISMATCH', 'ERR_TRUNCATED', 'ERR_FORMAT', 'ERR_UNSUPPORTED_VERSION']);

function layoutOf(bytes: Uint8Array): Layout {
  const { header, length } = parseHeader(bytes);
  return { headerLength: length, tableLength: header.tableLength, chunkSize: header.chunkSize, payloadLength: header.payloadLength };
}

function chunksOf(bytes: Uint8Array): { start: Uint8Array; chunks: Uint8Array[] } {
  const l = layoutOf(bytes);
  const n = chunkCount(l.payloadLength, l.chunkSize);
  const chunks = [];
  for (let i = 0; i < n; i++) {
    const a = chunkFileOffset(l, i);
    chunks.push(bytes.subarray(a, Math.min(a + l.chunkSize + TAG_LENGTH, bytes.length)));
  }
  return { start: bytes.subarray(0, chunkFileOffset(l, 0)), chunks };
}

function join(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

describe('tampering is rejected', async () => {
  const a = await sealSmall(dir, 'a', TEST_KEY);
  const b = await sealSmall(dir, 'b', TEST_KEY);

  it('opens the untouched file', async () => {
    expect(await openOutcome(a.sealed, TEST_KEY, a.data)).toBe('ok');
  });

  it('rejects every single-bit flip at every byte position (node backend, all bits; one bit per byte of table padding)', async () => {
    const seen = new Map<string, number>();
    const copy = new Uint8Array(a.sealed);
    const padding = tablePaddingRange(a.sealed, TEST_KEY);
    let cases = 0;
    for (let pos = 0; pos < copy.length; pos++) {
      for (const bit of bitsToFlip(pos, padding)) {
        cases++;
        copy[pos]! ^= 1 << bit;
        const outcome = await openOutcome(copy, TEST_KEY, a.data);
        copy[pos]! ^= 1 << bit;
        if (!REJECTIONS.has(outcome)) expect.fail(`flip of bit ${bit} at byte ${pos} gave ${outcome}`);
        seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
      }
    }
    expect([...seen.values()].reduce((x, y) => x + y)).toBe(cases);
    console.log(`bit flips: ${cases} cases over ${a.sealed.length} bytes ->`, Object.fromEntries(seen));
  }, 300_000);

  it('rejects a flip of one bit at every byte position under the noble backend too', async () => {
    const copy = new Uint8Array(a.sealed);
    for (let pos = 0; pos < copy.length; pos++) {
      const bit = pos % 8;
      copy[pos]! ^= 1 << bit;
      const outcome = await openOutcome(copy, TEST_KEY, a.data, { backend: 'noble' });
      copy[pos]! ^= 1 << bit;
      if (!REJECTIONS.has(outcome)) expect.fail(`flip of bit ${bit} at byte ${pos} gave ${outcome}`);
    }
  }, 300_000);

  it('rejects truncation at every chunk boundary and inside every chunk', async () => {
    const l = layoutOf(a.sealed);
    const n = chunkCount(l.payloadLength, l.chunkSize);
    const cuts = new Set<number>([0, 1, 8, l.headerLength - 1, l.headerLength, l.headerLength + l.tableLength - 1]);
    for (let i = 0; i < n; i++) {
      const start = chunkFileOffset(l, i);
      for (const d of [0, 1, 15, 16, 17, 100, l.chunkSize, l.chunkSize + 15]) if (start + d < a.sealed.length) cuts.add(start + d);
    }
    cuts.add(a.sealed.length - 1);
    for (const cut of cuts) {
      const outcome = await openOutcome(a.sealed.subarray(0, cut), TEST_KEY, a.data);
      expect(['ERR_TRUNCATED', 'ERR_FORMAT'], `cut at ${cut}`).toContain(outcome);
    }
  });

  it('rejects appended bytes', async () => {
    expect(await openOutcome(join(a.sealed, new Uint8Array(1)), TEST_KEY, a.data)).toBe('ERR_FORMAT');
    const { start, chunks } = chunksOf(a.sealed);
    // An extra copy of the last chunk, with the header's payload length left alone.
    expect(await openOutcome(join(start, ...chunks, chunks.at(-1)!), TEST_KEY, a.data)).toBe('ERR_FORMAT');
  });

  it('rejects reordered, duplicated and dropped chunks', async () => {
    const big = await sealSmall(dir, 'four-chunks', TEST_KEY, [{ name: 'w', dtype: 'F32', shape: [3500] }]);
    const { start, chunks } = chunksOf(big.sealed);
    expect(chunks.length).toBe(4);
    const [c0, c1, c2, c3] = chunks as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
    const cases: [string, Uint8Array[]][] = [
      ['swap 0 and 1', [c1, c0, c2, c3]],
      ['rotate the full chunks', [c1, c2, c0, c3]],
      ['duplicate chunk 0 over chunk 1', [c0, c0, c2, c3]],
      ['duplicate chunk 2 over chunk 0', [c2, c1, c2, c3]],
      ['last chunk first', [c3, c0, c1, c2]],
    ];
    for (const [what, order] of cases) {
      expect(await openOutcome(join(start, ...order), TEST_KEY, big.data), what).toMatch(/ERR_INTEGRITY|ERR_FORMAT|ERR_TRUNCATED/);
    }
    // Drop the flagged last chunk: the file length no longer matches the header.
    expect(await openOutcome(join(start, c0, c1, c2), TEST_KEY, big.data)).toMatch(/ERR_TRUNCATED/);
    // Reading one tensor range that avoids the swapped chunks still only yields authentic bytes.
    const r = await SealedFileReader.open(new MemorySource(join(start, c1, c0, c2, c3)), TEST_KEY);
    await expect(r.readTensor('w')).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    await r.close();
  });

  it('rejects chunks, tables and headers swapped between two files sealed under the same key', async () => {
    const A = chunksOf(a.sealed);
    const B = chunksOf(b.sealed);
    for (let i = 0; i < A.chunks.length; i++) {
      const mixed = A.chunks.map((c, j) => (j === i ? B.chunks[j]! : c));
      expect(await openOutcome(join(A.start, ...mixed), TEST_KEY, a.data), `chunk ${i} from the other file`).toBe('ERR_INTEGRITY');
    }
    const la = layoutOf(a.sealed);
    const lb = layoutOf(b.sealed);
    // b's header and table in front of a's payload, and a's header with b's table.
    expect(await openOutcome(join(B.start, ...A.chunks), TEST_KEY, b.data)).toBe('ERR_INTEGRITY');
    const aHeader = a.sealed.subarray(0, la.headerLength);
    const bTable = b.sealed.subarray(lb.headerLength, lb.headerLength + lb.tableLength);
    expect(await openOutcome(join(aHeader, bTable, ...A.chunks), TEST_KEY, a.data)).toBe('ERR_INTEGRITY');
  });

  it('rejects a wrong key as ERR_KEY_MISMATCH before reading any table or payload byte', async () => {
    const reads: [number, number][] = [];
    const inner = new MemorySource(a.sealed);
    const spy: ByteSource = {
      size: inner.size,
      description: 'spy',
      read: (o, n) => {
        reads.push([o, n]);
        return inner.read(o, n);
      },
      close: () => inner.close(),
    };
    const err = await SealedFileReader.open(spy, OTHER_KEY).catch((e) => e);
    expect(err.code).toBe('ERR_KEY_MISMATCH');
    const headerEnd = layoutOf(a.sealed).headerLength;
    for (const [o, n] of reads) expect(o + n).toBeLessThanOrEqual(headerEnd);
  });
});
