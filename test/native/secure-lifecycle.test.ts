// Secure memory across a job's lifetime: what a caller's buffer shows while a load writes into it,
// and what is freed when, seen from outside the library (VmLck, the addon's live-byte count).
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NativeSealedFileReader } from '../../src/reader/native-file.js';
import { SecureBuffer } from '../../src/native/secure-buffer.js';
import { importKey } from '../../src/native/key.js';
import { loadAddon } from '../../src/native/addon.js';
import { parseHeader } from '../../src/format/header.js';
import { sealSmall } from '../helpers/sealed.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { runChild, vmLckBytes } from './helpers.js';

const dir = tempDir('st-lifecycle-');
const CS = 64 * 1024;

async function sealed(name: string, bytes: number) {
  const { path, data } = await sealSmall(dir, name, TEST_KEY, [{ name: 'w', dtype: 'U8', shape: [bytes] }], CS);
  return { path, plain: data.get('w')! };
}

/** A copy of `path` with one bit flipped in chunk `chunk`'s ciphertext. */
function flipped(path: string, chunk: number): string {
  const bytes = readFileSync(path);
  const { header, length } = parseHeader(bytes);
  bytes[length + header.tableLength + chunk * (CS + 16) + 100]! ^= 1;
  writeFileSync(path + '.bad', bytes);
  return path + '.bad';
}

describe('a secure buffer a load writes into', () => {
  it('released while the load runs is wiped, unlocked and unmapped when the load ends, not at GC', async () => {
    const { path } = await sealed('release', 16 * CS);
    const k = importKey(new Uint8Array(TEST_KEY));
    const r = await NativeSealedFileReader.open(path, k, { threads: 1, subBlock: 4096 });
    const addon = loadAddon();
    const lockedBefore = vmLckBytes();
    const liveBefore = addon.secureLockedBytes();
    const into = SecureBuffer.allocate(16 * CS);
    expect(vmLckBytes() - lockedBefore).toBe(16 * CS);
    addon._testing.setReleaseProbe(true);
    const probeBefore = addon._testing.releaseProbe();
    try {
      const load = r.loadAll({ into });
      const settled = load.then(
        () => 'loaded',
        (e: { code?: string }) => e.code,
      );
      // The job runs now; release() must not throw, and must not leave the memory to the GC.
      try {
        into.release();
      } catch {
        // the old behaviour: refused, but the buffer was marked released anyway
      }
      expect(into.released).toBe(true);
      const outcome = await settled;
      expect(vmLckBytes()).toBe(lockedBefore);
      expect(addon.secureLockedBytes()).toBe(liveBefore);
      expect(outcome).toBe('ERR_RELEASED');
      const probe = addon._testing.releaseProbe();
      expect(probe.releases - probeBefore.releases).toBeGreaterThanOrEqual(1);
      expect(probe.nonzeroBytes - probeBefore.nonzeroBytes).toBe(0);
    } finally {
      addon._testing.setReleaseProbe(false);
      r.close();
      k.release();
    }
  });

  it('shows JS no plaintext until the load settles, and none at all when a later chunk fails', async () => {
    const chunks = 64;
    const { path, plain } = await sealed('poll', chunks * CS);
    const k = importKey(new Uint8Array(TEST_KEY));
    const r = await NativeSealedFileReader.open(flipped(path, chunks - 1), k, { threads: 1, subBlock: 4096 });
    const into = SecureBuffer.allocate(chunks * CS);
    const view = into.bytes; // a view taken before the load, as a caller might keep one
    // 8-byte blocks equal to the plaintext at the same place: chance of a false match 2^-64 per block.
    const seen = (): number => {
      let v: Uint8Array;
      try {
        v = view.length > 0 ? view : into.bytes;
      } catch {
        return 0; // refused while the load runs
      }
      let n = 0;
      for (let i = 0; i + 8 <= v.length && i + 8 <= plain.length; i += 8) {
        let same = true;
        for (let j = 0; j < 8 && same; j++) same = v[i + j] === plain[i + j];
        if (same && plain.subarray(i, i + 8).some((b) => b !== 0)) n++;
      }
      return n;
    };
    let done = false;
    let polls = 0;
    let exposed = 0;
    const poll = (): void => {
      if (done) return;
      polls++;
      exposed = Math.max(exposed, seen());
      setImmediate(poll);
    };
    setImmediate(poll);
    const outcome = await r.loadAll({ into }).then(
      () => 'loaded',
      (e: { code?: string }) => e.code,
    );
    done = true;
    expect(outcome).toBe('ERR_INTEGRITY');
    expect(polls).toBeGreaterThan(0);
    expect(exposed).toBe(0);
    // The failed load leaves the caller's buffer readable again, and all zero.
    expect(into.bytes.every((b) => b === 0)).toBe(true);
    into.release();
    r.close();
    k.release();
  });
});

