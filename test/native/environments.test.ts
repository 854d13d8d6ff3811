/**
 * The addon in several Node environments at once (worker_threads): each environment loads it anew,
 * and no environment may use another's classes. Run in a child, so a crash fails the test.
 */
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/bytes.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { sealUnaligned, spawnNode } from './child.js';
import { sealSmall } from '../helpers/sealed.js';
import { FileSource } from '../../src/reader/source.js';
import { readPublicHeader } from '../../src/reader/sealed-file.js';

const dir = tempDir('st-env-');

// Each step imports a key and reads every tensor of a sealed file, checking the bytes.
const CHILD = `
const { Worker } = require('node:worker_threads');
const a = JSON.parse(process.env.ST_ARGS);
const STEP = async (addon, a, where) => {
  const { createHash } = require('node:crypto');
  const key = addon.keyImport(Uint8Array.from(Buffer.from(a.key, 'hex')));
  if (!(key instanceof addon.NativeKeyHandle) || key.released) throw new Error(where + ': not a live key handle');
  const { file } = await addon.sealedOpen(a.path, key, Uint8Array.from(Buffer.from(a.header, 'hex')));
  if (file.payloadLength !== a.tensors.at(-1).end) throw new Error(where + ': wrong payload length');
  for (const t of a.tensors) {
    const r = await file.run({ ranges: Float64Array.of(t.begin, t.end), destSize: t.end - t.begin,
      destOffsets: Float64Array.of(0), allChunks: false, stopOnFailure: true, threads: 2 });
    if (createHash('sha256').update(new Uint8Array(r.dest)).digest('hex') !== t.sha256) throw new Error(where + ': wrong bytes in ' + t.name);
  }
  file.close();
  key.release();
  return where;
};
const workerCode = 'const { parentPort, workerData } = require("node:worker_threads");' +
  'const addon = require(workerData.addonPath);' +
  'const STEP = ' + STEP.toString() + ';' +
  'parentPort.on("message", async (m) => { if (m === "exit") return process.exit(0);' +
  ' try { parentPort.postMessage(await STEP(addon, workerData.a, m)); } catch (e) { parentPort.postMessage("error: " + e.message); } });';
(async () => {
  const done = [await STEP(addon, a, 'main, before any worker')];
  const w = new Worker(workerCode, { eval: true, workerData: { addonPath, a } });
  const ask = (m) => new Promise((res) => w.once('message', res).postMessage(m));
  done.push(await ask('worker'));
  done.push(await STEP(addon, a, 'main, worker alive'));
  done.push(await ask('worker, after main'));
  const exited = new Promise((res) => w.once('exit', res));
  w.postMessage('exit');
  await exited;
  global.gc?.();
  done.push(await STEP(addon, a, 'main, worker gone'));
  // A second worker after the first one's environment was torn down.
  const w2 = new Worker(workerCode, { eval: true, workerData: { addonPath, a } });
  done.push(await new Promise((res) => w2.once('message', res).postMessage('second worker')));
  await w2.terminate();
  done.push(await STEP(addon, a, 'main, at the end'));
  console.log(JSON.stringify({ done }));
})().catch((e) => { console.log(JSON.stringify({ error: e.message })); process.exitCode = 1; });
`;

describe('worker_threads', () => {
  it('keys imported and files read on the main thread, in a worker, and on the main thread again (worker alive, then gone)', async () => {
    const sealed = await sealUnaligned(dir);
    const r = spawnNode(CHILD, { ST_ARGS: JSON.stringify({ ...sealed, key: toHex(TEST_KEY) }) }, [], 60_000);
    expect(r.signal, r.stderr).toBeNull();
    expect(r.json, r.stderr).toEqual({
      done: ['main, before any worker', 'worker', 'main, worker alive', 'worker, after main', 'main, worker gone', 'second worker', 'main, at the end'],
    });
    expect(r.status).toBe(0);
  });
});

// A worker whose job is still decrypting when its environment goes away: terminate(), or process.exit()
// on the main thread (which terminates workers first). The job's promise cannot be settled then.
const IN_FLIGHT_WORKER = `
const { parentPort, workerData: a } = require('node:worker_threads');
const addon = require(a.addonPath);
(async () => {
  const key = addon.keyImport(Uint8Array.from(Buffer.from(a.key, 'hex')));
  const { file } = await addon.sealedOpen(a.path, key, Uint8Array.from(Buffer.from(a.header, 'hex')));
  // Every chunk authenticated (a long job on one thread), the first MiB decrypted into a lent buffer;
  // one job after another, so that whenever the worker is stopped a job is running.
  let dest = a.into ? addon.secureAlloc(1 << 20) : undefined;
  for (let n = 0; ; n++) {
    const opts = { ranges: Float64Array.of(0, 1 << 20), destOffsets: Float64Array.of(0), allChunks: true, stopOnFailure: true, threads: 1, subBlock: 4096 };
    if (dest) opts.dest = dest;
    const job = file.run(opts);
    if (n === 0) parentPort.postMessage('started');
    const r = await job;
    if (dest) dest = r.dest;
  }
})();
`;

const IN_FLIGHT_MAIN = `
const { Worker } = require('node:worker_threads');
const a = JSON.parse(process.env.ST_ARGS);
addon._testing.setReleaseProbe(true);
const w = new Worker(${JSON.stringify(IN_FLIGHT_WORKER)}, { eval: true, workerData: { ...a, addonPath } });
const seen = [];
w.on('message', async (m) => {
  seen.push(m);
  if (m !== 'started') return;
  if (a.exit) process.exit(5);
  await w.terminate();
  setTimeout(() => console.log(JSON.stringify({ seen, live: addon.secureLockedBytes(), probe: addon._testing.releaseProbe() })), 100);
});
`;

describe('worker_threads: a job in flight when its worker ends', () => {
  const cases = [
    ['terminate(), verify only', { exit: false, into: false }],
    ['terminate(), loading into a lent buffer', { exit: false, into: true }],
    ['process.exit() on the main thread', { exit: true, into: true }],
  ] as const;
  for (const [name, mode] of cases) {
    it(`${name}: no abort, and the job's secure memory is wiped`, async () => {
      const { path } = await sealSmall(dir, `inflight-${mode.exit}-${mode.into}`, TEST_KEY, [{ name: 'w', dtype: 'U8', shape: [8 << 20] }], 64 * 1024);
      const source = await FileSource.open(path);
      const { headerBytes } = await readPublicHeader(source).finally(() => source.close());
      const args = { ...mode, path, header: toHex(headerBytes), key: toHex(TEST_KEY) };
      const r = spawnNode(IN_FLIGHT_MAIN, { ST_ARGS: JSON.stringify(args), SEALED_TENSORS_TEST_EXIT_REPORT: '1' });
      expect(r.signal, r.stderr).toBeNull();
      expect(r.status, r.stderr).toBe(mode.exit ? 5 : 0);
      const wipe = /exit wipe: regions=\d+ bytes=\d+ nonzero=(\d+) released=\d+ releasedBytes=\d+ releasedNonzero=(\d+)/.exec(r.stderr);
      expect(wipe, r.stderr).not.toBeNull();
      expect(wipe!.slice(1).map(Number)).toEqual([0, 0]);
      if (!mode.exit) {
        const out = r.json as { seen: string[]; live: number; probe: { releases: number; nonzeroBytes: number } };
        expect(out.seen).toEqual(['started']);
        expect(out.live).toBe(0);
        expect(out.probe.releases).toBeGreaterThan(0);
        expect(out.probe.nonzeroBytes).toBe(0);
      }
    });
  }
});
