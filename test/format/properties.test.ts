import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { parseHeader } from '../../src/format/header.js';
import { parseIndexTable, parseTensorTable } from '../../src/format/table.js';
import { DTYPE_SIZES, type Dtype } from '../../src/format/constants.js';
import { parseHeaderLength, parseSafetensorsHeader, parseShardIndex } from '../../src/seal/safetensors.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { MemorySource, type ByteSource } from '../../src/reader/source.js';
import { buildSafetensors } from '../helpers/safetensors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { sealSmall } from '../helpers/sealed.js';
import { rmSync, writeFileSync } from 'node:fs';
import { fuzzRuns } from '../helpers/fuzz.js';

const dir = tempDir();
// 3000 under `npm run fuzz`.
const NUM_RUNS = fuzzRuns(300);

/** Runs f; passes if it returns or throws a SealedTensorsError; anything else (TypeError, RangeError, hang) fails. */
function typedOnly(f: () => unknown): void {
  try {
    f();
  } catch (err) {
    if (!(err instanceof SealedTensorsError)) throw err;
  }
}

async function typedOnlyAsync(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
    return 'ok';
  } catch (err) {
    if (!(err instanceof SealedTensorsError)) throw err;
    return err.code;
  }
}

/** A source that fails the test if the reader asks for more than the file holds. */
function boundedSource(bytes: Uint8Array): ByteSource {
  const inner = new MemorySource(bytes);
  return {
    size: inner.size,
    description: 'fuzzed',
    read(offset, length) {
      if (length > bytes.length + 64) throw new Error(`reader asked for ${length} bytes of a ${bytes.length}-byte file`);
      return inner.read(offset, length);
    },
    close: () => inner.close(),
  };
}

describe('sealed header and table parsers', () => {
  it('random bytes give a typed error, never a crash', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (b) => typedOnly(() => parseHeader(b))), { numRuns: NUM_RUNS });
  });

  it('valid headers with random bytes overwritten give a typed error or a header that re-validates', async () => {
    const { sealed } = await sealSmall(dir, 'hdr', TEST_KEY);
    const { length } = parseHeader(sealed);
    const valid = sealed.subarray(0, length);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), (edits) => {
        const b = new Uint8Array(valid);
        for (const [at, v] of edits) b[at] = v;
        typedOnly(() => parseHeader(b));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('random JSON tables give a typed error, never a crash', () => {
    const tableLike = fc.oneof(
      fc.jsonValue(),
      fc.record({
        tensors: fc.array(
          fc.record({
            name: fc.oneof(fc.string(), fc.integer()),
            dtype: fc.constantFrom('F32', 'U8', 'X', 'BOOL', 3),
            shape: fc.array(fc.oneof(fc.nat(10), fc.integer(), fc.double())),
            offsets: fc.array(fc.oneof(fc.nat(100), fc.integer())),
            digest: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.string()),
          }),
        ),
        metadata: fc.oneof(fc.constant(null), fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.integer()))),
      }),
    );
    fc.assert(
      fc.property(tableLike, fc.nat(1000), (t, n) => {
        const bytes = new TextEncoder().encode(JSON.stringify(t));
        typedOnly(() => parseTensorTable(bytes, n));
        typedOnly(() => parseIndexTable(bytes, n % 4));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('opening random mutations of a sealed file gives typed errors and never over-reads', async () => {
    const { sealed } = await sealSmall(dir, 'mut', TEST_KEY);
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }),
          fc.tuple(fc.nat(sealed.length), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, bytes]) => {
            const b = new Uint8Array(sealed);
            b.set(bytes.subarray(0, Math.max(0, b.length - at)), Math.min(at, b.length));
            return b;
          }),
          fc.nat(sealed.length).map((cut) => sealed.slice(0, cut)),
        ),
        async (bytes) => {
          const code = await typedOnlyAsync(async () => {
            const r = await SealedFileReader.open(boundedSource(bytes), TEST_KEY);
            try {
              await r.verify();
            } finally {
              await r.close();
            }
          });
          if (!Buffer.from(bytes).equals(Buffer.from(sealed))) expect(code).not.toBe('ok');
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });
});