describe('secure memory that never reaches JS', () => {
  it('is wiped and unmapped when its ArrayBuffer cannot be created (a loaded tensor, a plain allocation)', async () => {
    const { path } = await sealed('noab', 8 * CS);
    const k = importKey(new Uint8Array(TEST_KEY));
    const r = await NativeSealedFileReader.open(path, k, { threads: 2 });
    const addon = loadAddon();
    const lockedBefore = vmLckBytes();
    const liveBefore = addon.secureLockedBytes();
    addon._testing.setReleaseProbe(true);
    const probeBefore = addon._testing.releaseProbe();
    try {
      addon._testing.failNextArrayBuffer();
      await expect(r.readTensor('w')).rejects.toMatchObject({ code: 'ERR_RESOURCE_LIMIT', message: expect.stringMatching(/ArrayBuffer/) });
      expect(vmLckBytes()).toBe(lockedBefore);
      expect(addon.secureLockedBytes()).toBe(liveBefore);
      const probe = addon._testing.releaseProbe();
      expect(probe.bytesScanned - probeBefore.bytesScanned).toBeGreaterThanOrEqual(8 * CS); // the tensor's buffer was released
      expect(probe.nonzeroBytes - probeBefore.nonzeroBytes).toBe(0);
      addon._testing.failNextArrayBuffer();
      expect(() => SecureBuffer.allocate(3 * CS)).toThrow(/ArrayBuffer/);
      expect(vmLckBytes()).toBe(lockedBefore);
      expect(addon.secureLockedBytes()).toBe(liveBefore);
      // The hook fires once: the next tensor loads.
      const t = await r.readTensor('w');
      expect(t.bytes.length).toBe(8 * CS);
      t.release();
    } finally {
      addon._testing.setReleaseProbe(false);
      r.close();
      k.release();
    }
  });
});

describe('every live secure region is wiped at process exit', () => {
  // The child holds a buffer full of 0x5a and a key. SEALED_TENSORS_TEST_EXIT_REPORT makes the exit
  // hook read every live region back after wiping it and print what it found on stderr: the last
  // thing the process does, after JS (and any 'exit' listener) can no longer run. Regions freed
  // before that (finalizers at environment teardown) are counted by the release probe.
  const hold = `
    addon._testing.setReleaseProbe(true);
    const held = new Uint8Array(addon.secureAlloc(${CS}));
    held.fill(0x5a);
    const key = addon.keyImport(new Uint8Array(32).fill(7));
    globalThis.keep = [held, key];
  `;
  const routes: [string, string, number | null][] = [
    ['process.exit()', 'process.exit(3);', 3],
    ['an uncaught exception', 'setTimeout(() => { throw new Error("boom"); }, 1);', 1],
    ['an unhandled rejection', 'Promise.reject(new Error("boom"));', 1],
    ['SIGTERM with a handler that exits', 'process.on("SIGTERM", () => process.exit(0)); process.kill(process.pid, "SIGTERM"); setTimeout(() => {}, 10000);', 0],
    ['the end of the event loop', 'setTimeout(() => {}, 1);', 0],
  ];
  for (const [name, how, status] of routes) {
    it(`on ${name}`, () => {
      const r = runChild(hold + how, { env: { SEALED_TENSORS_TEST_EXIT_REPORT: '1' } });
      expect(r.status).toBe(status);
      const m = /sealed-tensors exit wipe: regions=(\d+) bytes=(\d+) nonzero=(\d+) released=(\d+) releasedBytes=(\d+) releasedNonzero=(\d+)/.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      const [regions, bytes, nonzero, released, releasedBytes, releasedNonzero] = m!.slice(1).map(Number) as number[];
      expect(regions! + released!).toBeGreaterThanOrEqual(2); // the buffer and the key, live or freed
      expect(bytes! + releasedBytes!).toBeGreaterThanOrEqual(CS + 32);
      expect(nonzero).toBe(0);
      expect(releasedNonzero).toBe(0);
      if (name !== 'the end of the event loop') expect(regions).toBeGreaterThanOrEqual(2); // still live at exit: the hook wiped them
    });
  }
});
