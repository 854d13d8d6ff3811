/**
 * Builds the format vectors deterministically: fixed keys, fixed "randomness" for salts and bundle
 * ids (the only random inputs of a sealed file), fixed tensor bytes. `format-vectors.test.ts`
 * rebuilds them and demands byte equality with the committed files, so neither the writer nor the
 * reader can drift from what is committed without a test failing.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { resolveSealOptions, sealFileResolved, type SealEngine, type SealOptions } from '../../../src/seal/seal-file.js';
import { sealModelDirectoryResolved } from '../../../src/seal/seal-model.js';
import { Suite } from '../../../src/format/constants.js';
import { parseHeader } from '../../../src/format/header.js';
import { nodeBackend } from '../../../src/crypto/backend.js';
import { deriveFileKeys } from '../../../src/crypto/file-keys.js';
import { TABLE_NONCE } from '../../../src/crypto/stream.js';
import { buildSafetensors, type TensorSpec } from '../../helpers/safetensors.js';

export const VECTOR_KEY = Uint8Array.from({ length: 32 }, (_, i) => (i * 7 + 3) & 0xff);
export const VECTOR_OTHER_KEY = Uint8Array.from({ length: 32 }, (_, i) => (i * 11 + 5) & 0xff);

/** Counter-based bytes standing in for the CSPRNG: vectors only. */
function fixedRandom(seed: number): (n: number) => Uint8Array {
  let counter = 0;
  return (n) => {
    const out = new Uint8Array(n);
    for (let at = 0; at < n; at += 32) {
      const block = createHash('sha256').update(`sealed-tensors vectors ${seed} ${counter++}`).digest();
      out.set(block.subarray(0, Math.min(32, n - at)), at);
    }
    return out;
  };
}

const MODEL: TensorSpec[] = [
  { name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [64, 48] },
  { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'F32', shape: [24, 40] },
  { name: 'model.layers.0.input_layernorm.weight', dtype: 'F16', shape: [48] },
  { name: 'model.layers.0.attn.q_scale', dtype: 'F8_E4M3', shape: [5, 7] },
  { name: 'model.position_ids', dtype: 'I64', shape: [9] },
  { name: 'model.empty', dtype: 'U16', shape: [0, 3] },
  { name: 'model.mask', dtype: 'BOOL', shape: [] },
];

export interface VectorExpectation {
  file: string;
  key: 'key' | 'other_key';
  expect: 'ok' | string;
  description: string;
  tensors?: { name: string; dtype: string; shape: number[]; byteLength: number; sha256: string }[];
}

