import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sealFile } from '../../src/seal/seal-file.js';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { SealedModelReader } from '../../src/reader/sealed-model.js';
import { MemorySource } from '../../src/reader/source.js';
import { parseHeader } from '../../src/format/header.js';
import { chunkFileOffset } from '../../src/format/layout.js';
import { isTableBucket, padTable, padmeLength, tableBucket, unpadTable } from '../../src/format/padding.js';
import { FileKind, Suite } from '../../src/format/constants.js';
import { nodeBackend } from '../../src/crypto/backend.js';
import { deriveFileKeys } from '../../src/crypto/file-keys.js';
import { TABLE_NONCE } from '../../src/crypto/stream.js';
import { main } from '../../src/cli/main.js';
import { exitCodeFor } from '../../src/cli/io.js';
import { UnsupportedError } from '../../src/errors.js';
import { nativeStatus } from '../../src/native/addon.js';
import { importKey } from '../../src/native/key.js';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir();
let counter = 0;

async function seal(tensors: TensorSpec[], options: { padPayload?: boolean; metadata?: Record<string, string> } = {}) {
  const name = `m${counter++}`;
  const input = join(dir, `${name}.safetensors`);
  const output = join(dir, `${name}.sealed`);
  const data = writeSafetensors(input, tensors, options.metadata);
  await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096, padPayload: options.padPayload ?? false });
  const bytes = new Uint8Array(readFileSync(output));
  return { bytes, header: parseHeader(bytes).header, data, path: output };
}

/** What anyone without the key sees of a sealed file: every public length. */
const publicLengths = (s: { bytes: Uint8Array; header: { tableLength: number; payloadLength: number } }) => ({
  file: s.bytes.length,
  table: s.header.tableLength,
  payload: s.header.payloadLength,
});

/** Decrypt the table, let `edit` change its plaintext, seal it again under the same key (a broken sealer). */
function resealTable(bytes: Uint8Array, edit: (plain: Uint8Array) => void): Uint8Array {
  const copy = new Uint8Array(bytes);
  const { header, length } = parseHeader(copy);
  const keys = deriveFileKeys(nodeBackend, TEST_KEY, header);
  const aad = nodeBackend.sha256().update(copy.subarray(0, length)).digest();
  const plain = nodeBackend.aeadOpen(header.suite, keys.tableKey, TABLE_NONCE, aad, copy.subarray(length, length + header.tableLength));
  edit(plain);
  copy.set(nodeBackend.aeadSeal(header.suite, keys.tableKey, TABLE_NONCE, aad, plain), length);
  keys.destroy();
  return copy;
}

