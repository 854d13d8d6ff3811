/**
 * The addon's fallback paths, reached on any kernel: a child node runs under an LD_PRELOAD shim
 * (test/native/shim/faults.c) that makes the system calls in question fail, and checks the bytes
 * of every tensor it reads against the plaintext.
 */
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { toHex } from '../../src/bytes.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { addonPath, repoRoot, which } from './helpers.js';
import { sealUnaligned, spawnNode, type SealedForChild } from './child.js';

const dir = tempDir('st-fallback-');
const hasCc = which('cc');

let shimPath: string | undefined;
function shim(): string {
  if (shimPath) return shimPath;
  const out = join(dir, 'faults.so');
  const r = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-o', out, join(repoRoot, 'test/native/shim/faults.c'), '-ldl', '-lpthread'], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`cannot build the test shim: ${r.stderr}`);
  chmodSync(out, 0o755);
  shimPath = out;
  return out;
}

// Reads every tensor on its own (what readTensor asks of the addon) and all of them into one buffer
// (what loadAll asks), and prints which came back with the wrong bytes.
const CHILD = `
const { createHash } = require('node:crypto');
const a = JSON.parse(process.env.ST_ARGS);
const sha = (u8) => createHash('sha256').update(u8).digest('hex');
// RLIMIT_NPROC counts every task of the real uid: allow \`headroom\` more than run now (libuv's
// threadpool has started by now, so what is left is for the decrypt threads).
function lowerNproc(headroom) {
  const fs = require('node:fs');
  let tasks = 0;
  for (const p of fs.readdirSync('/proc').filter((p) => /^[0-9]+$/.test(p))) {
    let ids = [];
    try { ids = fs.readdirSync('/proc/' + p + '/task'); } catch {}
    for (const t of ids) {
      try {
        const m = /^Uid:\\s+(\\d+)/m.exec(fs.readFileSync('/proc/' + p + '/task/' + t + '/status', 'utf8'));
        if (m && Number(m[1]) === process.getuid()) tasks++;
      } catch {}
    }
  }
  const r = require('node:child_process').spawnSync('prlimit', ['--pid', String(process.pid), '--nproc=' + (tasks + headroom)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error('prlimit failed: ' + r.stderr);
}
(async () => {
  const key = addon.keyImport(Uint8Array.from(Buffer.from(a.key, 'hex')));
  const { file } = await addon.sealedOpen(a.path, key, Uint8Array.from(Buffer.from(a.header, 'hex')));
  if (a.nprocHeadroom !== undefined) lowerNproc(a.nprocHeadroom);
  const wrong = [];
  for (const t of a.tensors) {
    const r = await file.run({ ranges: Float64Array.of(t.begin, t.end), destSize: t.end - t.begin,
      destOffsets: Float64Array.of(0), allChunks: false, stopOnFailure: true, threads: a.threads });
    if (r.failedChunks.length || sha(new Uint8Array(r.dest)) !== t.sha256) wrong.push('read ' + t.name);
  }
  const all = await file.run({ ranges: Float64Array.from(a.tensors.flatMap((t) => [t.begin, t.end])),
    destSize: a.tensors.at(-1).end, destOffsets: Float64Array.from(a.tensors, (t) => t.begin),
    allChunks: true, stopOnFailure: true, threads: a.threads });
  const bytes = new Uint8Array(all.dest);
  for (const t of a.tensors) if (sha(bytes.subarray(t.begin, t.end)) !== t.sha256) wrong.push('load ' + t.name);
  // Into a reserved (locked-on-fault) buffer, which the job populates as it would its own; then
  // again into the same memory, wiped (a session's arena).
  let dest = addon.secureReserve(a.tensors.at(-1).end);
  for (const pass of ['reserved', 'rewiped']) {
    const r = await file.run({ ranges: Float64Array.from(a.tensors.flatMap((t) => [t.begin, t.end])),
      dest, destOffsets: Float64Array.from(a.tensors, (t) => t.begin), allChunks: true, stopOnFailure: true, threads: a.threads });
    const got = new Uint8Array(r.dest);
    for (const t of a.tensors) if (sha(got.subarray(t.begin, t.end)) !== t.sha256) wrong.push(pass + ' ' + t.name);
    dest = addon.secureWipe(r.dest);
  }
  console.log(JSON.stringify({ wrong }));
})().catch((e) => { console.log(JSON.stringify({ error: e.code ?? String(e), message: e.message })); process.exitCode = 1; });
`;

function runChild(sealed: SealedForChild & { nprocHeadroom?: number }, threads: number, env: Record<string, string>, prefix: string[] = [], at: { addon?: string; cwd?: string } = {}) {
  return spawnNode(CHILD, { ...env, ST_ARGS: JSON.stringify({ ...sealed, key: toHex(TEST_KEY), threads }) }, prefix, 60_000, at);
}

describe('without MADV_POPULATE_WRITE (kernels before 5.14, or when that madvise fails)', () => {
  it.skipIf(!hasCc)('every tensor read alone or loaded whole has its exact bytes (needs cc for the LD_PRELOAD shim)', async () => {
    const sealed = await sealUnaligned(dir);
    for (const threads of [1, 3]) {
      const r = runChild(sealed, threads, { LD_PRELOAD: shim(), ST_SHIM_NO_POPULATE: '1' });
      expect(r.stderr).toContain('st-shim: refused MADV_POPULATE_WRITE'); // the fallback ran
      expect(r.json, r.stderr).toEqual({ wrong: [] });
      expect(r.status).toBe(0);
    }
  });
});

describe('when decrypt threads cannot all be created (pid limits in containers)', () => {
  it.skipIf(!hasCc)('a job goes on with the threads that started: exact bytes, no abort (needs cc for the LD_PRELOAD shim)', async () => {
    const sealed = await sealUnaligned(dir);
    for (const allowed of ['0', '1', '2']) {
      const r = runChild(sealed, 4, { LD_PRELOAD: shim(), ST_SHIM_THREADS: allowed });
      expect(r.stderr).toContain('st-shim: refused pthread_create'); // some thread did not start
      expect(r.signal, r.stderr).toBeNull();
      expect(r.json, r.stderr).toEqual({ wrong: [] });
      expect(r.status).toBe(0);
    }
  });

  const asRoot = process.getuid?.() === 0;
  it.skipIf(!asRoot || !which('setpriv') || !which('prlimit'))(
    'the same as an unprivileged user under a real RLIMIT_NPROC (needs root to switch user, setpriv and prlimit)',
    async () => {
      // The unprivileged child reads only the sealed file: the plaintext input goes first.
      const shared = mkdtempSync(join(dir, 'nproc-'));
      const sealed = await sealUnaligned(shared);
      rmSync(sealed.path.replace(/\.sealed$/, '.safetensors'));
      chmodSync(dir, 0o711);
      chmodSync(shared, 0o711);
      chmodSync(sealed.path, 0o644);
      const addon = join(shared, 'addon.node');
      copyFileSync(addonPath, addon);
      chmodSync(addon, 0o644);
      const prefix = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
      const r = runChild({ ...sealed, nprocHeadroom: 2 }, 6, {}, prefix, { addon, cwd: shared });
      expect(r.signal, r.stderr).toBeNull();
      expect(r.json, r.stderr).toEqual({ wrong: [] });
      expect(r.status).toBe(0);
    },
  );
});
