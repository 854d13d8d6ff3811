
import { afterEach, describe, expect, it } from 'vitest';
import { openSealedModel } from '../../src/reader/native-open.js';
import { NativeUnavailableError } from '../../src/errors.js';
import { sealSmall } from '../helpers/sealed.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir('st-native-open-');

afterEach(() => {
  delete process.env['SEALED_TENSORS_NATIVE'];
});

describe('openSealedModel: hardened unless explicitly allowed otherwise', async () => {
  const { path, data } = await sealSmall(dir, 'm', TEST_KEY);

  it('uses the native reader when the addon loads, and wipes raw key bytes', async () => {
    const key = new Uint8Array(TEST_KEY);
    const opened = await openSealedModel(path, key, { threads: 2 });
    expect(opened.hardened).toBe(true);
    expect(key.every((b) => b === 0)).toBe(true);
    if (!opened.hardened) throw new Error('unreachable');
    const t = await opened.reader.readTensor('head');
    expect(Buffer.from(t.bytes).equals(Buffer.from(data.get('head')!))).toBe(true);
    t.release();
    opened.reader.close();
  });

  it('refuses the unhardened path unless allowed, and says which path it gave', async () => {
    process.env['SEALED_TENSORS_NATIVE'] = '0';
    await expect(openSealedModel(path, new Uint8Array(TEST_KEY))).rejects.toBeInstanceOf(NativeUnavailableError);
    const opened = await openSealedModel(path, new Uint8Array(TEST_KEY), { allowUnhardened: true });
    expect(opened.hardened).toBe(false);
    expect(await opened.reader.readTensor('head')).toEqual(data.get('head'));
    await opened.reader.close();
  });
});

describe('argument and lifecycle errors are library errors', async () => {
  const { NativeSealedFileReader } = await import('../../src/reader/native-file.js');
  const { importKey } = await import('../../src/native/key.js');
  const { ReleasedError, InvalidArgumentError } = await import('../../src/errors.js');
  const { path } = await sealSmall(dir, 'e', TEST_KEY);

  it('a released key handle is ReleasedError; bad thread counts are InvalidArgumentError; a closed reader is ReleasedError', async () => {
    const key = importKey(new Uint8Array(TEST_KEY));
    key.release();
    await expect(NativeSealedFileReader.open(path, key)).rejects.toBeInstanceOf(ReleasedError);
    const k2 = importKey(new Uint8Array(TEST_KEY));
    const bad = await NativeSealedFileReader.open(path, k2, { threads: 0 });
    await expect(bad.verify()).rejects.toBeInstanceOf(InvalidArgumentError);
    bad.close();
    await expect(bad.readTensor('head')).rejects.toBeInstanceOf(ReleasedError);
    k2.release();
  });
});
