import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { loadAddon } from '../../src/native/addon.js';
import { resolveSealOptions, sealFileResolved, type SealEngine } from '../../src/seal/seal-file.js';
import { SealedFileReader, type ReaderOptions } from '../../src/reader/sealed-file.js';
import { MemorySource } from '../../src/reader/source.js';
import { SealedTensorsError } from '../../src/errors.js';
import { parseHeader } from '../../src/format/header.js';
import { TABLE_LENGTH_PREFIX } from '../../src/format/constants.js';
import { nodeBackend } from '../../src/crypto/backend.js';
import { deriveFileKeys } from '../../src/crypto/file-keys.js';
import { TABLE_NONCE } from '../../src/crypto/stream.js';
import { writeSafetensors, type TensorSpec } from './safetensors.js';

export const SMALL_MODEL: TensorSpec[] = [
  { name: 'embed.weight', dtype: 'F32', shape: [16, 40] },
  { name: 'layer.0.bias', dtype: 'BF16', shape: [1500] },
  { name: 'head', dtype: 'U8', shape: [456] },
];

/** Counter-based bytes standing in for the CSPRNG (salts, bundle ids): tests only, so two sealers can be compared. */
export function fixedRandom(seed: number): (n: number) => Uint8Array {
  let counter = 0;
  return (n) => {
    const out = new Uint8Array(n);
    for (let at = 0; at < n; at += 32) {
      const block = createHash('sha256').update(`sealed-tensors test random ${seed} ${counter++}`).digest();
      out.set(block.subarray(0, Math.min(32, n - at)), at);
    }
    return out;
  };
}

let sealSeed = 0;

function addonLoads(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

/**
 * Seal a small model (several chunks of 4 KiB) and return the sealed bytes and the plaintext tensors.
 * By default it is sealed by both sealers, native and TypeScript, with the same salt and bundle id,
 * and the two files must be byte-identical: every test on the result holds for both. Without the
 * addon (not built, or SEALED_TENSORS_NATIVE=0) only the TypeScript sealer runs.
 */
export async function sealSmall(dir: string, name: string, key: Uint8Array, tensors = SMALL_MODEL, chunkSize = 4096, engine: SealEngine | 'both' = 'both') {
  const input = join(dir, `${name}.safetensors`);
  const output = join(dir, `${name}.sealed`);
  const data = writeSafetensors(input, tensors, { format: 'pt' });
  const seed = ++sealSeed;
  const options = (e: SealEngine) => resolveSealOptions({ dataKey: key, keyId: 'test-key', chunkSize, overwrite: true }, fixedRandom(seed), e);
  const both = engine === 'both' && addonLoads();
  await sealFileResolved(input, output, options(engine === 'both' ? (both ? 'native' : 'typescript') : engine));
  const sealed = new Uint8Array(readFileSync(output));
  if (both) {
    await sealFileResolved(input, output, options('typescript'));
    if (Buffer.compare(sealed, readFileSync(output)) !== 0) throw new Error(`the native and TypeScript sealers wrote different bytes for ${name}`);
  }
  return { sealed, data, path: output };
}

/**
 * Open and fully verify sealed bytes. Returns the error code, or 'ok'. Checks that every byte the
 * reader handed out before failing equals the original: nothing unauthenticated escapes.
 */
export async function openOutcome(bytes: Uint8Array, key: Uint8Array, original: Map<string, Uint8Array>, options: ReaderOptions = {}): Promise<string> {
  let reader: SealedFileReader | null = null;
  try {
    reader = await SealedFileReader.open(new MemorySource(bytes), key, options);
    for await (const { info, data } of reader.entries()) {
      const want = original.get(info.name);
      if (!want || Buffer.compare(Buffer.from(want), Buffer.from(data)) !== 0) return `HANDED_OUT_WRONG_DATA:${info.name}`;
    }
    await reader.verify();
    return 'ok';
  } catch (err) {
    if (err instanceof SealedTensorsError) return err.code;
    throw err;
  } finally {
    await reader?.close();
  }
}

/**
 * File offsets [start, end) of the sealed table's zero padding. Bit-flip sweeps flip one bit per
 * byte there instead of all eight: it is ciphertext of known zeros under the table's one tag, and
 * the 4 KiB minimum table would otherwise multiply the cases of a small file several times over.
 */
export function tablePaddingRange(sealed: Uint8Array, key: Uint8Array): { start: number; end: number } {
  const { header, length } = parseHeader(sealed);
  const keys = deriveFileKeys(nodeBackend, key, header);
  try {
    const aad = nodeBackend.sha256().update(sealed.subarray(0, length)).digest();
    const plain = nodeBackend.aeadOpen(header.suite, keys.tableKey, TABLE_NONCE, aad, sealed.subarray(length, length + header.tableLength));
    const jsonLength = new DataView(plain.buffer, plain.byteOffset).getUint32(0, true);
    return { start: length + TABLE_LENGTH_PREFIX + jsonLength, end: length + plain.length };
  } finally {
    keys.destroy();
  }
}

/** The bits a sweep flips at `pos`: all eight, or one (rotating) inside the table padding. */
export function bitsToFlip(pos: number, padding: { start: number; end: number }): number[] {
  return pos >= padding.start && pos < padding.end ? [pos % 8] : [0, 1, 2, 3, 4, 5, 6, 7];
}
