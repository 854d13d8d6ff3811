/**
 * `sealed-tensors demo`: the whole owner-side story on embedded defaults, in a temporary folder.
 * Generates a small model, seals it, shows what an outsider sees, verifies it, then tampers with
 * one byte and shows the rejection. Nothing here is faked: it runs the same code as the CLI.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeNewKeyFile } from '../keys/key-file.js';
import { sealFile } from '../seal/seal-file.js';
import { SealedModelReader } from '../reader/sealed-model.js';
import { SealedTensorsError } from '../errors.js';
import { wipe } from '../bytes.js';
import { publicView } from '../cli/inspect.js';

export interface DemoIo {
  say(line: string): void;
}

/** A small transformer-shaped safetensors file with deterministic contents. */
export function demoSafetensors(): Uint8Array {
  const layers = 4;
  const hidden = 256;
  const specs: [string, string, number[], number][] = [['model.embed_tokens.weight', 'BF16', [4096, hidden], 2]];
  for (let l = 0; l < layers; l++) {
    specs.push([`model.layers.${l}.self_attn.qkv_proj.weight`, 'BF16', [3 * hidden, hidden], 2]);
    specs.push([`model.layers.${l}.mlp.up_proj.weight`, 'F16', [4 * hidden, hidden], 2]);
    specs.push([`model.layers.${l}.input_layernorm.weight`, 'F32', [hidden], 4]);
  }
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', generator: 'sealed-tensors demo' } };
  let offset = 0;
  for (const [name, dtype, shape, size] of specs) {
    const n = shape.reduce((a, b) => a * b, size);
    header[name] = { dtype, shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const jsonBytes = Buffer.from(json);
  const out = Buffer.alloc(8 + jsonBytes.length + offset);
  out.writeBigUInt64LE(BigInt(jsonBytes.length), 0);
  jsonBytes.copy(out, 8);
  // Counter-mode SHA-256 stream: looks like weights to a compressor, reproducible for the demo.
  for (let at = 8 + jsonBytes.length, i = 0; at < out.length; at += 32, i++) {
    createHash('sha256').update(`demo ${i}`).digest().copy(out, at);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

export async function runDemo(io: DemoIo, keep = false): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-tensors-demo-'));
  try {
    const model = join(dir, 'model.safetensors');
    const sealedPath = join(dir, 'model.sealed');
    const keyPath = join(dir, 'model.key');
    const plain = demoSafetensors();
    await writeFile(model, plain);
    io.say(`1. made a demo model: ${model} (${(plain.length / 2 ** 20).toFixed(1)} MiB, 13 tensors)`);

    const key = await writeNewKeyFile(keyPath, 'demo-key');
    io.say(`2. made a data key "${key.id}" in ${keyPath} (mode 0600)`);

    const started = performance.now();
    await sealFile(model, sealedPath, { dataKey: key.key, keyId: key.id });
    io.say(`3. sealed it with AES-256-GCM in ${(performance.now() - started).toFixed(0)} ms -> ${sealedPath}`);

    const view = await publicView(sealedPath);
    const sealedBytes = await readFile(sealedPath);
    // Searched as the plaintext header spells them: a bare 4-byte "BF16" turns up by chance in
    // about one 5.7 MB ciphertext in 750.
    const leaks = ['model.layers', 'embed_tokens', '"dtype":"BF16"'].filter((s) => sealedBytes.includes(Buffer.from(s)));
    io.say(`4. what a thief with the file sees: kind=${view['kind']} suite=${view['suite']} key id=${view['keyId']} payload=${view['payloadLength']} bytes;`);
    io.say(`   tensor names or dtypes found in the sealed bytes: ${leaks.length === 0 ? 'none' : leaks.join(', ')}`);

    const reader = await SealedModelReader.open(sealedPath, key.key);
    try {
      const checks = await reader.verify();
      const n = checks.reduce((a, s) => a + s.tensors.length, 0);
      io.say(`5. with the key: ${n} tensors decrypted, every chunk authenticated and every digest checked`);
      const first = checks[0]!.tensors[0]!;
      io.say(`   e.g. ${first.name} ${first.dtype}${JSON.stringify(first.shape)} sha256=${first.sha256.slice(0, 16)}...`);
    } finally {
      await reader.close();
    }

    sealedBytes[sealedBytes.length - 1000]! ^= 0x01;
    await writeFile(sealedPath, sealedBytes);
    try {
      const r = await SealedModelReader.open(sealedPath, key.key);
      try {
        await r.verify();
      } finally {
        await r.close();
      }
      throw new Error('demo: a tampered file was accepted');
    } catch (err) {
      if (!(err instanceof SealedTensorsError)) throw err;
      io.say(`6. flipped one bit of the sealed file: rejected with ${err.code}`);
    } finally {
      wipe(key.key);
    }
    io.say(keep ? `files kept in ${dir}` : 'done; the temporary folder is removed.');
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}
