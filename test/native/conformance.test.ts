// The format's vectors and tamper cases, run against the native path: same outcomes as the
// reference reader, and nothing unauthenticated handed out.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseHeader } from '../../src/format/header.js';
import { chunkCount, chunkFileOffset, type Layout } from '../../src/format/layout.js';
import { TAG_LENGTH } from '../../src/format/constants.js';
import { SealedTensorsError } from '../../src/errors.js';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { importKey } from '../../src/native/key.js';
import { openOutcome, sealSmall, tablePaddingRange } from '../helpers/sealed.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';

const VECTORS = new URL('../vectors/format/', import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(VECTORS, 'manifest.json'), 'utf8')) as {
  keys: Record<string, string>;
  vectors: { file: string; key: string; expect: string; tensors?: unknown[] }[];
};
const dir = tempDir('st-native-tamper-');
const REJECTIONS = new Set(['ERR_INTEGRITY', 'ERR_KEY_MISMATCH', 'ERR_TRUNCATED', 'ERR_FORMAT', 'ERR_UNSUPPORTED_VERSION']);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/**
 * Open, load everything and verify on the native path. Returns the error code or 'ok', and
 * 'HANDED_OUT_WRONG_DATA' if anything it returned differs from the original.
 */
async function nativeOutcome(path: string, keyBytes: Uint8Array, original?: Map<string, Uint8Array>, threads = 2): Promise<string> {
  const key = importKey(new Uint8Array(keyBytes));
  let model: NativeSealedModelReader | null = null;
  try {
    model = await NativeSealedModelReader.open(path, key, { threads, subBlock: 4096 });
    const all = await model.loadAll();
    try {
      if (original) {
        for (const [name, t] of all.tensors) if (!Buffer.from(t.bytes).equals(Buffer.from(original.get(name)!))) return `HANDED_OUT_WRONG_DATA:${name}`;
      }
    } finally {
      all.release();
    }
    await model.verifyOrThrow();
    const verdicts = (await model.verify()).flatMap((s) => s.tensors);
    if (verdicts.some((v) => !v.ok)) return 'VERIFY_DISAGREES';
    return 'ok';
  } catch (err) {
    if (err instanceof SealedTensorsError) return err.code;
    throw err;
  } finally {
    model?.close();
    key.release();
  }
}

describe('committed format vectors on the native path', () => {
  for (const v of manifest.vectors) {
    it(`${v.file}: expect ${v.expect}`, async () => {
      const keyBytes = new Uint8Array(Buffer.from(manifest.keys[v.key]!, 'hex'));
      const key = importKey(new Uint8Array(keyBytes));
      let outcome = 'ok';
      try {
        const m = await NativeSealedModelReader.open(join(VECTORS, v.file), key, { threads: 2 });
        try {
          const checks = await m.verifyOrThrow({ plainSha256: true });
          const tensors = checks.flatMap((s) => s.tensors).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.byteLength, sha256: t.sha256 }));
          expect(tensors).toEqual(v.tensors);
          const all = await m.loadAll();
          for (const t of tensors) {
            const one = await m.readTensor(t.name);
            expect(sha(one.bytes)).toBe(t.sha256);
            one.release();
            expect(sha(all.tensors.get(t.name)!.bytes)).toBe(t.sha256);
          }
          all.release();
        } finally {
          m.close();
        }
      } catch (err) {
        if (!(err instanceof SealedTensorsError)) throw err;
        outcome = err.code;
      } finally {
        key.release();
      }
      expect(outcome).toBe(v.expect);
    });
  }
});

function layoutOf(bytes: Uint8Array): Layout {
  const { header, length } = parseHeader(bytes);
  return { headerLength: length, tableLength: header.tableLength, chunkSize: header.chunkSize, payloadLength: header.payloadLength };
}

