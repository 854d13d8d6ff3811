// fast-check over what the range source parses from a server (Content-Range) and how the reader
// plans its requests (spans of adjacent chunks, windows of whole chunks).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseContentRange, rangeHeader, rangeMatches } from '../../src/sources/content-range.js';
import { planSpans } from '../../src/reader/native-feed.js';
import { TAG_LENGTH } from '../../src/format/constants.js';
import { chunkCount, chunkFileOffset, chunkPlainLength, type Layout } from '../../src/format/layout.js';
import { fuzzRuns } from '../helpers/fuzz.js';

const MAX = 999_999_999_999_999; // 15 digits: the parser's bound, below 2^53

describe('parseContentRange', () => {
  it('round-trips every consistent range, in any case of the unit', () => {
    const triple = fc
      .tuple(fc.nat({ max: MAX - 1 }), fc.nat({ max: MAX - 1 }), fc.nat({ max: MAX }))
      .map(([a, b, c]) => {
        const [first, last] = a <= b ? [a, b] : [b, a];
        return { first, last, complete: Math.max(c, last + 1) };
      })
      .filter((r) => r.complete <= MAX);
    fc.assert(
      fc.property(triple, fc.constantFrom('bytes', 'BYTES', 'Bytes'), (r, unit) => {
        expect(parseContentRange(`${unit} ${r.first}-${r.last}/${r.complete}`)).toEqual(r);
      }),
      { numRuns: fuzzRuns(500) },
    );
  });

  it('never throws, and anything it accepts is consistent and holds exactly the numbers it was given', () => {
    const near = fc.oneof(
      fc.string(),
      fc.stringMatching(/^bytes [0-9*]{0,17}-[0-9]{0,17}\/[0-9*]{0,17}$/),
      fc.tuple(fc.constantFrom('bytes ', 'bytes  ', ' bytes ', 'bytes=', 'items '), fc.nat(), fc.constantFrom('-', ' - ', '--'), fc.nat(), fc.constantFrom('/', ' /'), fc.oneof(fc.nat().map(String), fc.constant('*'), fc.constant(''))).map((p) => p.join('')),
    );
    fc.assert(
      fc.property(near, (value) => {
        const r = parseContentRange(value);
        if (r === null) return;
        expect(r.first).toBeLessThanOrEqual(r.last);
        expect(r.last).toBeLessThan(r.complete);
        expect(Number.isSafeInteger(r.complete)).toBe(true);
        const m = /^bytes ([0-9]+)-([0-9]+)\/([0-9]+)$/i.exec(value);
        expect(m, value).not.toBeNull();
        expect([Number(m![1]), Number(m![2]), Number(m![3])]).toEqual([r.first, r.last, r.complete]);
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });

  it('refuses the forms a 206 for one range must not have', () => {
    for (const bad of [
      undefined,
      '',
      'bytes */100', // unsatisfied-range: only in a 416
      'bytes 0-9/*', // unknown complete length
      'bytes 10-9/100', // first > last
      'bytes 0-100/100', // last past the end
      'bytes 0-9/100, bytes 20-29/100',
      'bytes=0-9/100',
      'bytes 0-9 /100',
      ' bytes 0-9/100',
      'bytes -9/100',
      'bytes 0x0-9/100',
      'bytes 1e3-2000/3000',
      'bytes 0-9/1000000000000000', // 16 digits
      'bits 0-9/100',
    ]) {
      expect(parseContentRange(bad), String(bad)).toBeNull();
    }
  });

  it('the Range header and its check agree', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 40 }), fc.integer({ min: 1, max: 2 ** 30 }), (offset, length) => {
        const [, a, b] = /^bytes=(\d+)-(\d+)$/.exec(rangeHeader(offset, length))!;
        const r = { first: Number(a), last: Number(b), complete: offset + length };
        expect(rangeMatches(r, offset, length)).toBe(true);
        expect(rangeMatches({ ...r, first: r.first + 1 }, offset, length)).toBe(false);
        expect(rangeMatches({ ...r, last: r.last - 1 }, offset, length)).toBe(false);
      }),
      { numRuns: fuzzRuns(300) },
    );
  });
});

describe('planSpans', () => {
  const layoutArb = fc.record({
    headerLength: fc.integer({ min: 121, max: 400 }),
    tableLength: fc.constantFrom(4112, 8208),
    chunkSize: fc.constantFrom(4096, 8192, 65536),
    payloadLength: fc.integer({ min: 0, max: 2_000_000 }),
  });

  it('spans cover exactly the chunks asked for, coalesced; windows end on chunk boundaries and stay within the window size', () => {
    fc.assert(
      fc.property(layoutArb, fc.integer({ min: 1, max: 300_000 }), fc.infiniteStream(fc.boolean()), (layout: Layout, windowBytes, picks) => {
        const n = chunkCount(layout.payloadLength, layout.chunkSize);
        const chunks: number[] = [];
        const it = picks[Symbol.iterator]();
        for (let c = 0; c < n; c++) if (it.next().value) chunks.push(c);
        const spans = planSpans(chunks, layout, windowBytes);
        const bytes = new Set<number>(); // chunk start offsets covered
        const starts = new Map(chunks.map((c) => [chunkFileOffset(layout, c), c]));
        const end = (c: number): number => chunkFileOffset(layout, c) + chunkPlainLength(layout, c) + TAG_LENGTH;
        let previousEnd = -1;
        for (const s of spans) {
          expect(s.offset).toBeGreaterThan(previousEnd); // ascending, and never adjacent (else coalesced)
          previousEnd = s.offset + s.length;
          let at = s.offset;
          let windowStart = s.offset;
          for (const e of s.ends) {
            // each window is whole chunks, consecutive
            let size = 0;
            let count = 0;
            while (at < e) {
              const c = starts.get(at);
              expect(c, `a chunk starts at ${at}`).toBeDefined();
              bytes.add(at);
              size += end(c!) - at;
              at = end(c!);
              count++;
            }
            expect(at).toBe(e);
            expect(count === 1 || size <= windowBytes).toBe(true);
            windowStart = e;
          }
          expect(windowStart).toBe(s.offset + s.length);
        }
        expect(bytes.size).toBe(chunks.length);
      }),
      { numRuns: fuzzRuns(300) },
    );
  });
});
