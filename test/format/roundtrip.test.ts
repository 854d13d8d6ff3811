import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveSealOptions, sealFile, sealFileResolved } from '../../src/seal/seal-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { MemorySource } from '../../src/reader/source.js';
import { DTYPE_SIZES, Suite, type Dtype } from '../../src/format/constants.js';
import { createHash } from 'node:crypto';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir();
const CS = 4096;

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

async function sealAndCheck(tensors: TensorSpec[], opts: { suite?: 1 | 2; chunkSize?: number; metadata?: Record<string, string> } = {}) {
  const id = Math.random().toString(36).slice(2);
  const input = join(dir, `${id}.safetensors`);
  const output = join(dir, `${id}.sealed`);
  const data = writeSafetensors(input, tensors, opts.metadata);
  await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'test-key', suite: opts.suite ?? Suite.AES_256_GCM, chunkSize: opts.chunkSize ?? CS });
  const sealed = readFileSync(output);
  for (const backend of ['node', 'noble'] as const) {
    const r = await SealedFileReader.open(new MemorySource(sealed), TEST_KEY, { backend });
    expect(r.tensors().map((t) => t.name)).toEqual(tensors.map((t) => t.name));
    expect(r.metadata).toEqual(opts.metadata ?? null);
    for (const t of tensors) expect(await r.readTensor(t.name)).toEqual(data.get(t.name));
    const streamed = [];
    for await (const e of r.entries()) streamed.push(e);
    expect(streamed.map((e) => e.info.name)).toEqual(tensors.map((t) => t.name));
    for (const e of streamed) expect(e.data).toEqual(data.get(e.info.name));
    const checks = await r.verify();
    expect(checks.map((c) => c.sha256)).toEqual(tensors.map((t) => sha(data.get(t.name)!)));
    await r.close();
  }
  return { sealed, data };
}

describe('seal then open', () => {
  it('round-trips every dtype with shapes and metadata, both suites, both backends', async () => {
    const dtypes = Object.keys(DTYPE_SIZES) as Dtype[];
    const tensors = dtypes.map((dtype, i) => ({ name: `t.${dtype}`, dtype, shape: [i + 1, 3] }));
    for (const suite of [Suite.AES_256_GCM, Suite.CHACHA20_POLY1305] as const) {
      await sealAndCheck(tensors, { suite, metadata: { format: 'pt', note: 'x' } });
    }
  });

  it.each([0, 1, CS - 1, CS, CS + 1, 2 * CS + 500, 5 * CS])('payload of %i bytes around the chunk size', async (n) => {
    await sealAndCheck([{ name: 'w', dtype: 'U8', shape: [n] }]);
  });

  it('handles empty tensors, scalars and tensors spanning many chunks', async () => {
    await sealAndCheck([
      { name: 'empty-first', dtype: 'F32', shape: [0, 4] },
      { name: 'scalar', dtype: 'F64', shape: [] },
      { name: 'big', dtype: 'F16', shape: [3, CS + 11] },
      { name: 'empty-mid', dtype: 'I8', shape: [0] },
      { name: 'tail', dtype: 'BOOL', shape: [17] },
      { name: 'empty-last', dtype: 'U64', shape: [2, 0] },
    ]);
  });

  it('handles a model with no tensors', async () => {
    await sealAndCheck([]);
  });

  it('writes the same file under both backends given the same randomness', async () => {
    const input = join(dir, 'det.safetensors');
    writeSafetensors(input, [{ name: 'a', dtype: 'F32', shape: [3000] }]);
    const fixed = (n: number) => new Uint8Array(n).fill(7);
    const outs = [];
    for (const backend of ['node', 'noble'] as const) {
      const { nodeBackend } = await import('../../src/crypto/backend.js');
      const { nobleBackend } = await import('../../src/crypto/noble-backend.js');
      const out = join(dir, `det-${backend}.sealed`);
      const options = resolveSealOptions({ dataKey: TEST_KEY, keyId: 'k', chunkSize: CS, backend: backend === 'node' ? nodeBackend : nobleBackend }, fixed);
      await sealFileResolved(input, out, options);
      outs.push(readFileSync(out));
    }
    expect(outs[0]!.equals(outs[1]!)).toBe(true);
  });
});