/** Write all vectors into `dir` with the given sealer (both must give the committed bytes); returns the manifest. */
export async function buildVectors(dir: string, engine: SealEngine = 'auto'): Promise<{ manifest: VectorExpectation[] }> {
  mkdirSync(dir, { recursive: true });
  const { bytes, data } = buildSafetensors(MODEL, { format: 'pt', source: 'sealed-tensors test vector' });
  writeFileSync(join(dir, 'model.safetensors'), bytes);
  const tensors = MODEL.map((t) => {
    const d = data.get(t.name)!;
    return { name: t.name, dtype: t.dtype, shape: t.shape, byteLength: d.length, sha256: createHash('sha256').update(d).digest('hex') };
  });
  const manifest: VectorExpectation[] = [];
  const seal = (out: string, suite: 1 | 2, seed: number, padPayload = false) =>
    sealFileResolved(
      join(dir, 'model.safetensors'),
      join(dir, out),
      resolveSealOptions({ dataKey: VECTOR_KEY, keyId: 'vector-key-1', suite, chunkSize: 4096, overwrite: true, padPayload }, fixedRandom(seed), engine),
    );

  await seal('aes-256-gcm.sealed', Suite.AES_256_GCM, 1);
  manifest.push({ file: 'aes-256-gcm.sealed', key: 'key', expect: 'ok', description: 'model.safetensors sealed with AES-256-GCM, 4 KiB chunks', tensors });
  await seal('chacha20-poly1305.sealed', Suite.CHACHA20_POLY1305, 2);
  manifest.push({ file: 'chacha20-poly1305.sealed', key: 'key', expect: 'ok', description: 'model.safetensors sealed with ChaCha20-Poly1305, 4 KiB chunks', tensors });

  await seal('padded-payload.sealed', Suite.AES_256_GCM, 4, true);
  manifest.push({ file: 'padded-payload.sealed', key: 'key', expect: 'ok', description: 'model.safetensors sealed with AES-256-GCM and payload padding (Padmé)', tensors });

  const good = readFileSync(join(dir, 'aes-256-gcm.sealed'));
  const variant = (file: string, expect: string, description: string, mutate: (b: Buffer) => Buffer) => {
    writeFileSync(join(dir, file), mutate(Buffer.from(good)));
    manifest.push({ file, key: 'key', expect, description });
  };
  const headerLength = 120 + good[13]!;
  const tableLength = good.readUInt32LE(28);
  const payloadStart = headerLength + tableLength;
  variant('flipped-chunk-bit.sealed', 'ERR_INTEGRITY', 'aes-256-gcm.sealed with bit 0 of the first ciphertext byte of chunk 1 flipped', (b) => {
    b[payloadStart + 4096 + 16]! ^= 1;
    return b;
  });
  variant('flipped-table-bit.sealed', 'ERR_INTEGRITY', 'aes-256-gcm.sealed with one bit of the sealed table flipped', (b) => {
    b[headerLength + 5]! ^= 0x10;
    return b;
  });
  variant('truncated.sealed', 'ERR_TRUNCATED', 'aes-256-gcm.sealed cut at the start of its last chunk', (b) => b.subarray(0, payloadStart + 2 * (4096 + 16)));
  variant('swapped-chunks.sealed', 'ERR_INTEGRITY', 'aes-256-gcm.sealed with chunks 0 and 1 exchanged', (b) => {
    const c0 = Buffer.from(b.subarray(payloadStart, payloadStart + 4112));
    const c1 = Buffer.from(b.subarray(payloadStart + 4112, payloadStart + 8224));
    c1.copy(b, payloadStart);
    c0.copy(b, payloadStart + 4112);
    return b;
  });
  variant('version-2.sealed', 'ERR_UNSUPPORTED_VERSION', 'aes-256-gcm.sealed with the version field set to 2', (b) => {
    b.writeUInt16LE(2, 8);
    return b;
  });
  variant('nonzero-table-padding.sealed', 'ERR_FORMAT', 'aes-256-gcm.sealed with the last byte of the table padding set to 1, sealed again under the right key (a broken sealer)', (b) => {
    const { header } = parseHeader(b);
    const keys = deriveFileKeys(nodeBackend, VECTOR_KEY, header);
    const aad = nodeBackend.sha256().update(b.subarray(0, headerLength)).digest();
    const plain = nodeBackend.aeadOpen(header.suite, keys.tableKey, TABLE_NONCE, aad, b.subarray(headerLength, payloadStart));
    plain[plain.length - 1] = 1;
    b.set(nodeBackend.aeadSeal(header.suite, keys.tableKey, TABLE_NONCE, aad, plain), headerLength);
    keys.destroy();
    return b;
  });
  writeFileSync(join(dir, 'other-key.sealed'), good);
  manifest.push({ file: 'other-key.sealed', key: 'other_key', expect: 'ERR_KEY_MISMATCH', description: 'aes-256-gcm.sealed opened with the other key' });

  // A sharded model: two shards and an index.
  const src = join(dir, 'sharded-source');
  mkdirSync(src, { recursive: true });
  const half = [MODEL.slice(0, 3), MODEL.slice(3)];
  const weightMap: Record<string, string> = {};
  half.forEach((ts, i) => {
    const f = `model-0000${i + 1}-of-00002.safetensors`;
    const built = buildSafetensors(ts.map((t) => ({ ...t, data: data.get(t.name)! })));
    writeFileSync(join(src, f), built.bytes);
    for (const t of ts) weightMap[t.name] = f;
  });
  writeFileSync(join(src, 'model.safetensors.index.json'), `${JSON.stringify({ metadata: { total_size: good.length }, weight_map: weightMap }, null, 2)}\n`);
  const shardedOptions: SealOptions = { dataKey: VECTOR_KEY, keyId: 'vector-key-1', chunkSize: 4096, overwrite: true };
  await sealModelDirectoryResolved(src, join(dir, 'sharded'), resolveSealOptions(shardedOptions, fixedRandom(3), engine));
  manifest.push({ file: 'sharded', key: 'key', expect: 'ok', description: 'sharded-source/ sealed as a folder of 2 sealed shards and a sealed index', tensors: tensors.map((t) => t) });

  const keys = { key: Buffer.from(VECTOR_KEY).toString('hex'), other_key: Buffer.from(VECTOR_OTHER_KEY).toString('hex') };
  writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify({ keys, vectors: manifest }, null, 2)}\n`);
  return { manifest };
}
