// A real session (simulated TEE, a broker over HTTPS) leaves no copy of the data key and no
// plaintext outside secure memory: a child process establishes the session, opens the sealed
// model, holds every tensor, then searches its readable memory that is not the addon's secure
// regions (through /proc/self/mem) and a heap snapshot. The child knows the key and the marker
// only as separate halves, so that its own needles are never a whole copy: a hit is a real copy.
// After session.close(), the addon's locked bytes are back to where they were before the session.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { patternBytes, writeSafetensors } from '../helpers/safetensors.js';
import { tempDir } from '../helpers/tmp.js';
import { addonPath } from '../native/helpers.js';
import { ROOT, hasBuild, serve, st, type Served } from './cli.js';

if (!hasBuild) console.warn('SKIPPED e2e session-heap: dist/ is not built (npm test builds it first)');

const CHILD = `
import fs from 'node:fs';
import v8 from 'node:v8';
import { createRequire } from 'node:module';
// Opened before the addon makes the process non-dumpable (which makes /proc/self/mem root's).
const mem = fs.openSync('/proc/self/mem', 'r');
const [dist, broker, caPath, teeKeyPath, modelPath, keyId, snapshotPath, ...halves] = process.argv.slice(2);
const addon = createRequire(import.meta.url)(process.env.SEALED_TENSORS_ADDON);
const { EnclaveSession } = await import(dist + '/session/enclave-session.js');
const { SimulatedTee } = await import(dist + '/attestation/providers/simulated.js');

const baseline = addon.secureLockedBytes();
const provider = new SimulatedTee({ rootKey: SimulatedTee.keyFrom(fs.readFileSync(teeKeyPath)) });
const session = await EnclaveSession.establish({ broker, ca: fs.readFileSync(caPath, 'utf8'), provider, keys: [keyId] });
const model = await session.open(modelPath);
const held = [];
for await (const t of model.tensors()) held.push(t); // every tensor held: the plaintext is live
const names = held.map((t) => t.info.name);
const during = addon.secureLockedBytes();

// Needles, each as two halves: each half at the start of a 4 KiB buffer of its own.
const half = (hex) => { const b = Buffer.alloc(4096); return b.subarray(0, b.write(hex, 0, 'hex')); };
const canaryByte = (i) => (i * 91 + 7) & 0xff ^ 0x3c;
const canary = new Uint8Array(32); // a control on the V8 heap that the scan must find
for (let i = 0; i < 32; i++) canary[i] = canaryByte(i);
globalThis.keep = [canary, held, model, session];
const pattern = (from) => { const b = Buffer.alloc(4096); for (let i = 0; i < 16; i++) b[i] = canaryByte(from + i); return b.subarray(0, 16); };
const needles = {
  keyRaw: [half(halves[0]), half(halves[1])],
  keyBase64: [half(halves[2]), half(halves[3])],
  keyHex: [half(halves[4]), half(halves[5])],
  marker: [half(halves[6]), half(halves[7])],
  canary: [pattern(0), pattern(16)],
};
// Readable mappings with their flags: the addon's secure regions are marked dd (MADV_DONTDUMP).
const maps = [];
let cur;
for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
  const m = /^([0-9a-f]+)-([0-9a-f]+) (\\S{4}) \\S+ \\S+ \\S+\\s*(.*)$/.exec(line);
  if (m) { cur = { start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], name: m[4], flags: [] }; maps.push(cur); }
  else if (cur && line.startsWith('VmFlags:')) cur.flags = line.slice(8).trim().split(/\\s+/);
}
const hits = Object.fromEntries(Object.keys(needles).map((n) => [n, 0]));
// The marker is counted in secure memory too, where it must be: found there, the scan reads the right bytes.
let markerInSecure = 0;
const where = [];
const CH = 1 << 20;
const buf = Buffer.allocUnsafeSlow(CH);
let scanned = 0;
const count = (n, a, b) => {
  let c = 0;
  for (let p = buf.indexOf(a); p >= 0 && p < n; p = buf.indexOf(a, p + 1)) {
    let same = p + a.length + b.length <= n;
    for (let j = 0; same && j < b.length; j++) same = buf[p + a.length + j] === b[j];
    if (same) c++;
  }
  return c;
};
for (const m of maps) {
  if (m.perms[0] !== 'r' || m.name === '[vvar]' || m.name === '[vsyscall]') continue;
  const secure = m.flags.includes('dd'); // the addon's secure regions (MADV_DONTDUMP)
  for (let at = m.start; at < m.end; at += CH - 64) {
    let n;
    try { n = fs.readSync(mem, buf, 0, Math.min(CH, m.end - at), at); } catch { break; }
    if (secure) { markerInSecure += count(n, ...needles.marker); continue; }
    scanned += n;
    for (const [name, [a, b]] of Object.entries(needles)) {
      const c = count(n, a, b);
      hits[name] += c;
      // Where a secret was found: which mapping (a thread's stack is 8 MiB, no name), how far below its top.
      if (c && name !== 'canary') where.push({ start: m.start, end: m.end, name, map: m.name, perms: m.perms, flags: m.flags.join(' '), size: m.end - m.start, fromTop: m.end - (at + buf.indexOf(a)), count: c });
    }
  }
}
fs.closeSync(mem);
// For a hit: which live thread's stack pointer (blocked, from /proc/self/task/*/syscall) is in that mapping.
const tasks = fs.readdirSync('/proc/self/task').map((t) => {
  let f = [];
  try { f = fs.readFileSync('/proc/self/task/' + t + '/syscall', 'utf8').trim().split(' '); } catch {}
  return { comm: fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim(), sp: f.length > 7 ? parseInt(f[f.length - 2], 16) : 0 };
});
for (const w of where) {
  w.threads = tasks.filter((x) => x.sp >= w.start && x.sp < w.end).map((x) => x.comm + ' sp ' + (w.end - x.sp) + ' below top');
  delete w.start;
  delete w.end;
}
v8.writeHeapSnapshot(snapshotPath);
const info = session.info;
for (const t of held) t.release();
session.close();
console.log(JSON.stringify({ where, names, hits, markerInSecure, scanned, tee: info.tee, hardened: info.hardened, baseline, during, after: addon.secureLockedBytes() }));
`;

