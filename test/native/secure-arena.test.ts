import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sealFile } from '../../src/seal/seal-file.js';
import { NativeSealedFileReader } from '../../src/reader/native-file.js';
import { importKey } from '../../src/native/key.js';
import { loadAddon } from '../../src/native/addon.js';
import { SecureBuffer } from '../../src/native/secure-buffer.js';
import { SecureArena } from '../../src/native/secure-arena.js';
import { InvalidArgumentError, ReleasedError } from '../../src/errors.js';
import { Suite } from '../../src/format/constants.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { canLock, smaps, vmLckBytes, type Mapping } from './helpers.js';

const MiB = 1 << 20;
// 5 MiB: a size no other locked mapping here has; its first 4 MiB can be two 2 MiB huge pages.
const SIZE = 5 * MiB;
const thp = /\[(always|madvise)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1];

async function sealedModel() {
  const dir = tempDir('st-arena-');
  const input = join(dir, 'm.safetensors');
  const output = join(dir, 'm.sealed');
  const data = writeSafetensors(input, [{ name: 'w', dtype: 'U8', shape: [SIZE] }], { format: 'pt' });
  await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'test-key', suite: Suite.AES_256_GCM, chunkSize: MiB });
  return { path: output, plain: data.get('w')! };
}

/** The one locked mapping of SIZE bytes, and its neighbours. */
function region(): { m: Mapping; prev: Mapping; next: Mapping } {
  const maps = smaps();
  const found = maps.flatMap((m, i) => (m.sizeKb === SIZE / 1024 && m.perms === 'rw-p' && m.flags.includes('lo') ? [i] : []));
  expect(found).toHaveLength(1);
  const i = found[0]!;
  return { m: maps[i]!, prev: maps[i - 1]!, next: maps[i + 1]! };
}

describe('reserved secure buffers and the arena', () => {
  it.skipIf(!canLock(SIZE + 2 * MiB))(
    'reserve() locks at once but populates nothing; a load populates it on its threads (huge pages where THP allows), still locked, undumpable, wiped on fork; wipe() keeps it populated and detaches views (needs 7 MiB lockable)',
    async () => {
      const { path, plain } = await sealedModel();
      const addon = loadAddon();
      const key = importKey(new Uint8Array(TEST_KEY));
      const reader = await NativeSealedFileReader.open(path, key, { threads: 2 }); // its key pages are locked too
      const before = vmLckBytes();
      const buf = SecureBuffer.reserve(SIZE);
      try {
        // Counted against RLIMIT_MEMLOCK now (the limit is checked up front), but no page exists yet.
        expect(vmLckBytes() - before).toBe(SIZE);
        let { m, prev, next } = region();
        expect(m.rssKb).toBe(0);
        expect(m.flags).toEqual(expect.arrayContaining(['lo', 'lf', 'dd', 'wf']));
        expect([prev.perms, prev.end, next.perms, next.start]).toEqual(['---p', m.start, '---p', m.end]);

        const loaded = await reader.loadAll({ into: buf });
        expect(Buffer.from(loaded.tensors.get('w')!.bytes).equals(Buffer.from(plain))).toBe(true);
        ({ m } = region());
        expect(m.rssKb).toBe(SIZE / 1024);
        expect(m.lockedKb).toBe(SIZE / 1024);
        expect(m.flags).toEqual(expect.arrayContaining(['lo', 'dd', 'wf']));
        if (thp) {
          // The decrypting threads populated 2 MiB-aligned spans of an MADV_HUGEPAGE mapping.
          expect(m.flags).toContain('hg');
          expect(m.anonHugeKb).toBe(4096);
        } else {
          console.log('PARTIAL: transparent huge pages are off on this kernel: the 4 KiB-page path was tested');
        }
        expect(vmLckBytes() - before).toBe(SIZE);

        const view = buf.bytes;
        buf.wipe();
        expect(view.byteLength).toBe(0); // a view kept from before never sees the next load
        expect(buf.bytes.every((b) => b === 0)).toBe(true);
        ({ m } = region());
        expect([m.rssKb, m.lockedKb]).toEqual([SIZE / 1024, SIZE / 1024]); // still populated and locked
        if (thp) expect(m.anonHugeKb).toBe(4096);

        // A reload into the wiped buffer; while it runs the buffer is lent: wipe() is refused.
        const again = reader.loadAll({ into: buf });
        expect(() => buf.wipe()).toThrow(InvalidArgumentError);
        const second = await again;
        expect(Buffer.from(second.tensors.get('w')!.bytes).equals(Buffer.from(plain))).toBe(true);

        addon._testing.setReleaseProbe(true);
        const probe = addon._testing.releaseProbe();
        buf.release();
        const after = addon._testing.releaseProbe();
        expect(after.bytesScanned - probe.bytesScanned).toBe(SIZE);
        expect(after.nonzeroBytes - probe.nonzeroBytes).toBe(0);
        expect(vmLckBytes()).toBe(before);
        expect(() => buf.wipe()).toThrow(ReleasedError);
      } finally {
        addon._testing.setReleaseProbe(false);
        buf.release();
        reader.close();
        key.release();
      }
    },
  );

  it('the arena hands out the smallest wiped buffer that fits, else a new one; close() releases what it keeps and what comes back later', () => {
    const arena = new SecureArena();
    const before = vmLckBytes();
    const a = arena.take(3 * 4096);
    const b = arena.take(1 * 4096);
    a.bytes.fill(0xaa);
    b.bytes.fill(0xbb);
    const viewA = a.bytes;
    arena.give(a);
    arena.give(b);
    expect(viewA.byteLength).toBe(0);
    expect(arena.freeBytes).toBe(4 * 4096);
    expect(vmLckBytes() - before).toBe(4 * 4096); // kept, locked
    const small = arena.take(100);
    expect(small).toBe(b); // the smallest that fits
    expect(small.bytes.every((x) => x === 0)).toBe(true);
    const big = arena.take(2 * 4096);
    expect(big).toBe(a);
    expect(big.bytes.every((x) => x === 0)).toBe(true);
    const fresh = arena.take(4096);
    expect(fresh).not.toBe(a);
    arena.give(big);
    arena.close();
    expect(big.released).toBe(true);
    expect(arena.freeBytes).toBe(0);
    arena.give(small); // after close: released, not kept
    arena.give(fresh);
    expect([small.released, fresh.released]).toEqual([true, true]);
    expect(vmLckBytes()).toBe(before);
    expect(() => arena.take(1)).toThrow(ReleasedError);
  });
});
