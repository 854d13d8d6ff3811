/**
 * Every prototype method and accessor of the addon's classes, called with the wrong `this`:
 * a TypeError, never another object's memory read as this class. In a child, so a crash fails the test.
 */
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/bytes.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { sealUnaligned, spawnNode } from './child.js';

const dir = tempDir('st-this-');

const CHILD = `
const a = JSON.parse(process.env.ST_ARGS);
(async () => {
  const key = addon.keyImport(Uint8Array.from(Buffer.from(a.key, 'hex')));
  const other = addon.keyImport(Uint8Array.from(Buffer.from(a.key, 'hex')));
  const { file } = await addon.sealedOpen(a.path, other, Uint8Array.from(Buffer.from(a.header, 'hex')));
  const secure = addon.secureAlloc(64);
  const wrong = [];
  const called = [];
  const run = file.begin({ ranges: new Float64Array(0), allChunks: true, stopOnFailure: true, threads: 1 });
  // A sealer over the sealed file's own header as a template (never run: only its methods' this checks).
  const fds = [require('fs').openSync(a.path, 'r'), require('fs').openSync('/dev/null', 'w')];
  const sealer = addon.sealBegin({ key, header: Uint8Array.from(Buffer.from(a.header, 'hex')), input: fds[0], inputPath: a.path,
    dataStart: 0, dataLength: 0, output: fds[1], outputPath: '/dev/null', ranges: new Float64Array(0), threads: 1 });
  for (const [cls, own, foreign] of [['NativeKeyHandle', key, file], ['NativeSealedFile', file, key], ['NativeSealedRun', run, file], ['NativeSealer', sealer, file]]) {
    const proto = Object.getPrototypeOf(own);
    const selves = { foreign, plain: {}, 'same prototype': Object.create(proto), array: [], 'secure buffer': secure,
      function: () => {}, undefined: undefined, null: null, number: 7, string: 'x' };
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name === 'constructor') continue;
      const d = Object.getOwnPropertyDescriptor(proto, name);
      const fn = d.get ?? d.value;
      if (typeof fn !== 'function') continue;
      called.push(cls + '.' + name);
      for (const [label, self] of Object.entries(selves)) {
        try {
          Reflect.apply(fn, self, [{ ranges: new Float64Array(0), allChunks: true, stopOnFailure: true, threads: 1 }]);
          wrong.push(cls + '.' + name + ' on ' + label + ': no error');
        } catch (e) {
          // Methods: V8's own receiver check ("Illegal invocation"); accessors: the addon's tag check.
          if (!(e instanceof TypeError) || (d.get && e.code !== 'ERR_INVALID_THIS')) wrong.push(cls + '.' + name + ' on ' + label + ': ' + e);
        }
      }
    }
  }
  // The real objects are untouched and still work.
  run.abort();
  sealer.abort();
  const r = await file.run({ ranges: Float64Array.of(0, a.tensors.at(-1).end), allChunks: true, stopOnFailure: false, threads: 1 });
  console.log(JSON.stringify({ wrong, called: called.sort(), keyLive: !key.released && !other.released,
    chunkSize: file.chunkSize, failed: r.failedChunks.length }));
})().catch((e) => { console.log(JSON.stringify({ error: String(e) })); process.exitCode = 1; });
`;

describe('native classes check `this`', () => {
  it('every method and accessor of NativeKeyHandle, NativeSealedFile, NativeSealedRun and NativeSealer throws a TypeError on a wrong this, no crash', async () => {
    const sealed = await sealUnaligned(dir);
    const r = spawnNode(CHILD, { ST_ARGS: JSON.stringify({ ...sealed, key: toHex(TEST_KEY) }) });
    expect(r.signal, r.stderr).toBeNull();
    expect(r.json, r.stderr).toEqual({
      wrong: [],
      called: [
        'NativeKeyHandle.release',
        'NativeKeyHandle.released',
        'NativeSealedFile.begin',
        'NativeSealedFile.chunkCount',
        'NativeSealedFile.chunkSize',
        'NativeSealedFile.close',
        'NativeSealedFile.payloadLength',
        'NativeSealedFile.run',
        'NativeSealedRun.abort',
        'NativeSealedRun.chunks',
        'NativeSealedRun.feed',
        'NativeSealedRun.finish',
        'NativeSealer.abort',
        'NativeSealer.finish',
        'NativeSealer.header',
        'NativeSealer.payload',
      ],
      keyLive: true,
      chunkSize: 4096,
      failed: 0,
    });
    expect(r.status).toBe(0);
  });
});
