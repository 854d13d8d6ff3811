// What a user sees when the command line or an input is wrong: the file named, what it is, what
// to do, and the documented exit code (2 for usage errors).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { tempDir } from '../helpers/tmp.js';

const dir = tempDir();

const run = runCli;

const keyPath = join(dir, 'k.key');
const plain = join(dir, 'm.safetensors');
writeSafetensors(plain, [{ name: 'w', dtype: 'F32', shape: [100] }]);

describe('CLI messages and exit codes', () => {
  it('makes a key', async () => {
    expect((await run('keygen', '-o', keyPath)).code).toBe(0);
  });

  it('seal of a file that is not safetensors names it and says so', async () => {
    const text = join(dir, 'README.txt');
    writeFileSync(text, 'hello world, this is text\n');
    const tiny = join(dir, 'tiny.bin');
    writeFileSync(tiny, 'abc');
    for (const f of [text, tiny]) {
      const r = await run('seal', f, '-o', join(dir, 'x.sealed'), '--key', keyPath);
      expect(r.code, f).toBe(1);
      expect(r.err).toMatch(new RegExp(`^error ERR_SAFETENSORS: ${f.replace(/[.]/g, '\\.')} is not a safetensors file`));
    }
    // A sealed file given to seal again.
    expect((await run('seal', plain, '-o', join(dir, 'm.sealed'), '--key', keyPath)).code).toBe(0);
    const again = await run('seal', join(dir, 'm.sealed'), '-o', join(dir, 'twice.sealed'), '--key', keyPath);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/m\.sealed is already sealed, not a safetensors file/);
  });

  it('verify and inspect of a plaintext model say to seal it first', async () => {
    for (const argv of [['verify', plain, '--key', keyPath], ['inspect', plain], ['verify', plain, '--key', keyPath, '--json']]) {
      const r = await run(...argv);
      expect(r.code, argv.join(' ')).toBe(1);
      expect(r.err).toMatch(/m\.safetensors is a plaintext safetensors file, not a sealed one: seal it first \(sealed-tensors seal /);
    }
    const sharded = makeShardedModel(dir, 'plain-sharded').path;
    const r = await run('verify', sharded, '--key', keyPath);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/plain-sharded holds a plaintext sharded model, not a sealed one: seal it first/);
  });

  it('inspect of an empty folder fails', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const r = await run('inspect', empty);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/^error ERR_NOT_FOUND: .*empty holds no sealed file/);
  });

  it('invalid arguments exit 2: a bad key id, no command, unknown options before missing ones', async () => {
    const id = await run('keygen', '-o', join(dir, 'bad.key'), '--id', 'has spaces!');
    expect(id.code).toBe(2);
    expect(id.err).toMatch(/^error ERR_INVALID_ARGUMENT: key id must be/);

    const none = await run();
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/error ERR_INVALID_ARGUMENT: no command given/);
    const attest = await run('attest');
    expect(attest.code).toBe(2);
    expect(attest.err).toMatch(/error ERR_INVALID_ARGUMENT: 'attest' needs a subcommand/);
    const help = await run('help', 'nosuch');
    expect(help.code).toBe(2);
    expect(help.err).toMatch(/error ERR_INVALID_ARGUMENT: unknown command 'nosuch'/);

    const unknown = await run('seal', '--bogus');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/^error ERR_INVALID_ARGUMENT: unknown option '--bogus'/);
    const missing = await run('seal', plain, '--key', keyPath);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/required option '-o, --output <OUT>' not specified/);
    expect((await run('demo', 'extra')).code).toBe(2);
    expect((await run('verify', plain, '--key', keyPath, '--threads', '0')).code).toBe(2);
    // Help is still success.
    expect((await run('seal', '--help')).code).toBe(0);
    expect((await run('help', 'seal')).code).toBe(0);
  });

  it('the sharded seal summary counts shards without the index', async () => {
    const sharded = makeShardedModel(dir, 'three').path;
    const r = await run('seal', sharded, '-o', join(dir, 'three.sealed'), '--key', keyPath);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/\(3 shards \+ index,/);
  });
});
