// `seal --force` replaces only what the sealer wrote: never the input (by path, symlink, hard link
// or a folder that holds it), never an unrelated file or folder, and always atomically.
import { existsSync, linkSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { sealFile } from '../../src/seal/seal-file.js';
import { IoError } from '../../src/errors.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir();

const run = runCli;

const keyPath = join(dir, 'k.key');
const input = join(dir, 'm.safetensors');
writeSafetensors(input, [{ name: 'w', dtype: 'F32', shape: [5000] }]);
const inputBytes = readFileSync(input);
const work = join(dir, 'work');
mkdirSync(work);
const sharded = makeShardedModel(work, 'sharded').path;
const unrelated = join(work, 'notes.txt');
writeFileSync(unrelated, 'not ours');

/** Every file under `d`, with its bytes: what must survive a refused command unchanged. */
function snapshot(d: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of readdirSync(d, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) m.set(join(e.parentPath, e.name), readFileSync(join(e.parentPath, e.name)).toString('hex'));
  }
  return m;
}

function noPartials(d: string): void {
  expect(readdirSync(d, { recursive: true }).map(String).filter((n) => /\.(partial|old)-/.test(n))).toEqual([]);
}

describe('seal --force replaces only sealed output', () => {
  it('makes a key', async () => {
    expect((await run('keygen', '-o', keyPath, '--id', 'out-test')).code).toBe(0);
  });

  it('refuses a sharded seal into a folder holding the input (seal ./sharded -o . --force) and deletes nothing', async () => {
    const before = snapshot(work);
    const r = await run('seal', sharded, '-o', work, '--key', keyPath, '--force');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^error ERR_INVALID_ARGUMENT: the output .* contains the input/);
    expect(snapshot(work)).toEqual(before);
    noPartials(dir);
  });

  it('refuses the input folder itself, a folder inside it, and either through a symlink', async () => {
    const before = snapshot(work);
    const alias = join(dir, 'alias');
    symlinkSync(sharded, alias);
    for (const out of [sharded, join(sharded, 'sealed'), alias, join(alias, 'sealed')]) {
      const r = await run('seal', sharded, '-o', out, '--key', keyPath, '--force');
      expect(r.code, out).toBe(2);
      expect(r.err, out).toMatch(/ERR_INVALID_ARGUMENT: the output .* (is|is inside) the input/);
    }
    expect(snapshot(work)).toEqual(before);
    expect(existsSync(join(sharded, 'sealed'))).toBe(false);
    noPartials(dir);
  });

  it('refuses a single-file seal onto its own input, by path, symlink or hard link', async () => {
    const sym = join(dir, 'sym.safetensors');
    const hard = join(dir, 'hard.safetensors');
    symlinkSync(input, sym);
    linkSync(input, hard);
    for (const out of [input, sym, hard]) {
      const r = await run('seal', input, '-o', out, '--key', keyPath, '--force');
      expect(r.code, out).toBe(2);
      expect(r.err, out).toMatch(/^error ERR_INVALID_ARGUMENT: the output .* is the input/);
      expect(readFileSync(input).equals(inputBytes)).toBe(true);
    }
    // And the input reached through a symlink, sealed onto its real path.
    expect((await run('seal', sym, '-o', input, '--key', keyPath, '--force')).code).toBe(2);
    expect(readFileSync(input).equals(inputBytes)).toBe(true);
    noPartials(dir);
  });

  it('refuses to replace an unrelated file or folder, even with --force', async () => {
    const before = snapshot(work);
    const f = await run('seal', input, '-o', unrelated, '--key', keyPath, '--force');
    expect(f.code).toBe(3);
    expect(f.err).toMatch(/notes\.txt exists and is not a sealed model file: --force replaces only sealed output/);
    const other = join(work, 'other');
    mkdirSync(other);
    writeFileSync(join(other, 'keep.sealed'), 'looks sealed by name only');
    const d = await run('seal', sharded, '-o', other, '--key', keyPath, '--force');
    expect(d.code).toBe(3);
    expect(d.err).toMatch(/is not a sealed model folder \(it holds keep\.sealed/);
    expect(readFileSync(join(other, 'keep.sealed'), 'utf8')).toBe('looks sealed by name only');
    const folderForFile = await run('seal', input, '-o', other, '--key', keyPath, '--force');
    expect(folderForFile.code).toBe(3);
    const expected = new Map(before).set(join(other, 'keep.sealed'), Buffer.from('looks sealed by name only').toString('hex'));
    expect(snapshot(work)).toEqual(expected);
    noPartials(dir);
  });

  it('refuses to replace a folder of sealed shards that is not one sealed model (several models, or no index)', async () => {
    const a = join(dir, 'a.sealed');
    const b = join(dir, 'b.sealed');
    const otherModel = makeShardedModel(work, 'other-model', 1).path;
    expect((await run('seal', sharded, '-o', a, '--key', keyPath)).code).toBe(0);
    expect((await run('seal', otherModel, '-o', b, '--key', keyPath)).code).toBe(0);
    // A folder collecting sealed shards of two models: the owner's archive, not one output.
    const mixed = join(dir, 'mixed');
    mkdirSync(mixed);
    for (const n of readdirSync(a)) writeFileSync(join(mixed, n), readFileSync(join(a, n)));
    const shardOfB = readdirSync(b).find((n) => !n.includes('index'))!;
    writeFileSync(join(mixed, `b-${shardOfB}`), readFileSync(join(b, shardOfB)));
    const beforeMixed = snapshot(mixed);
    const r = await run('seal', sharded, '-o', mixed, '--key', keyPath, '--force');
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/is not a sealed model folder \(b-.* is a shard of another sealed model/);
    expect(snapshot(mixed)).toEqual(beforeMixed);
    // Sealed shards whose index is gone.
    const orphans = join(dir, 'orphans');
    mkdirSync(orphans);
    for (const n of readdirSync(b).filter((n) => !n.includes('index'))) writeFileSync(join(orphans, n), readFileSync(join(b, n)));
    const beforeOrphans = snapshot(orphans);
    const o = await run('seal', sharded, '-o', orphans, '--key', keyPath, '--force');
    expect(o.code).toBe(3);
    expect(o.err).toMatch(/no sealed index/);
    expect(snapshot(orphans)).toEqual(beforeOrphans);
    noPartials(dir);
  });

  it('the library refuses the same: sealFile with overwrite keeps a file it did not write', async () => {
    await expect(sealFile(input, unrelated, { dataKey: TEST_KEY, keyId: 'k', overwrite: true })).rejects.toBeInstanceOf(IoError);
    expect(readFileSync(unrelated, 'utf8')).toBe('not ours');
  });

  it('replaces a sealed file and a sealed model folder, leaving no partial or old copy', async () => {
    const out = join(dir, 'm.sealed');
    expect((await run('seal', input, '-o', out, '--key', keyPath)).code).toBe(0);
    const first = readFileSync(out);
    const again = await run('seal', input, '-o', out, '--key', keyPath, '--force');
    expect(again.code, again.err).toBe(0);
    expect(readFileSync(out).equals(first)).toBe(false); // fresh salt: a new file
    expect((await run('verify', out, '--key', keyPath)).code).toBe(0);

    const outDir = join(dir, 'sharded.sealed');
    expect((await run('seal', sharded, '-o', outDir, '--key', keyPath)).code).toBe(0);
    const names = readdirSync(outDir).sort();
    const firstIndex = readFileSync(join(outDir, 'model.safetensors.index.json.sealed'));
    const r = await run('seal', sharded, '-o', outDir, '--key', keyPath, '--force');
    expect(r.code, r.err).toBe(0);
    expect(readdirSync(outDir).sort()).toEqual(names);
    expect(readFileSync(join(outDir, 'model.safetensors.index.json.sealed')).equals(firstIndex)).toBe(false);
    expect((await run('verify', outDir, '--key', keyPath)).code).toBe(0);
    // An empty folder holds nothing to lose: --force may fill it.
    const empty = join(dir, 'empty.sealed');
    mkdirSync(empty);
    expect((await run('seal', sharded, '-o', empty, '--key', keyPath, '--force')).code).toBe(0);
    noPartials(dir);
  });

  it('names a missing output folder as such, not the temporary file', async () => {
    const r = await run('seal', input, '-o', join(dir, 'no', 'such', 'm.sealed'), '--key', keyPath);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/the output folder .*\/no\/such does not exist/);
    expect(r.err).not.toMatch(/partial/);
    const s = await run('seal', sharded, '-o', join(dir, 'no', 'such'), '--key', keyPath);
    expect(s.code).toBe(3);
    expect(s.err).toMatch(/the output folder .*\/no does not exist/);
  });
});