describe('tampering is rejected on the native path, as on the reference path', async () => {
  const a = await sealSmall(dir, 'a', TEST_KEY);
  const b = await sealSmall(dir, 'b', TEST_KEY);
  const file = join(dir, 'case.sealed');
  const outcomeOf = async (bytes: Uint8Array) => {
    writeFileSync(file, bytes);
    return nativeOutcome(file, TEST_KEY, a.data);
  };

  it('opens the untouched file', async () => {
    expect(await outcomeOf(a.sealed)).toBe('ok');
  });

  it('rejects a bit flip at every header and table byte and across the payload, with the reference reader\'s code', async () => {
    const copy = new Uint8Array(a.sealed);
    const payloadStart = chunkFileOffset(layoutOf(a.sealed), 0);
    const seen = new Map<string, number>();
    // Every byte up to the payload but the table's zero padding, then every 7th (the reference
    // suite flips every bit of every byte).
    const padding = tablePaddingRange(a.sealed, TEST_KEY);
    const inPadding = (pos: number) => pos >= padding.start && pos < padding.end;
    for (let pos = 0; pos < copy.length; pos += (pos < payloadStart + 32 && !inPadding(pos)) || pos > copy.length - 40 ? 1 : 7) {
      const bit = (pos * 5) % 8;
      copy[pos]! ^= 1 << bit;
      const native = await outcomeOf(copy);
      const reference = await openOutcome(copy, TEST_KEY, a.data);
      copy[pos]! ^= 1 << bit;
      if (!REJECTIONS.has(native) || native !== reference) expect.fail(`flip of bit ${bit} at byte ${pos}: native ${native}, reference ${reference}`);
      seen.set(native, (seen.get(native) ?? 0) + 1);
    }
    console.log('native bit flips:', Object.fromEntries(seen));
  }, 300_000);

  it('rejects truncation, appended bytes, reordered and foreign chunks, a wrong key', async () => {
    const l = layoutOf(a.sealed);
    const n = chunkCount(l.payloadLength, l.chunkSize);
    const chunks = Array.from({ length: n }, (_, i) => a.sealed.subarray(chunkFileOffset(l, i), Math.min(chunkFileOffset(l, i) + l.chunkSize + TAG_LENGTH, a.sealed.length)));
    const start = a.sealed.subarray(0, chunkFileOffset(l, 0));
    const bl = layoutOf(b.sealed);
    const bChunk0 = b.sealed.subarray(chunkFileOffset(bl, 0), chunkFileOffset(bl, 1));
    const cat = (...p: Uint8Array[]) => new Uint8Array(Buffer.concat(p));
    const cases: [string, Uint8Array][] = [
      ['cut in the last chunk', a.sealed.subarray(0, a.sealed.length - 1)],
      ['cut at a chunk boundary', cat(start, ...chunks.slice(0, -1))],
      ['one byte appended', cat(a.sealed, new Uint8Array(1))],
      ['chunks 0 and 1 swapped', cat(start, chunks[1]!, chunks[0]!, ...chunks.slice(2))],
      ['chunk 0 from another file under the same key', cat(start, bChunk0, ...chunks.slice(1))],
      ['other header and table', cat(b.sealed.subarray(0, chunkFileOffset(bl, 0)), ...chunks)],
    ];
    for (const [what, bytes] of cases) {
      const native = await outcomeOf(bytes);
      expect(native, what).toBe(await openOutcome(bytes, TEST_KEY, a.data));
      expect(REJECTIONS.has(native), what).toBe(true);
    }
    writeFileSync(file, a.sealed);
    expect(await nativeOutcome(file, OTHER_KEY)).toBe('ERR_KEY_MISMATCH');
  });

  it('reports per-tensor verdicts: only tensors in a damaged chunk fail, and their plaintext is wiped', async () => {
    const l = layoutOf(a.sealed);
    const copy = new Uint8Array(a.sealed);
    copy[chunkFileOffset(l, 0) + 10]! ^= 1; // chunk 0 holds embed.weight and the start of layer.0.bias
    writeFileSync(file, copy);
    const key = importKey(new Uint8Array(TEST_KEY));
    const m = await NativeSealedModelReader.open(file, key, { threads: 1 });
    try {
      const verdicts = (await m.verify()).flatMap((s) => s.tensors);
      const byName = Object.fromEntries(verdicts.map((v) => [v.name, v.ok]));
      expect(byName).toEqual({ 'embed.weight': false, 'layer.0.bias': false, head: true });
      expect(verdicts[0]!.problem).toMatch(/chunk 0 at offset \d+ failed authentication/);
      await expect(m.loadAll()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
      await expect(m.readTensor('embed.weight')).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
      const head = await m.readTensor('head');
      expect(Buffer.from(head.bytes).equals(Buffer.from(a.data.get('head')!))).toBe(true);
      head.release();
    } finally {
      m.close();
      key.release();
    }
  });

  it('binds subkeys to suite and kind: a relabelled header fails the key commitment on both paths', async () => {
    for (const [offset, value] of [[12, 2], [10, 2]] as const) {
      const copy = new Uint8Array(a.sealed);
      copy[offset] = value; // model -> shard 0 of 1; AES-256-GCM -> ChaCha20-Poly1305
      expect(await outcomeOf(copy)).toBe('ERR_KEY_MISMATCH');
      expect(await openOutcome(copy, TEST_KEY, a.data)).toBe('ERR_KEY_MISMATCH');
    }
  });

  it('a damaged chunk of nothing but payload padding fails verify(), which has no tensor to blame', async () => {
    const input = join(dir, 'padded.safetensors');
    const output = join(dir, 'padded.sealed');
    const original = writeSafetensors(input, [{ name: 'w', dtype: 'U8', shape: [(1 << 20) + 1] }]);
    await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'test-key', chunkSize: 4096, padPayload: true });
    const sealed = new Uint8Array(readFileSync(output));
    expect(await nativeOutcome(output, TEST_KEY, original)).toBe('ok');
    const bad = new Uint8Array(sealed);
    bad[bad.length - 20]! ^= 1; // the last chunk: padding only
    writeFileSync(file, bad);
    const key = importKey(new Uint8Array(TEST_KEY));
    const m = await NativeSealedModelReader.open(file, key, { threads: 2 });
    try {
      await expect(m.verify()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
      await expect(m.loadAll()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    } finally {
      m.close();
      key.release();
    }
    expect(await openOutcome(bad, TEST_KEY, original)).toBe('ERR_INTEGRITY');
  });
});
