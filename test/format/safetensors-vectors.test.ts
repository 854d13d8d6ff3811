import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sealFile } from '../../src/seal/seal-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { SealedTensorsError } from '../../src/errors.js';
import { buildSafetensorsVectors, type SafetensorsVector } from '../vectors/safetensors/build.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

// Whatever the reference safetensors reader loads, `seal` seals; whatever it rejects, `seal`
// rejects with ERR_SAFETENSORS naming the file. test/vectors/safetensors/README.md has the rules.
const VECTORS = new URL('../vectors/safetensors/', import.meta.url).pathname;
if (process.env['UPDATE_SAFETENSORS_VECTORS'] === '1') buildSafetensorsVectors(VECTORS);
const manifest = JSON.parse(readFileSync(join(VECTORS, 'manifest.json'), 'utf8')) as SafetensorsVector[];
const dir = tempDir();
const fresh = tempDir();

describe('safetensors files as the reference reader sees them', () => {
  for (const v of manifest) {
    it(`${v.file}: ${v.expect} (${v.rule})`, async () => {
      const input = join(VECTORS, v.file);
      const output = join(dir, `${v.file}.sealed`);
      let outcome = 'ok';
      try {
        await sealFile(input, output, { dataKey: TEST_KEY, keyId: 'k', chunkSize: 4096 });
      } catch (err) {
        if (!(err instanceof SealedTensorsError)) throw err;
        outcome = err.code;
        expect(err.message).toContain(input);
      }
      expect(outcome).toBe(v.expect);
      if (outcome !== 'ok') return;
      const r = await SealedFileReader.open(output, TEST_KEY);
      try {
        const got = [];
        for (const t of r.tensors()) {
          const data = await r.readTensor(t.name);
          got.push({ name: t.name, dtype: t.dtype, shape: t.shape, sha256: createHash('sha256').update(data).digest('hex') });
        }
        expect(got).toEqual(v.tensors);
        expect(r.metadata).toEqual(v.metadata);
      } finally {
        await r.close();
      }
    });
  }

  it('every committed file is in the manifest, and rebuilding gives the committed bytes', () => {
    const rebuilt = buildSafetensorsVectors(fresh);
    expect(rebuilt).toEqual(manifest);
    const committed = readdirSync(VECTORS).filter((f) => f.endsWith('.safetensors')).sort();
    expect(committed).toEqual(manifest.map((v) => v.file).sort());
    for (const f of committed) expect(readFileSync(join(fresh, f)).equals(readFileSync(join(VECTORS, f))), f).toBe(true);
  });
});
