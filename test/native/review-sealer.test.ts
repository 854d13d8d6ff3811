// Review of the native sealer: attacks on the raw addon sealer and on the native seal path.
import { closeSync, ftruncateSync, openSync, readFileSync, readdirSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeHeader } from '../../src/format/header.js';
import { loadAddon, type NativeSealOptions } from '../../src/native/addon.js';
import { importKey } from '../../src/native/key.js';
import { resolveSealOptions, sealFileResolved } from '../../src/seal/seal-file.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { fixedRandom } from '../helpers/sealed.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const CS = 4096;

/** A raw sealer over a one-tensor model of `bytes` bytes, writing `out`. */
function rawSealer(dir: string, bytes: number) {
  const addon = loadAddon();
  const input = join(dir, 'in.safetensors');
  writeSafetensors(input, [{ name: 'w', dtype: 'U8', shape: [bytes] }]);
  const header = encodeHeader({
    version: 1, suite: 1, kind: 1, chunkSize: CS, shardIndex: 0, shardCount: 1, tableLength: 4096 + 16, payloadLength: bytes,
    bundleId: new Uint8Array(16), salt: new Uint8Array(32).fill(7), keyCommitment: new Uint8Array(32), keyId: 'k',
  });
  const inFd = openSync(input, 'r+');
  const out = join(dir, 'raw.out');
  const outFd = openSync(out, 'w');
  const key = importKey(new Uint8Array(TEST_KEY));
  const dataStart = statSync(input).size - bytes;
  const opts: NativeSealOptions = {
    key, header, input: inFd, inputPath: input, dataStart, dataLength: bytes, output: outFd, outputPath: out, ranges: Float64Array.of(0, bytes), threads: 2,
  };
  const sealer = addon.sealBegin(opts);
  key.release();
  return { addon, sealer, input, inFd, out, dataStart, close: () => (closeSync(inFd), closeSync(outFd)) };
}

describe('the raw sealer encrypts each chunk under its nonce once', () => {
  it('a second payload() after one that succeeded is refused (it would reuse every chunk nonce under the same key)', async () => {
    const dir = tempDir('st-review-sealer-');
    const r = rawSealer(dir, 3 * CS + 5);
    try {
      await r.sealer.payload();
      const first = readFileSync(r.out);
      // The input changes: a second run would write other plaintext under the same (key, nonce) pairs.
      writeSync(r.inFd, Buffer.alloc(3 * CS + 5, 0x41), 0, 3 * CS + 5, r.dataStart);
      let outcome: unknown = 'ran';
      try {
        await r.sealer.payload();
      } catch (err) {
        outcome = (err as { code?: string }).code;
      }
      expect(outcome).toBe('ERR_INVALID_ARGUMENT');
      expect(readFileSync(r.out).equals(first)).toBe(true);
    } finally {
      r.sealer.abort();
      r.close();
    }
  });

  it('an input that shrinks while sealing fails the payload (SafetensorsError code), frees the secure memory, and payload() cannot be retried', async () => {
    const dir = tempDir('st-review-sealer-');
    const live = loadAddon().secureLockedBytes();
    const r = rawSealer(dir, 5 * CS);
    try {
      ftruncateSync(r.inFd, r.dataStart + 2 * CS + 1);
      await expect(r.sealer.payload()).rejects.toMatchObject({ code: 'ERR_SAFETENSORS' });
      // Restored (with other bytes): the chunks already written must not be encrypted a second time.
      ftruncateSync(r.inFd, r.dataStart + 5 * CS);
      let outcome: unknown = 'ran';
      try {
        await r.sealer.payload();
      } catch (err) {
        outcome = (err as { code?: string }).code;
      }
      expect(outcome).toBe('ERR_INVALID_ARGUMENT');
    } finally {
      r.sealer.abort();
      r.close();
    }
    expect(loadAddon().secureLockedBytes()).toBe(live);
  });
});

describe('the native seal path commits nothing it has not checked', () => {
  it('a header from the addon that differs beyond its key commitment fails the seal with no output and no partial file left', async () => {
    const dir = tempDir('st-review-sealer-');
    const input = join(dir, 'm.safetensors');
    writeSafetensors(input, [{ name: 'w', dtype: 'U8', shape: [2 * CS + 3] }]);
    const outDir = join(dir, 'out');
    (await import('node:fs')).mkdirSync(outDir);
    const addon = loadAddon();
    const real = addon.sealBegin;
    // A sealer whose header (as JS reads it back) has one salt byte changed: what a faulty addon would hand out.
    addon.sealBegin = (o) => {
      const s = real.call(addon, o);
      return {
        get header() {
          const h = new Uint8Array(s.header);
          h[60]! ^= 1;
          return h;
        },
        payload: () => s.payload(),
        finish: (t: Uint8Array) => s.finish(t),
        abort: () => s.abort(),
      };
    };
    try {
      const o = resolveSealOptions({ dataKey: TEST_KEY, keyId: 'k', chunkSize: CS }, fixedRandom(4242), 'native');
      await expect(sealFileResolved(input, join(outDir, 'm.sealed'), o)).rejects.toThrow(/sealer bug/);
    } finally {
      addon.sealBegin = real;
    }
    expect(readdirSync(outDir)).toEqual([]);
  });
});
