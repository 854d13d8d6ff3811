// Test models for the benchmark, made on the fly: a safetensors file of `size` bytes of tensor data
// (random, so nothing compresses) and its sealed twin, sealed by the library's own sealer (dist/).
import { createWriteStream, existsSync, statSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import { join } from 'node:path';

const MiB = 1 << 20;

/** Tensor list: mostly 16 MiB matrices, plus a few small ones and one that straddles chunks oddly. */
export function tensorPlan(size) {
  const tensors = [];
  let left = size;
  tensors.push({ name: 'embed.bias', dtype: 'F32', shape: [4099] });
  left -= 4099 * 4;
  let i = 0;
  while (left > 16 * MiB + 4096) {
    tensors.push({ name: `layers.${i++}.weight`, dtype: 'F32', shape: [4096, 1024] });
    left -= 16 * MiB;
  }
  tensors.push({ name: 'head.weight', dtype: 'U8', shape: [left] });
  return tensors;
}

const sizes = { F32: 4, U8: 1 };

export async function writeSafetensors(path, size) {
  const tensors = tensorPlan(size);
  const header = {};
  let off = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, sizes[t.dtype]);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const out = createWriteStream(path);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  out.write(len);
  out.write(json);
  const block = Buffer.alloc(8 * MiB);
  for (let done = 0; done < off; done += block.length) {
    const n = Math.min(block.length, off - done);
    randomFillSync(block, 0, n);
    if (!out.write(Buffer.from(block.subarray(0, n)))) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return { tensors, payload: off };
}

/** Makes (or reuses) `<dir>/model-<size>.safetensors` and its `.sealed` twin. */
export async function makeModel(dir, size, dataKey, suite = 1) {
  const plain = join(dir, `model-${size}.safetensors`);
  const sealed = join(dir, `model-${size}-s${suite}.sealed`);
  if (!existsSync(plain)) await writeSafetensors(plain, size);
  if (!existsSync(sealed)) {
    const { sealFile } = await import('../dist/seal/seal-file.js');
    await sealFile(plain, sealed, { dataKey: new Uint8Array(dataKey), keyId: 'bench', suite, overwrite: true });
  }
  return { plain, sealed, plainSize: statSync(plain).size, sealedSize: statSync(sealed).size };
}
