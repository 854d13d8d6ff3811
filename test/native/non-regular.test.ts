/**
 * A FIFO, a device or a folder where a file is expected: refused at once with an error naming the
 * path, never a threadpool thread blocked in open(). A regression is detected within seconds and the
 * blocked thread freed (a writer opens the FIFO), so the run fails instead of hanging.
 */
import { closeSync, constants, openSync, renameSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IoError } from '../../src/errors.js';
import { loadAddon } from '../../src/native/addon.js';
import { importKey } from '../../src/native/key.js';
import { FileSource } from '../../src/reader/source.js';
import { SealedFileReader, readPublicHeader } from '../../src/reader/sealed-file.js';
import { NativeSealedFileReader } from '../../src/reader/native-file.js';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { sealSmall } from '../helpers/sealed.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { which } from './helpers.js';

const dir = tempDir('st-nonreg-');
const hasMkfifo = which('mkfifo');

function mkfifo(path: string): string {
  const r = spawnSync('mkfifo', ['-m', '600', path]);
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed`);
  return path;
}

/** How `p` settled; if it is still pending after 5 s it is blocked on `fifo`: unblock it and fail. */
async function settles(p: Promise<unknown>, fifo: string): Promise<unknown> {
  const settled = p.then(
    () => ({ resolved: true }),
    (err: unknown) => ({ rejected: err }),
  );
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((res) => (timer = setTimeout(() => res('hung'), 5000)));
  const r = await Promise.race([settled, hung]);
  clearTimeout(timer);
  if (r === 'hung') {
    closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)); // lets the blocked open() return
    await settled;
    throw new Error(`still blocked opening the FIFO ${fifo} after 5 s`);
  }
  return r;
}

async function rejectsNaming(p: Promise<unknown>, fifo: string, path: string, kind: RegExp, code = 'ERR_IO'): Promise<void> {
  const r = (await settles(p, fifo)) as { rejected?: { code?: string; message?: string } };
  expect(r.rejected, `expected a rejection for ${path}`).toBeDefined();
  expect(r.rejected!.code).toBe(code);
  expect(r.rejected!.message).toContain(path);
  expect(r.rejected!.message).toMatch(kind);
}

describe.skipIf(!hasMkfifo)('non-regular files at a model path (needs mkfifo)', async () => {
  const fifo = mkfifo(join(dir, 'model.sealed'));
  const { path: real } = await sealSmall(dir, 'real', TEST_KEY);
  const source = await FileSource.open(real);
  const { headerBytes } = await readPublicHeader(source).finally(() => source.close());

  it('the readers refuse a FIFO, a character device and a folder with IoError naming the path', async () => {
    for (const [path, kind] of [
      [fifo, /FIFO/],
      ['/dev/null', /character device/],
      [dir, /folder/],
    ] as const) {
      await rejectsNaming(FileSource.open(path), fifo, path, kind);
      await rejectsNaming(SealedFileReader.open(path, TEST_KEY), fifo, path, kind);
      const key = importKey(new Uint8Array(TEST_KEY));
      await rejectsNaming(NativeSealedFileReader.open(path, key), fifo, path, kind);
      key.release();
    }
    const key = importKey(new Uint8Array(TEST_KEY));
    await rejectsNaming(NativeSealedModelReader.open(fifo, key), fifo, fifo, /FIFO/);
    key.release();
    await expect(FileSource.open(fifo)).rejects.toBeInstanceOf(IoError);
  });

  it('the addon refuses them too, even given a valid header (its own open, on the threadpool)', async () => {
    const addon = loadAddon();
    for (const [path, kind] of [
      [fifo, /FIFO/],
      ['/dev/null', /character device/],
      [dir, /folder/],
    ] as const) {
      const key = addon.keyImport(new Uint8Array(TEST_KEY));
      await rejectsNaming(addon.sealedOpen(path, key, headerBytes), fifo, path, kind);
      key.release();
    }
  });

  it('seal refuses a FIFO as its input, as a shard and as a shard index', async () => {
    const opts = { dataKey: TEST_KEY, keyId: 'k' };
    await rejectsNaming(sealFile(fifo, join(dir, 'out.sealed'), opts), fifo, fifo, /FIFO.*safetensors/);
    const { path: model } = makeShardedModel(dir, 'sharded');
    const shard = join(model, 'model-00002-of-00003.safetensors');
    rmSync(shard);
    mkfifo(shard);
    await rejectsNaming(sealModelDirectory(model, join(dir, 'out1'), opts), shard, shard, /FIFO/);
    rmSync(shard);
    const index = join(model, 'model.safetensors.index.json');
    renameSync(index, join(dir, 'index.json'));
    mkfifo(index);
    await rejectsNaming(sealModelDirectory(model, join(dir, 'out2'), opts), index, index, /FIFO/);
  });
});
