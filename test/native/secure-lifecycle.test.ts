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
import { vmLckBytes } from './helpers.js';

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
