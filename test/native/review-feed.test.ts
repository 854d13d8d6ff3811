// Outside review (issue 8): the fed run's feed() reads its pieces' lengths, then copies them. A
// piece on a resizable ArrayBuffer (a length-tracking Uint8Array) can grow in between: a getter on
// a later index of the pieces array resizes it. feed() then copies the grown length into a window
// sized for the old total: a heap overflow in the addon driven by caller JavaScript. Run in a
// child, since on an unfixed addon it corrupts the heap.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPublicHeader } from '../../src/reader/sealed-file.js';
import { MemorySource } from '../../src/reader/source.js';
import { chunkFileOffset, chunkPlainLength } from '../../src/format/layout.js';
import { TAG_LENGTH } from '../../src/format/constants.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { runChild } from './helpers.js';

describe('review: fed run feed() and pieces that change size while being read', () => {
  it('a piece that grows (resizable ArrayBuffer) after its length was counted is refused, not copied past the window', async () => {
    const dir = tempDir();
    const input = join(dir, 'm.safetensors');
    const path = join(dir, 'm.sealed');
    writeSafetensors(input, [{ name: 'a', dtype: 'U8', shape: [3 * 4096] }]);
    await sealFile(input, path, { dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096 });
    const bytes = new Uint8Array(readFileSync(path));
    const { headerBytes, layout } = await readPublicHeader(new MemorySource(bytes));
    const c0 = chunkFileOffset(layout, 0);
    const c0len = chunkPlainLength(layout, 0) + TAG_LENGTH;
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
        const ab = new ArrayBuffer(${c0len - 1}, { maxByteLength: 1 << 24 });
        const grow = new Uint8Array(ab); // length-tracking
        grow.set(chunk.subarray(0, ${c0len - 1}));
        const pieces = [grow];
        Object.defineProperty(pieces, 1, { enumerable: true, get() { ab.resize(1 << 24); return chunk.subarray(${c0len - 1}); } });
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
    const r = runChild(script);
    expect(r.stderr).not.toMatch(/Segmentation|double free|corrupted|malloc|Aborted/);
    expect({ status: r.status, json: r.json }).toEqual({ status: 0, json: { result: 'ERR_INVALID_ARGUMENT' } });
  });
});