describe('input safetensors parser', () => {
  it('random bytes and random headers give ERR_SAFETENSORS, never a crash', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(1 << 20), (b, size) => {
        typedOnly(() => parseHeaderLength(b, size));
        typedOnly(() => parseSafetensorsHeader(b, b.length + 8 + size));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('structured but wrong headers give ERR_SAFETENSORS', () => {
    const entry = fc.record(
      {
        dtype: fc.constantFrom('F32', 'F16', 'U8', 'Q4', 'F4', 7, null),
        shape: fc.oneof(fc.array(fc.nat(6), { maxLength: 3 }), fc.array(fc.integer({ min: -3, max: 6 })), fc.constant('x')),
        data_offsets: fc.oneof(fc.tuple(fc.nat(200), fc.nat(200)), fc.array(fc.integer({ min: -5, max: 200 }))),
        extra: fc.string(),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 6 }), entry, { maxKeys: 5 }), fc.nat(200), (header, dataLength) => {
        const bytes = new TextEncoder().encode(JSON.stringify(header));
        try {
          parseSafetensorsHeader(bytes, 8 + bytes.length + dataLength);
        } catch (err) {
          expect(err).toBeInstanceOf(SealedTensorsError);
          expect((err as SealedTensorsError).code).toBe('ERR_SAFETENSORS');
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('shard index parser gives typed errors on random JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => typedOnly(() => parseShardIndex(new TextEncoder().encode(JSON.stringify(v))))),
      { numRuns: NUM_RUNS },
    );
  });

  it('a file claiming a huge header fails before allocating it', () => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, 99_000_000n, true);
    expect(() => parseHeaderLength(b, 16)).toThrow(/claims 99000000 bytes/);
    new DataView(b.buffer).setBigUint64(0, 2n ** 63n, true);
    expect(() => parseHeaderLength(b, 16)).toThrow(/more than the 100,000,000/);
  });

  it('sealing a damaged safetensors file fails with a typed error and leaves no output', async () => {
    const { bytes } = buildSafetensors([
      { name: 'a', dtype: 'F32', shape: [10] },
      { name: 'b', dtype: 'U8', shape: [7] },
    ]);
    await fc.assert(
      fc.asyncProperty(fc.nat(bytes.length - 1), fc.integer({ min: 1, max: 255 }), fc.boolean(), async (at, x, cut) => {
        const b = cut ? bytes.slice(0, at) : new Uint8Array(bytes);
        if (!cut) b[at]! ^= x;
        const input = join(dir, 'damaged.safetensors');
        const output = join(dir, 'damaged.sealed');
        writeFileSync(input, b);
        rmSync(output, { force: true });
        const code = await typedOnlyAsync(() => sealFile(input, output, { dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096, overwrite: true }));
        if (code !== 'ok') expect(readdirSync(dir).filter((n) => n.includes('damaged.sealed'))).toEqual([]);
        else readFileSync(output); // a flip inside tensor data is still a valid file
      }),
      { numRuns: 500 },
    );
  });
});

describe('round trip property', () => {
  const dtypes = Object.keys(DTYPE_SIZES) as Dtype[];
  it('random models, chunk sizes and read orders round-trip exactly', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ dtype: fc.constantFrom(...dtypes), shape: fc.array(fc.nat(40), { maxLength: 3 }) }), { maxLength: 6 }),
        fc.constantFrom(4096, 8192, 12288),
        fc.constantFrom(1, 2),
        fc.integer(),
        async (specs, chunkSize, suite, seed) => {
          const tensors = specs.map((s, i) => ({ name: `t${i}`, ...s }));
          const { bytes, data } = buildSafetensors(tensors);
          const input = join(dir, 'rt.safetensors');
          const output = join(dir, 'rt.sealed');
          writeFileSync(input, bytes);
          await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'k', chunkSize, suite: suite as 1 | 2, overwrite: true });
          const r = await SealedFileReader.open(new MemorySource(readFileSync(output)), TEST_KEY, { backend: seed % 2 ? 'node' : 'noble' });
          const order = [...tensors].sort((x, y) => ((x.name.length * seed) % 7) - ((y.name.length * seed) % 7) || (seed % 2 ? 1 : -1));
          for (const t of order) expect(await r.readTensor(t.name)).toEqual(data.get(t.name));
          await r.close();
        },
      ),
      { numRuns: 60 },
    );
  });
});
