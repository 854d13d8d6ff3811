// Outside review (issue 8): the fed run's feed() takes each piece (Napi::Uint8Array, whose length
// node-addon-api caches when the wrapper is made), then copies them all. A getter on a later index
// of the pieces array runs caller JavaScript in between: it can detach an earlier piece's buffer
// (structuredClone with transfer) or shrink it (a resizable ArrayBuffer). feed() then memcpy()s
// the cached length from a null or shrunk backing store. Run in a child: on an unfixed addon it
// crashes the process.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPublicHeader } from '../../src/reader/sealed-file.js';
import { MemorySource } from '../../src/reader/source.js';
import { chunkCount, chunkFileOffset, chunkPlainLength } from '../../src/format/layout.js';
import { TAG_LENGTH } from '../../src/format/constants.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { runChild } from './helpers.js';

describe('review: fed run feed() and pieces that change size while being read', () => {
  it('a piece detached or shrunk (by a getter on a later piece) after it was taken is refused, not copied from', async () => {
    const dir = tempDir();
    const input = join(dir, 'm.safetensors');
    const path = join(dir, 'm.sealed');
    writeSafetensors(input, [{ name: 'a', dtype: 'U8', shape: [64 * 4096] }]); // 256 KiB: past malloc's mmap threshold
    await sealFile(input, path, { dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096 });
    const bytes = new Uint8Array(readFileSync(path));
    const { headerBytes, layout } = await readPublicHeader(new MemorySource(bytes));
    const c0 = chunkFileOffset(layout, 0);
    // Every chunk of the one tensor, consecutive in the file: one window.
    const last = chunkCount(layout.payloadLength, layout.chunkSize) - 1;
    const c0len = chunkFileOffset(layout, last) + chunkPlainLength(layout, last) + TAG_LENGTH - c0;
    const script = `
      const fs = require('node:fs');
      const bytes = new Uint8Array(fs.readFileSync(${JSON.stringify(path)}));
      const key = addon.keyImport(Uint8Array.from(${JSON.stringify([...TEST_KEY])}));
      const header = Uint8Array.from(Buffer.from(${JSON.stringify(Buffer.from(headerBytes).toString('hex'))}, 'hex'));
      const prefix = bytes.subarray(0, ${layout.headerLength + layout.tableLength});
      (async () => {
        const fed = await addon.sealedOpenFed('review', key, header, prefix, bytes.length);
        const run = fed.file.begin({ ranges: Float64Array.of(0, ${layout.payloadLength}), destSize: ${layout.payloadLength},
          destOffsets: Float64Array.of(0), allChunks: true, stopOnFailure: true, threads: 1 });
        const chunk = bytes.subarray(${c0}, ${c0 + c0len});
        const mode = process.env.REVIEW_MODE;
        const ab = mode === 'detach' ? new ArrayBuffer(${c0len - 1}) : new ArrayBuffer(${c0len - 1}, { maxByteLength: 1 << 24 });
        const first = new Uint8Array(ab); // length-tracking when resizable
        first.set(chunk.subarray(0, ${c0len - 1}));
        const pieces = [first];
        Object.defineProperty(pieces, 1, { enumerable: true, get() {
          if (mode === 'detach') { structuredClone(ab, { transfer: [ab] }); globalThis.gc(); } // the backing store is freed (munmap)
          else ab.resize(0);
          return chunk.subarray(${c0len - 1});
        } });
        let result;
        try {
          result = String(await run.feed(${c0}, pieces));
        } catch (e) {
          result = e.code || String(e);
        }
        try { run.abort(); } catch {}
        fed.file.close();
        key.release();
        console.log(JSON.stringify({ result }));
      })();
    `;
    const outcomes = ['detach', 'shrink'].map((mode) => {
      const r = runChild(script, { nodeArgs: ['--expose-gc'], env: { REVIEW_MODE: mode } });
      return { mode, status: r.status, json: r.json };
    });
    expect(outcomes).toEqual([
      { mode: 'detach', status: 0, json: { result: 'ERR_INVALID_ARGUMENT' } },
      { mode: 'shrink', status: 0, json: { result: 'ERR_INVALID_ARGUMENT' } },
    ]);
  });
});
