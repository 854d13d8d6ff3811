/**
 * The addon in several Node environments at once (worker_threads): each environment loads it anew,
 * and no environment may use another's classes. Run in a child, so a crash fails the test.
 */
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/bytes.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { sealUnaligned, spawnNode } from './child.js';

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
