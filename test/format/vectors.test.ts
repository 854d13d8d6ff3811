import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SealedModelReader } from '../../src/reader/sealed-model.js';
import { SealedTensorsError } from '../../src/errors.js';
import { buildVectors, type VectorExpectation } from '../vectors/format/build.js';
import { tempDir } from '../helpers/tmp.js';

const VECTORS = new URL('../vectors/format/', import.meta.url).pathname;
// `npm run vectors:format` rewrites the committed vectors (then review the diff: it changes the format's pinned bytes).
if (process.env['UPDATE_FORMAT_VECTORS'] === '1') await buildVectors(VECTORS);
const manifest = JSON.parse(readFileSync(join(VECTORS, 'manifest.json'), 'utf8')) as {
  keys: Record<string, string>;
  vectors: VectorExpectation[];
};

function filesUnder(dir: string, prefix = ''): string[] {
  return readdirSync(dir).flatMap((n) =>
    statSync(join(dir, n)).isDirectory() ? filesUnder(join(dir, n), `${prefix}${n}/`) : [`${prefix}${n}`],
  );
}

describe('committed format vectors', () => {
  for (const v of manifest.vectors) {
    it(`${v.file}: expect ${v.expect}`, async () => {
      const key = new Uint8Array(Buffer.from(manifest.keys[v.key]!, 'hex'));
      for (const backend of ['node', 'noble'] as const) {
        let outcome = 'ok';
        let tensors: VectorExpectation['tensors'] = [];
        try {
          const m = await SealedModelReader.open(join(VECTORS, v.file), key, { backend });
          try {
            const checks = await m.verify();
            tensors = checks.flatMap((s) => s.tensors).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.byteLength, sha256: t.sha256 }));
            for (const t of tensors) {
              const bytes = await m.readTensor(t.name);
              expect(createHash('sha256').update(bytes).digest('hex')).toBe(t.sha256);
            }
          } finally {
            await m.close();
          }
        } catch (err) {
          if (!(err instanceof SealedTensorsError)) throw err;
          outcome = err.code;
        }
        expect(outcome, backend).toBe(v.expect);
        if (v.expect === 'ok') expect(tensors).toEqual(v.tensors);
      }
    });
  }

  // Both sealers: the native one (the default where the addon loads) and the TypeScript one.
  it.each(['native', 'typescript'] as const)('rebuilding the vectors from their sources with the %s sealer gives the committed bytes exactly', async (engine) => {
    const dir = tempDir();
    await buildVectors(dir, engine);
    const committed = filesUnder(VECTORS).filter((f) => !f.endsWith('.md') && !f.endsWith('.ts')).sort();
    expect(filesUnder(dir).sort()).toEqual(committed);
    for (const f of committed) expect(readFileSync(join(dir, f)).equals(readFileSync(join(VECTORS, f))), f).toBe(true);
  });
});
