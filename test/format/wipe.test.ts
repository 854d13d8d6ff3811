import { createDecipheriv } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { MemorySource } from '../../src/reader/source.js';
import { parseHeader } from '../../src/format/header.js';
import { nodeBackend, type CryptoBackend } from '../../src/crypto/backend.js';
import { nobleBackend } from '../../src/crypto/noble-backend.js';
import { deriveFileKeys } from '../../src/crypto/file-keys.js';
import { TABLE_NONCE } from '../../src/crypto/stream.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { sealSmall } from '../helpers/sealed.js';

// The reference reader holds plaintext on the JS heap; every copy it made of a chunk (or of the
// table) must be zero once it is no longer needed, whether the read succeeded or failed.
const dir = tempDir();
const small = await sealSmall(dir, 'wipe', TEST_KEY);

/** A backend that remembers every plaintext buffer its AEAD open returned. */
function spying(base: CryptoBackend): { backend: CryptoBackend; outputs: Uint8Array[] } {
  const outputs: Uint8Array[] = [];
  const backend: CryptoBackend = {
    ...base,
    aeadOpen(suite, key, nonce, aad, sealed) {
      const out = base.aeadOpen(suite, key, nonce, aad, sealed);
      outputs.push(out);
      return out;
    },
  };
  return { backend, outputs };
}

const allZero = (bufs: Uint8Array[]): boolean => bufs.every((b) => b.every((x) => x === 0));

/** The sealed file with one tensor digest changed: chunks authenticate, the digest check fails. */
function withWrongDigest(sealed: Uint8Array): Uint8Array {
  const copy = new Uint8Array(sealed);
  const { header, length } = parseHeader(copy);
  const keys = deriveFileKeys(nodeBackend, TEST_KEY, header);
  const digest = nodeBackend.sha256().update(copy.subarray(0, length)).digest();
  const sealedTable = copy.subarray(length, length + header.tableLength);
  const plain = nodeBackend.aeadOpen(header.suite, keys.tableKey, TABLE_NONCE, digest, sealedTable);
  const at = Buffer.from(plain).indexOf('"digest":"') + '"digest":"'.length;
  plain[at] = plain[at] === 0x30 ? 0x31 : 0x30;
  copy.set(nodeBackend.aeadSeal(header.suite, keys.tableKey, TABLE_NONCE, digest, plain), length);
  keys.destroy();
  return copy;
}

describe.each([nodeBackend, nobleBackend])('the reference reader wipes decrypted chunks ($name backend)', (base) => {
  it('after readTensor', async () => {
    const { backend, outputs } = spying(base);
    const r = await SealedFileReader.open(new MemorySource(small.sealed), TEST_KEY, { backend });
    const got = await r.readTensor('layer.0.bias');
    expect(got).toEqual(small.data.get('layer.0.bias'));
    expect(outputs.length).toBeGreaterThan(2); // the table and the chunks the tensor spans
    expect(allZero(outputs)).toBe(true);
    await r.close();
  });

  it('after entries(), also when the consumer stops early', async () => {
    const { backend, outputs } = spying(base);
    const r = await SealedFileReader.open(new MemorySource(small.sealed), TEST_KEY, { backend });
    for await (const e of r.entries()) expect(e.data).toEqual(small.data.get(e.info.name));
    expect(allZero(outputs)).toBe(true);
    for await (const _ of r.entries()) break;
    expect(allZero(outputs)).toBe(true);
    await r.close();
  });

  it('after verify()', async () => {
    const { backend, outputs } = spying(base);
    const r = await SealedFileReader.open(new MemorySource(small.sealed), TEST_KEY, { backend });
    await r.verify();
    expect(allZero(outputs)).toBe(true);
    await r.close();
  });

  it('when a digest check fails in readTensor, entries() or verify()', async () => {
    const bad = withWrongDigest(small.sealed);
    const { backend, outputs } = spying(base);
    const r = await SealedFileReader.open(new MemorySource(bad), TEST_KEY, { backend });
    await expect(r.readTensor('embed.weight')).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    expect(allZero(outputs)).toBe(true);
    await expect((async () => { for await (const _ of r.entries()); })()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    expect(allZero(outputs)).toBe(true);
    await expect(r.verify()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    expect(allZero(outputs)).toBe(true);
    await r.close();
  });
});

describe('the node:crypto backend leaves no plaintext copy of its own', () => {
  // Decipher.update returns a fresh Buffer; the backend copies it into its result and must wipe it.
  const proto = Object.getPrototypeOf(createDecipheriv('aes-256-gcm', new Uint8Array(32), new Uint8Array(12))) as { update: (...a: unknown[]) => Buffer };
  const original = proto.update;
  const produced: Uint8Array[] = [];
  beforeEach(() => {
    produced.length = 0;
    proto.update = function (this: unknown, ...args: unknown[]) {
      const out = original.apply(this, args);
      produced.push(out);
      return out;
    };
  });
  afterEach(() => {
    proto.update = original;
  });

  it('wipes what Decipher.update returned, on success and on a failed tag', async () => {
    const r = await SealedFileReader.open(new MemorySource(small.sealed), TEST_KEY, { backend: 'node' });
    await r.verify();
    expect(produced.some((b) => b.length > 0)).toBe(true);
    expect(allZero(produced)).toBe(true);
    await r.close();

    produced.length = 0;
    const flipped = new Uint8Array(small.sealed);
    flipped[flipped.length - 20]! ^= 1;
    const r2 = await SealedFileReader.open(new MemorySource(flipped), TEST_KEY, { backend: 'node' });
    await expect(r2.verify()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    expect(produced.some((b) => b.length > 0)).toBe(true);
    expect(allZero(produced)).toBe(true);
    await r2.close();
  });
});

describe('the sealer wipes the table plaintext it encrypted', () => {
  it('for a model file and for a sharded index (names and shapes are secret too)', async () => {
    const { sealFile } = await import('../../src/seal/seal-file.js');
    const { sealModelDirectory } = await import('../../src/seal/seal-model.js');
    const { makeShardedModel } = await import('../helpers/sharded.js');
    const { writeSafetensors } = await import('../helpers/safetensors.js');
    const tables: Uint8Array[] = [];
    const backend: CryptoBackend = {
      ...nodeBackend,
      aeadSeal(suite, key, nonce, aad, plain) {
        if (Buffer.from(nonce).equals(Buffer.from(TABLE_NONCE))) tables.push(plain);
        return nodeBackend.aeadSeal(suite, key, nonce, aad, plain);
      },
    };
    const input = join(dir, 'table-wipe.safetensors');
    writeSafetensors(input, [{ name: 'secret.layer.weight', dtype: 'F32', shape: [7, 3] }]);
    await sealFile(input, join(dir, 'table-wipe.sealed'), { dataKey: TEST_KEY, keyId: 'k', backend });
    const { path: sharded } = makeShardedModel(dir, 'table-wipe-sharded');
    await sealModelDirectory(sharded, join(dir, 'table-wipe-sharded.sealed'), { dataKey: TEST_KEY, keyId: 'k', backend });
    expect(tables.length).toBeGreaterThanOrEqual(3); // a file, shards, an index
    expect(allZero(tables)).toBe(true);
  });
});