const openCode = async (bytes: Uint8Array): Promise<string> => {
  try {
    const r = await SealedFileReader.open(new MemorySource(bytes), TEST_KEY);
    await r.verify();
    await r.close();
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
};

describe('the public lengths do not reveal the architecture', () => {
  // Same parameter count (same payload bytes), different names, shapes, dtypes, tensor count and metadata.
  const small: TensorSpec[] = [
    { name: 'a', dtype: 'F32', shape: [100, 30] },
    { name: 'b', dtype: 'F32', shape: [50] },
  ];
  const llamaLike: TensorSpec[] = [
    { name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [40, 50] },
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16', shape: [20, 50] },
    { name: 'model.layers.0.self_attn.k_proj.weight', dtype: 'BF16', shape: [20, 50] },
    { name: 'model.layers.0.mlp.gate_proj.weight', dtype: 'F32', shape: [25, 20] },
    { name: 'model.layers.0.input_layernorm.weight', dtype: 'F32', shape: [50] },
    { name: 'lm_head.weight', dtype: 'U8', shape: [2000] },
  ];

  it('two models with the same payload size but different tensors have equal table, payload and file lengths', async () => {
    const a = await seal(small);
    const b = await seal(llamaLike, { metadata: { format: 'pt', architecture: 'LlamaForCausalLM' } });
    expect(a.header.payloadLength).toBe(12200);
    expect(publicLengths(a)).toEqual(publicLengths(b));
    expect(a.header.tableLength).toBe(4096 + 16);
  });

  it('the table length is a bucket: a power of two from 4 KiB (plus the tag)', async () => {
    const many: TensorSpec[] = Array.from({ length: 60 }, (_, i) => ({ name: `model.layers.${i}.mlp.down_proj.weight`, dtype: 'F16', shape: [3] }));
    const s = await seal(many);
    expect(s.header.tableLength).toBe(16384 + 16);
    expect(isTableBucket(s.header.tableLength - 16)).toBe(true);
  });

  it('the tampered padding of the table fails authentication', async () => {
    const s = await seal(small);
    const { length, header } = parseHeader(s.bytes);
    const bad = new Uint8Array(s.bytes);
    bad[length + header.tableLength - 16 - 100]! ^= 0x01; // a ciphertext byte over the zero padding
    expect(await openCode(bad)).toBe('ERR_INTEGRITY');
  });

  it('non-zero padding inside a correctly sealed table is rejected', async () => {
    const s = await seal(small);
    expect(await openCode(resealTable(s.bytes, (p) => void (p[p.length - 1] = 1)))).toBe('ERR_FORMAT');
    // A JSON length that runs into (or past) the padding is rejected as well.
    expect(await openCode(resealTable(s.bytes, (p) => new DataView(p.buffer, p.byteOffset).setUint32(0, p.length, true)))).toBe('ERR_FORMAT');
  });

  it('a header whose table length is not a bucket is rejected before any key is used', async () => {
    const s = await seal(small);
    const bad = Buffer.from(s.bytes);
    bad.writeUInt32LE(4096 + 16 + 8, 28);
    expect(() => parseHeader(bad)).toThrow(expect.objectContaining({ code: 'ERR_FORMAT' }));
  });

  it('pads and unpads tables exactly at the bucket edges', () => {
    expect(tableBucket(0)).toBe(4096);
    expect(tableBucket(4096)).toBe(4096);
    expect(tableBucket(4097)).toBe(8192);
    expect(tableBucket(70 * 1024 * 1024)).toBe(100 * 1024 * 1024);
    for (const n of [0, 1, 4092, 4093, 10_000]) {
      const json = new Uint8Array(n).fill(0x20);
      const padded = padTable(json);
      expect(padded.length).toBe(tableBucket(n + 4));
      expect(unpadTable(padded)).toEqual(json);
    }
    // The cap: a JSON of 100 MiB - 4 bytes fills the last bucket; one byte more is a file the
    // reference loads but format v1 cannot hold (ERR_UNSUPPORTED, exit 1), not a usage error.
    expect(tableBucket(100 * 1024 * 1024)).toBe(100 * 1024 * 1024);
    expect(padTable(new Uint8Array(100 * 1024 * 1024 - 4)).length).toBe(100 * 1024 * 1024);
    expect(() => padTable(new Uint8Array(100 * 1024 * 1024 - 3))).toThrow(UnsupportedError);
    expect(exitCodeFor(new UnsupportedError('x'))).toBe(1);
    // A frame in a bigger bucket than its length needs is not canonical.
    const big = new Uint8Array(8192);
    new DataView(big.buffer).setUint32(0, 10, true);
    expect(() => unpadTable(big)).toThrow(expect.objectContaining({ code: 'ERR_FORMAT' }));
  });
});

describe('subkeys are bound to the format version, suite and file kind', () => {
  it('derives different subkeys for each kind and suite under one key and salt', () => {
    const salt = new Uint8Array(32).fill(9);
    const seen = new Set<string>();
    for (const suite of [Suite.AES_256_GCM, Suite.CHACHA20_POLY1305]) {
      for (const kind of [FileKind.MODEL, FileKind.SHARD, FileKind.INDEX]) {
        const k = deriveFileKeys(nodeBackend, TEST_KEY, { version: 1, suite, kind, salt });
        for (const sub of [k.commitment, k.tableKey, k.payloadKey]) seen.add(Buffer.from(sub).toString('hex'));
      }
    }
    expect(seen.size).toBe(18);
  });

  it('a model file relabelled as a shard fails the key commitment', async () => {
    const s = await seal([{ name: 'w', dtype: 'F32', shape: [10] }]);
    const bad = new Uint8Array(s.bytes);
    bad[12] = FileKind.SHARD; // shard 0 of 1: structurally valid
    expect(await openCode(bad)).toBe('ERR_KEY_MISMATCH');
  });
});

describe('opt-in payload padding', () => {
  it('pads the payload to its Padmé length with zeros, and reads back the same tensors', async () => {
    const tensors: TensorSpec[] = [
      { name: 'x', dtype: 'F32', shape: [3001] },
      { name: 'y', dtype: 'U8', shape: [77] },
    ];
    const s = await seal(tensors, { padPayload: true });
    const dataLength = 3001 * 4 + 77;
    expect(s.header.payloadLength).toBe(padmeLength(dataLength));
    expect(s.header.payloadLength).toBeGreaterThan(dataLength);
    const r = await SealedFileReader.open(new MemorySource(s.bytes), TEST_KEY);
    for (const t of tensors) expect(await r.readTensor(t.name)).toEqual(s.data.get(t.name));
    expect((await r.verify()).map((c) => c.name)).toEqual(['x', 'y']);
    await r.close();
  });

  it('hides which of two parameter counts in one Padmé bucket a model has', async () => {
    const a = await seal([{ name: 'a', dtype: 'U8', shape: [200_001] }], { padPayload: true });
    const b = await seal([{ name: 'a.b.c', dtype: 'F16', shape: [100_100] }, { name: 'd', dtype: 'U8', shape: [3] }], { padPayload: true });
    expect(publicLengths(a)).toEqual(publicLengths(b));
    // Without padding the two differ.
    const c = await seal([{ name: 'a', dtype: 'U8', shape: [200_001] }]);
    expect(c.header.payloadLength).not.toBe(a.header.payloadLength);
  });

  it('pads the payload of every shard of a sharded model', async () => {
    const model = makeShardedModel(dir, 'sharded-padded');
    const out = join(dir, 'sharded-padded.sealed');
    const summary = await sealModelDirectory(model.path, out, { dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096, padPayload: true });
    for (const s of summary.shards) expect(s.header.payloadLength).toBe(padmeLength(dataOf(s.path)));
    const r = await SealedModelReader.open(out, TEST_KEY);
    for (const [name, bytes] of model.data) expect(await r.readTensor(name)).toEqual(bytes);
    await r.verify();
    await r.close();
  });

  it('rejects a payload whose padding is not zero (a broken sealer)', async () => {
    // Seal with padding, then rewrite the last chunk with a non-zero padding byte under the right key.
    const s = await seal([{ name: 'x', dtype: 'U8', shape: [5000] }], { padPayload: true });
    const { header, length } = parseHeader(s.bytes);
    const keys = deriveFileKeys(nodeBackend, TEST_KEY, header);
    const aad = nodeBackend.sha256().update(s.bytes.subarray(0, length)).digest();
    const layout = { headerLength: length, tableLength: header.tableLength, chunkSize: 4096, payloadLength: header.payloadLength };
    const at = chunkFileOffset(layout, 1);
    const { chunkNonce } = await import('../../src/crypto/stream.js');
    const plain = nodeBackend.aeadOpen(header.suite, keys.payloadKey, chunkNonce(1, true), aad, s.bytes.subarray(at));
    plain[plain.length - 1] = 0xff;
    const bad = new Uint8Array(s.bytes);
    bad.set(nodeBackend.aeadSeal(header.suite, keys.payloadKey, chunkNonce(1, true), aad, plain), at);
    keys.destroy();
    expect(await openCode(bad)).toBe('ERR_FORMAT');
    // The native reader's whole-file checks agree (the CLI's verify uses them when the addon loads).
    expect(nativeStatus().available, 'npm install builds the native addon; without it this check would pass unseen').toBe(true);
    const badPath = join(dir, 'bad-padding.sealed');
    writeFileSync(badPath, bad);
    const key = importKey(new Uint8Array(TEST_KEY));
    // Padding over several chunks, starting and ending inside one (2^20 + 1 bytes pad by 32767).
    const long = await seal([{ name: 'y', dtype: 'U8', shape: [2 ** 20 + 1] }], { padPayload: true });
    expect(long.header.payloadLength).toBe(2 ** 20 + 2 ** 15);
    for (const path of [s.path, long.path, badPath]) {
      const expected = path === badPath ? 'ERR_FORMAT' : 'ok';
      // verifyOrThrow is the CLI's verify; verify gives per-tensor verdicts.
      for (const check of ['verify', 'verifyOrThrow'] as const) {
        const r = await NativeSealedModelReader.open(path, key);
        const got = await r[check]().then(() => 'ok', (err: { code?: string }) => err.code ?? String(err));
        await r.close();
        expect(got, `${check} of ${path}`).toBe(expected);
      }
    }
  });

  it('is offered by the CLI as seal --pad-payload', async () => {
    const input = join(dir, 'cli.safetensors');
    writeSafetensors(input, [{ name: 'w', dtype: 'F32', shape: [3001] }]);
    const keyPath = join(dir, 'cli.key');
    const quiet = { stdout: () => {}, stderr: () => {} };
    expect(await main(['keygen', '-o', keyPath], quiet)).toBe(0);
    expect(await main(['seal', input, '-o', join(dir, 'cli.sealed'), '--key', keyPath, '--pad-payload'], quiet)).toBe(0);
    expect(parseHeader(readFileSync(join(dir, 'cli.sealed'))).header.payloadLength).toBe(padmeLength(3001 * 4));
  });
});

/** Bytes of tensor data in a sealed shard, from its source (the summary path's name minus .sealed). */
function dataOf(sealedPath: string): number {
  const source = readFileSync(join(dir, 'sharded-padded', sealedPath.split('/').pop()!.replace(/\.sealed$/, '')));
  return source.length - 8 - Number(source.readBigUInt64LE(0));
}

it('padmeLength follows the Padmé rule', () => {
  expect([0, 1, 2, 3, 9, 100, 1000].map(padmeLength)).toEqual([0, 1, 2, 3, 10, 104, 1024]);
  for (const n of [12_345, 1 << 20, 7_000_000_123, 140e9]) {
    const p = padmeLength(n);
    expect(p).toBeGreaterThanOrEqual(n);
    expect(p / n).toBeLessThanOrEqual(1.12);
  }
});
