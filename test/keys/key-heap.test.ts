// After a key file is read and its key imported, no copy of the key is left in the process: not in
// a heap snapshot (where strings show), and not in the process's memory, read through
// /proc/self/mem (where on-heap typed arrays, V8 garbage and Node's Buffer pool show too).
//
// This runs in a child process that knows the key only as two separate halves, so that its own
// search needle is never a whole copy: a hit is a real copy. The child runs the library's sources,
// transpiled as they are (not dist/, which may be stale).
import { readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/tmp.js';
import { transpile } from '../helpers/transpile.js';
import { addonPath } from '../native/helpers.js';

const dir = tempDir('st-keyheap-');

const CHILD = `
import fs from 'node:fs';
import v8 from 'node:v8';
// Opened before the addon makes the process non-dumpable (which makes /proc/self/mem root's).
const mem = fs.openSync('/proc/self/mem', 'r');
const [lib, keyPath, snapshotPath, ...halves] = process.argv.slice(2);
const { readKeyFile } = await import(lib + '/src/keys/key-file.js');
const { importKey } = await import(lib + '/src/native/key.js');

// 1. A key from a key file, the way the CLI imports one.
const k = await readKeyFile(keyPath);
const handle = importKey(k.key);
// 2. A 32-byte array made with a length (on the V8 heap), filled without a whole copy anywhere.
const small = new Uint8Array(32);
for (let i = 0; i < 32; i++) small[i] = (i * 37 + 11) & 0xff ^ 0xa5; // smallByte(i)
const handle2 = importKey(small);
// A control the scan must find: 32 bytes on the V8 heap, never imported.
const canary = new Uint8Array(32);
for (let i = 0; i < 32; i++) canary[i] = (i * 91 + 7) & 0xff ^ 0x3c; // canaryByte(i)
globalThis.keep = [handle, handle2, canary];

// Needles, each as two halves kept apart: each half at the start of a 4 KiB buffer of its own
// (not Node's Buffer pool, where two small buffers made in a row sit side by side: a whole copy).
const half = (fill) => { const b = Buffer.alloc(4096); const n = fill(b); return b.subarray(0, n); };
const h = halves.map((x) => half((b) => b.write(x, 0, 'hex')));
const pattern = (f, from) => half((b) => { for (let i = 0; i < 16; i++) b[i] = f(from + i); return 16; });
const smallByte = (i) => (i * 37 + 11) & 0xff ^ 0xa5;
const canaryByte = (i) => (i * 91 + 7) & 0xff ^ 0x3c;
// 3. A key made by writeNewKeyFile (keygen), imported: its halves are taken before the import wipes it.
const { writeNewKeyFile } = await import(lib + '/src/keys/key-file.js');
const made = await writeNewKeyFile(keyPath + '.new', 'heap-new');
// Bytes 0-14 and 15-31: 15 is a multiple of 3, so the two base64 halves are the key's base64, cut.
const madeHalves = [made.key.subarray(0, 15), made.key.subarray(15)];
const madeRaw = madeHalves.map((x) => half((b) => { b.set(x); return x.length; }));
const madeB64 = madeHalves.map((x) => half((b) => b.write(Buffer.from(x).toString('base64'), 0, 'latin1')));
const handle3 = importKey(made.key);
globalThis.keep.push(handle3);
const needles = {
  madeRaw,
  madeBase64: madeB64,
  fileRaw: [h[0], h[1]],
  fileBase64: [h[2], h[3]],
  fileHex: [h[4], h[5]],
  smallRaw: [pattern(smallByte, 0), pattern(smallByte, 16)],
  canary: [pattern(canaryByte, 0), pattern(canaryByte, 16)],
};

// Readable mappings, but not our secure regions (MADV_DONTDUMP: "dd"), where the key belongs.
const maps = [];
let cur;
for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
  const m = /^([0-9a-f]+)-([0-9a-f]+) (\\S{4}) \\S+ \\S+ \\S+\\s*(.*)$/.exec(line);
  if (m) { cur = { start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], name: m[4] }; maps.push(cur); }
  else if (cur && line.startsWith('VmFlags:')) cur.flags = line.slice(8).trim().split(/\\s+/);
}
const hits = Object.fromEntries(Object.keys(needles).map((n) => [n, 0]));
const CH = 1 << 20;
const buf = Buffer.allocUnsafeSlow(CH);
let scanned = 0;
for (const m of maps) {
  if (m.perms[0] !== 'r' || m.flags.includes('dd') || m.name === '[vvar]' || m.name === '[vsyscall]') continue;
  for (let at = m.start; at < m.end; at += CH - 64) {
    let n;
    try { n = fs.readSync(mem, buf, 0, Math.min(CH, m.end - at), at); } catch { break; }
    scanned += n;
    for (const [name, [a, b]] of Object.entries(needles)) {
      for (let p = buf.indexOf(a); p >= 0 && p < n; p = buf.indexOf(a, p + 1)) {
        let same = p + a.length + b.length <= n;
        for (let j = 0; same && j < b.length; j++) same = buf[p + a.length + j] === b[j];
        if (same) hits[name]++;
      }
    }
  }
}
fs.closeSync(mem);
v8.writeHeapSnapshot(snapshotPath);
console.log(JSON.stringify({ hits, scanned, released: [handle.released, handle2.released], wiped: [k.key.every((x) => x === 0), small.every((x) => x === 0), made.key.every((x) => x === 0)] }));
`;

describe('an imported key', () => {
  it('leaves no copy of its bytes, base64 or hex in the process (memory scan and heap snapshot), also for a key keygen just made', () => {
    const lib = join(dir, 'lib');
    transpile(['src/keys/key-file.ts', 'src/native/key.ts'], lib);
    writeFileSync(join(dir, 'child.mjs'), CHILD);
    const key = randomBytes(32);
    const keyPath = join(dir, 'heap.key');
    const b64 = key.toString('base64');
    const hex = key.toString('hex');
    writeFileSync(keyPath, JSON.stringify({ kind: 'sealed-tensors-data-key', version: 1, id: 'heap-test', key: b64 }), { mode: 0o600 });
    // The halves travel as separate arguments, hex-encoded so no form of the key is whole in argv.
    const halves = [key.subarray(0, 16), key.subarray(16), Buffer.from(b64.slice(0, 22)), Buffer.from(b64.slice(22)), Buffer.from(hex.slice(0, 32)), Buffer.from(hex.slice(32))];
    const snapshot = join(dir, 'child.heapsnapshot');
    const r = spawnSync(process.execPath, [join(dir, 'child.mjs'), lib, keyPath, snapshot, ...halves.map((x) => x.toString('hex'))], {
      encoding: 'utf8',
      env: { ...process.env, SEALED_TENSORS_ADDON: addonPath },
      timeout: 120_000,
    });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { hits: Record<string, number>; scanned: number; released: boolean[]; wiped: boolean[] };
    expect(out.released).toEqual([false, false]); // both keys were imported, and are held
    expect(out.wiped).toEqual([true, true, true]);
    expect(out.scanned).toBeGreaterThan(16 << 20); // the scan read the heap, not just a few pages
    const { canary, ...keys } = out.hits;
    expect(canary).toBeGreaterThanOrEqual(1); // the scan sees what lives on the V8 heap
    expect(keys).toEqual({ madeRaw: 0, madeBase64: 0, fileRaw: 0, fileBase64: 0, fileHex: 0, smallRaw: 0 });
    const text = readFileSync(snapshot, 'latin1');
    expect(text.includes(b64), 'base64 key in the heap snapshot').toBe(false);
    expect(text.includes(hex), 'hex key in the heap snapshot').toBe(false);
    expect(text.includes(b64.replace(/=+$/, '')), 'unpadded base64 key in the heap snapshot').toBe(false);
  });
});
