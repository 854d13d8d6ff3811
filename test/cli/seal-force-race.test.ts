// `seal --force` races: what appears at the output after it was checked, and is not what the
// check allows, is kept. Over a sealed model folder: a file that appears in the folder after it was
// checked (another process writing there) is not deleted with the old sealed shards.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { IoError } from '../../src/errors.js';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

/**
 * When set, a listing of this folder is followed by a write into it: the race, made certain. The
 * first listing is the check before sealing (which would refuse); `skip` lets it pass, so the
 * write follows the last check, just before the old folder is renamed aside.
 */
const race: { dir: string | null; skip: number } = { dir: null, skip: 0 };

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const readdir = (async (path: string, ...rest: unknown[]) => {
    const names = await (real.readdir as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
    if (race.dir !== null && path === race.dir && race.skip-- === 0) {
      race.dir = null;
      writeFileSync(join(path, 'notes.txt'), 'written meanwhile');
    }
    return names;
  }) as typeof real.readdir;
  const open = (async (path: string, ...rest: unknown[]) => {
    const swap = swapAfterCheck;
    // The first open is the check before sealing; by the next one (the check before the rename)
    // the file has become other sealed output.
    if (swap !== null && path === swap.path && swap.skip-- === 0) {
      swapAfterCheck = null;
      writeFileSync(path, swap.bytes);
    }
    return (real.open as (...a: unknown[]) => Promise<unknown>)(path, ...rest);
  }) as typeof real.open;
  return { ...real, default: { ...real, readdir, open }, readdir, open };
});

/** When set, this path's bytes are replaced after its first check. */
let swapAfterCheck: { path: string; bytes: Uint8Array; skip: number } | null = null;

const dir = tempDir();
const opts = { dataKey: TEST_KEY, keyId: 'race' };

describe('seal --force replacing a sealed model folder', () => {
  it('keeps a file that appeared in the old folder after the check, and says where it is', async () => {
    const model = makeShardedModel(dir, 'model').path;
    const out = join(dir, 'out.sealed');
    await sealModelDirectory(model, out, opts);
    const sealedNames = readdirSync(out).sort();
    Object.assign(race, { dir: out, skip: 1 });
    const err = await sealModelDirectory(model, out, { ...opts, overwrite: true }).catch((e: unknown) => e);
    expect(race.dir).toBeNull(); // the race happened
    expect(err).toBeInstanceOf(IoError);
    expect((err as Error).message).toMatch(/the new sealed model is in place at .*out\.sealed, but files appeared .*\(notes\.txt\): not deleting them/);
    expect(readdirSync(out).sort()).toEqual(sealedNames);
    const old = readdirSync(dirname(out)).filter((n) => n.startsWith(`.${basename(out)}.old-`));
    expect(old).toHaveLength(1);
    expect(readdirSync(join(dir, old[0]!))).toEqual(['notes.txt']);
    expect(readFileSync(join(dir, old[0]!, 'notes.txt'), 'utf8')).toBe('written meanwhile');
    expect(existsSync(join(out, 'notes.txt'))).toBe(false);
  });

  it('keeps a sealed shard that took the place of the sealed file being replaced', async () => {
    const input = join(dir, 'one.safetensors');
    writeSafetensors(input, [{ name: 'w', dtype: 'F32', shape: [100] }]);
    const out = join(dir, 'one.sealed');
    await sealFile(input, out, opts);
    const shard = readFileSync(join(dir, 'out.sealed', readdirSync(join(dir, 'out.sealed')).find((n) => !n.includes('index'))!));
    swapAfterCheck = { path: out, bytes: shard, skip: 1 };
    const err = await sealFile(input, out, { ...opts, overwrite: true }).catch((e: unknown) => e);
    expect(swapAfterCheck).toBeNull(); // the swap happened
    expect(err).toBeInstanceOf(IoError);
    expect((err as Error).message).toMatch(/was replaced by something that is not sealed output while sealing/);
    expect(readFileSync(out).equals(shard)).toBe(true);
  });
});
