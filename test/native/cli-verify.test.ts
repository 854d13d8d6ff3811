import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { loadAddon, nativeStatus } from '../../src/native/addon.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { tempDir } from '../helpers/tmp.js';

const dir = tempDir('st-native-cli-');

const run = runCli;

afterEach(() => {
  delete process.env['SEALED_TENSORS_NATIVE'];
});

describe('sealed-tensors verify on the native path', async () => {
  const keyPath = join(dir, 'k.key');
  writeSafetensors(join(dir, 'm.safetensors'), [
    { name: 'a', dtype: 'F32', shape: [3000] },
    { name: 'empty', dtype: 'U8', shape: [0] },
    { name: 'b', dtype: 'BF16', shape: [7, 900] },
  ]);
  expect((await run('keygen', '-o', keyPath, '--id', 'k1')).code).toBe(0);
  expect((await run('seal', join(dir, 'm.safetensors'), '-o', join(dir, 'm.sealed'), '--key', keyPath, '--chunk-size', '4KiB')).code).toBe(0);

  it('prints exactly what the reference path prints (--json), using the addon, with --threads', async () => {
    const addon = loadAddon();
    addon._testing.setReleaseProbe(true);
    const before = addon._testing.releaseProbe().releases;
    const native = await run('verify', join(dir, 'm.sealed'), '--key', keyPath, '--json', '--threads', '2');
    const releases = addon._testing.releaseProbe().releases - before;
    addon._testing.setReleaseProbe(false);
    expect(native.code, native.err).toBe(0);
    // Observed, not assumed: the native path allocated and released secure memory (key, subkeys, scratch).
    expect(releases).toBeGreaterThanOrEqual(3);

    process.env['SEALED_TENSORS_NATIVE'] = '0';
    expect(nativeStatus()).toMatchObject({ available: false, hardened: false });
    const reference = await run('verify', join(dir, 'm.sealed'), '--key', keyPath, '--json');
    expect(reference.code).toBe(0);
    expect(native.out).toBe(reference.out);
  });

  it('fails a tampered file with the reference path\'s error and exit code', async () => {
    const bad = readFileSync(join(dir, 'm.sealed'));
    bad[bad.length - 30]! ^= 2;
    writeFileSync(join(dir, 'bad.sealed'), bad);
    const native = await run('verify', join(dir, 'bad.sealed'), '--key', keyPath, '--json');
    process.env['SEALED_TENSORS_NATIVE'] = '0';
    const reference = await run('verify', join(dir, 'bad.sealed'), '--key', keyPath, '--json');
    expect(native.code).toBe(1);
    expect(native).toEqual(reference);
  });
});