describe.runIf(hasBuild)('a live session', () => {
  let broker: Served | undefined;
  afterAll(async () => {
    await broker?.stop();
  });

  it('holds the data key and the plaintext only in secure memory (memory scan and heap snapshot); close() unlocks everything it locked', async () => {
    const dir = tempDir('st-e2e-heap-');
    const p = (n: string): string => join(dir, n);
    const marker = Buffer.from(`SESSION-HEAP-${randomBytes(10).toString('hex')}`); // 33 bytes
    const markerTensor = Buffer.concat(Array.from({ length: 400 }, () => marker));
    writeSafetensors(p('m.safetensors'), [
      { name: 'marker', dtype: 'U8', shape: [markerTensor.length], data: markerTensor },
      { name: 'w', dtype: 'F32', shape: [8192], data: patternBytes(4 * 8192, 5) },
    ]);
    for (const args of [
      ['keygen', '-o', p('k.json'), '--id', 'k-heap'],
      ['seal', p('m.safetensors'), '-o', p('m.sealed'), '--key', p('k.json'), '--chunk-size', '4KiB'],
      ['broker', 'init', p('broker'), '--allow-simulated', '--simulated-key', p('tee.pem')],
      ['broker', 'key', 'add', '--dir', p('broker'), '--key', p('k.json'), '--model', p('m.sealed')],
    ]) {
      const r = st(args);
      expect(r.code, `${args.join(' ')}: ${r.err}`).toBe(0);
    }
    broker = await serve(p('broker'));
    const key = Buffer.from((JSON.parse(readFileSync(p('k.json'), 'utf8')) as { key: string }).key, 'base64');
    expect(key.length).toBe(32);
    const b64 = key.toString('base64');
    const hex = key.toString('hex');

    writeFileSync(p('child.mjs'), CHILD);
    const snapshot = p('child.heapsnapshot');
    // Halves travel as separate hex arguments: no form of the key or the marker is whole in argv.
    const halves = [key.subarray(0, 16), key.subarray(16), Buffer.from(b64.slice(0, 22)), Buffer.from(b64.slice(22)), Buffer.from(hex.slice(0, 32)), Buffer.from(hex.slice(32)), marker.subarray(0, 16), marker.subarray(16)];
    const r = spawnSync(
      process.execPath,
      [p('child.mjs'), join(ROOT, 'dist'), broker.url, p('broker/ca.pem'), p('tee.pem'), p('m.sealed'), 'k-heap', snapshot, ...halves.map((x) => x.toString('hex'))],
      { encoding: 'utf8', env: { ...process.env, SEALED_TENSORS_ADDON: addonPath }, timeout: 120_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      where: unknown[];
      names: string[];
      hits: Record<string, number>;
      markerInSecure: number;
      scanned: number;
      tee: string;
      hardened: boolean;
      baseline: number;
      during: number;
      after: number;
    };
    expect(out.names).toEqual(['marker', 'w']);
    expect(out).toMatchObject({ tee: 'simulated', hardened: true });
    expect(out.scanned).toBeGreaterThan(16 << 20); // the scan read the heap, not just a few pages
    const { canary, ...secrets } = out.hits;
    expect(canary).toBeGreaterThanOrEqual(1); // the scan sees what lives on the V8 heap
    expect(out.markerInSecure).toBeGreaterThanOrEqual(300); // the plaintext is where it belongs
    expect(secrets, `found at ${JSON.stringify(out.where)}`).toEqual({ keyRaw: 0, keyBase64: 0, keyHex: 0, marker: 0 });
    const text = readFileSync(snapshot, 'latin1');
    expect(text.includes(b64), 'base64 key in the heap snapshot').toBe(false);
    expect(text.includes(hex), 'hex key in the heap snapshot').toBe(false);
    expect(text.includes(marker.toString('latin1')), 'plaintext marker in the heap snapshot').toBe(false);
    // The session locked memory for its key and tensors, and close() gave all of it back.
    expect(out.during).toBeGreaterThan(out.baseline);
    expect(out.after).toBe(out.baseline);
    expect(await broker.stop()).toBe(0);
    broker = undefined;
  });
});
