import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadAddon, nativeStatus } from '../../src/native/addon.js';
import { SecureBuffer } from '../../src/native/secure-buffer.js';
import { importKey } from '../../src/native/key.js';
import { ReleasedError, MemlockError } from '../../src/errors.js';
import { canLock, runChild, smaps, vmLckBytes, which } from './helpers.js';

const MiB = 1 << 20;

describe('secure buffers', () => {
  // Sizes fit the 8 MiB RLIMIT_MEMLOCK an unprivileged user has; 4 MiB + 1 takes the huge-page path.
  it.skipIf(!canLock(6 * MiB))('locks exactly their pages while they live and unlocks them on release (needs 6 MiB lockable)', () => {
    const before = vmLckBytes();
    const a = SecureBuffer.allocate(1 * MiB);
    const b = SecureBuffer.allocate(4 * MiB + 1); // rounds up to whole pages
    expect(vmLckBytes() - before).toBe(1 * MiB + 4 * MiB + 4096);
    a.release();
    expect(vmLckBytes() - before).toBe(4 * MiB + 4096);
    b.release();
    expect(vmLckBytes()).toBe(before);
  });

  it.skipIf(!canLock(6 * MiB))('allocates off the JS thread too, with the same accounting (needs 6 MiB lockable)', async () => {
    const before = vmLckBytes();
    const b = await SecureBuffer.allocateAsync(5 * MiB + 3);
    expect(vmLckBytes() - before).toBe(5 * MiB + 4096);
    expect(b.size).toBe(5 * MiB + 3);
    b.bytes.fill(7);
    b.release();
    expect(vmLckBytes()).toBe(before);
    await expect(SecureBuffer.allocateAsync(-1)).rejects.toThrow(/size/);
  });

  it('is marked locked, not dumpable and wiped-on-fork by the kernel, between guard pages', () => {
    const size = 1234567; // 302 pages: a size no other mapping here has
    const buf = SecureBuffer.allocate(size);
    try {
      const maps = smaps();
      const i = maps.findIndex((m) => m.sizeKb === 302 * 4 && m.perms === 'rw-p' && m.flags.includes('lo'));
      expect(i).toBeGreaterThan(0);
      const m = maps[i]!;
      expect(m.flags).toEqual(expect.arrayContaining(['lo', 'dd', 'wf']));
      const prev = maps[i - 1]!;
      const next = maps[i + 1]!;
      expect(prev.end).toBe(m.start);
      expect(prev.perms).toBe('---p');
      expect(next.start).toBe(m.end);
      expect(next.perms).toBe('---p');
    } finally {
      buf.release();
    }
  });

  it('zeroizes memory on release (read back through the test probe) and detaches every view', () => {
    const addon = loadAddon();
    addon._testing.setReleaseProbe(true);
    try {
      const before = addon._testing.releaseProbe();
      const buf = SecureBuffer.allocate(2 * MiB + 100);
      const view = buf.bytes;
      view.fill(0xa5);
      const sub = view.subarray(10, 20);
      buf.release();
      const after = addon._testing.releaseProbe();
      expect(after.releases - before.releases).toBe(1);
      expect(after.bytesScanned - before.bytesScanned).toBe(2 * MiB + 4096);
      expect(after.nonzeroBytes - before.nonzeroBytes).toBe(0);
      expect(view.length).toBe(0);
      expect(sub.length).toBe(0);
      expect(() => buf.bytes).toThrow(ReleasedError);
      buf.release(); // idempotent
    } finally {
      addon._testing.setReleaseProbe(false);
    }
  });

  it('zeroizes and unlocks a buffer its owner forgot, when it is collected', () => {
    const r = runChild(
      `
      const vmlck = () => Number(/VmLck:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1]);
      addon._testing.setReleaseProbe(true);
      const base = vmlck();
      (() => { new Uint8Array(addon.secureAlloc(4 << 20)).fill(0x5a); })();
      const held = vmlck() - base;
      (async () => {
        for (let i = 0; i < 20 && addon._testing.releaseProbe().releases === 0; i++) {
          global.gc(); await new Promise((r) => setTimeout(r, 10));
        }
        console.log(JSON.stringify({ held, after: vmlck() - base, probe: addon._testing.releaseProbe() }));
      })();`,
      { nodeArgs: ['--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    expect(r.json).toMatchObject({ held: 4096, after: 0, probe: { releases: 1, bytesScanned: 4 << 20, nonzeroBytes: 0 } });
  });

  it('refuses to fall back to swappable memory when RLIMIT_MEMLOCK is too low (ERR_MEMLOCK)', () => {
    if (!which('prlimit')) return expect.fail('prlimit (util-linux) is needed for this test');
    // Root has CAP_IPC_LOCK, which ignores the limit: drop it from the child's bounding set.
    const prefix = ['prlimit', '--memlock=65536:65536', '--'];
    if (process.getuid?.() === 0) prefix.push('setpriv', '--bounding-set=-ipc_lock', '--inh-caps=-ipc_lock', '--');
    const r = runChild(
      `const out = {};
      try { addon.secureAlloc(1 << 20); out.allocated = true; } catch (e) { out.code = e.code; out.message = e.message; }
      out.small = addon.secureAlloc(4096).byteLength;
      out.caps = /CapEff:\\s+(\\w+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1];
      console.log(JSON.stringify(out));`,
      { prefix },
    );
    expect(r.stderr).toBe('');
    const out = r.json as { code?: string; message?: string; small: number; caps: string };
    // CAP_IPC_LOCK is bit 14: the child really runs without it.
    expect(BigInt('0x' + out.caps) & (1n << 14n)).toBe(0n);
    expect(out.code).toBe('ERR_MEMLOCK');
    expect(out.message).toContain('RLIMIT_MEMLOCK is 65536 bytes');
    expect(out.message).toContain('cannot lock 1048576 bytes');
    expect(out.message).toContain('ulimit -l');
    expect(out.small).toBe(4096); // within the limit it works
  });

  it('a load fails with ERR_MEMLOCK up front under a low limit, while streaming verify (and its plain SHA-256) still fits', async () => {
    const { sealSmall } = await import('../helpers/sealed.js');
    const { tempDir, TEST_KEY } = await import('../helpers/tmp.js');
    const dir = tempDir('st-memlock-');
    const { path, data } = await sealSmall(dir, 'm', TEST_KEY, [{ name: 'w', dtype: 'U8', shape: [4 << 20] }], 1 << 20);
    const { createHash } = await import('node:crypto');
    const plainSha = createHash('sha256').update(data.get('w')!).digest('hex');
    const prefix = ['prlimit', '--memlock=1048576:1048576', '--'];
    if (process.getuid?.() === 0) prefix.push('setpriv', '--bounding-set=-ipc_lock', '--inh-caps=-ipc_lock', '--');
    const r = runChild(
      `const fs = require('fs');
      const bytes = fs.readFileSync(${JSON.stringify(path)});
      const header = bytes.subarray(0, 120 + bytes[13]);
      const key = addon.keyImport(new Uint8Array(${JSON.stringify([...TEST_KEY])}));
      const ranges = Float64Array.of(0, ${4 << 20});
      (async () => {
        const { file } = await addon.sealedOpen(${JSON.stringify(path)}, key, header);
        const out = {};
        const v = await file.run({ ranges, allChunks: true, stopOnFailure: false, threads: 1 });
        out.verifyFailed = v.failedChunks.length;
        // No room for whole-chunk buffers: plain SHA-256 falls back to one chunk at a time, same result.
        const p = await file.run({ ranges, allChunks: true, stopOnFailure: false, threads: 2, plainSha256: true });
        out.plainSha = Buffer.from(p.sha256).toString('hex');
        try { await file.run({ ranges, destSize: ${4 << 20}, destOffsets: Float64Array.of(0), allChunks: true, stopOnFailure: true, threads: 2 }); out.loaded = true; }
        catch (e) { out.code = e.code; out.message = e.message; }
        console.log(JSON.stringify(out));
      })();`,
      { prefix },
    );
    expect(r.stderr).toBe('');
    const out = r.json as { verifyFailed: number; code?: string; message?: string };
    expect(out.verifyFailed).toBe(0);
    expect((out as unknown as { plainSha: string }).plainSha).toBe(plainSha);
    expect(out.code).toBe('ERR_MEMLOCK');
    expect(out.message).toContain(`cannot lock ${4 << 20} bytes`);
  });

  it('maps ERR_MEMLOCK to MemlockError in the TypeScript front', async () => {
    const { fromNative } = await import('../../src/native/addon.js');
    const e = fromNative(Object.assign(new Error('x'), { code: 'ERR_MEMLOCK' }));
    expect(e).toBeInstanceOf(MemlockError);
  });
});

describe('process hardening', () => {
  it('makes the process non-dumpable with core size 0 on first use', () => {
    const r = runChild(`
      const limits = () => /Max core file size\\s+(\\S+)\\s+(\\S+)/.exec(require('fs').readFileSync('/proc/self/limits', 'utf8')).slice(1);
      const before = limits();
      const h = addon.hardening();
      console.log(JSON.stringify({ before, after: limits(), h }));`);
    const out = r.json as { before: string[]; after: string[]; h: { dumpable: number; notDumpable: boolean } };
    expect(out.after).toEqual(['0', '0']);
    expect(out.h.dumpable).toBe(0);
    expect(out.h.notDumpable).toBe(true);
  });

  it('reports the hardened native path', () => {
    const s = nativeStatus();
    expect(s.available).toBe(true);
    expect(s.hardened).toBe(true);
    expect(s.processHardening?.dumpable).toBe(0);
    // /proc/self/limits agrees in this process too.
    expect(readFileSync('/proc/self/limits', 'utf8')).toMatch(/Max core file size\s+0\s+0/);
  });
});

describe('key handles', () => {
  it('wipe the imported bytes and expose none of them', () => {
    const bytes = new Uint8Array(32).map((_, i) => i + 1);
    const before = vmLckBytes();
    const key = importKey(bytes);
    expect([...bytes]).toEqual(new Array(32).fill(0));
    expect(vmLckBytes() - before).toBe(4096);
    expect(Object.keys(key)).toEqual([]);
    expect(JSON.stringify(key)).toBe('{}');
    expect(key.released).toBe(false);
    expect(key.release()).toBe(true);
    expect(key.released).toBe(true);
    expect(vmLckBytes()).toBe(before);
  });

  it('reject keys of the wrong size', () => {
    expect(() => importKey(new Uint8Array(16))).toThrow(/32 bytes/);
  });
});
