import { chmodSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { tempDir } from '../helpers/tmp.js';

const dir = tempDir();

const run = runCli;

const MARKER = new TextEncoder().encode('PLAINTEXT-MARKER'.repeat(64));
const tensors = [
  { name: 'secret.architecture.layer_17.q_proj', dtype: 'U8' as const, shape: [MARKER.length], data: MARKER },
  { name: 'w', dtype: 'F32' as const, shape: [3000] },
];
const input = join(dir, 'model.safetensors');
const data = writeSafetensors(input, tensors, { format: 'pt' });
const keyPath = join(dir, 'model.key');

describe('sealed-tensors CLI', () => {
  it('prints help for every command and exits 0', async () => {
    for (const cmd of [[], ['keygen'], ['seal'], ['inspect'], ['verify']]) {
      const r = await run(...cmd, '--help');
      expect(r.code, cmd.join(' ')).toBe(0);
      expect(r.out).toMatch(/Usage: sealed-tensors/);
    }
  });

  it('keygen writes a 0600 key file and never overwrites it', async () => {
    const r = await run('keygen', '-o', keyPath, '--id', 'demo-key-1', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ id: 'demo-key-1', path: keyPath });
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    const before = readFileSync(keyPath);
    const again = await run('keygen', '-o', keyPath);
    expect(again.code).toBe(3);
    expect(again.err).toMatch(/^error ERR_KEY_FILE: .*already exists/);
    expect(readFileSync(keyPath).equals(before)).toBe(true);
  });

  it('seals, and the sealed file holds no plaintext and no tensor name; no temp file is left', async () => {
    const r = await run('seal', input, '-o', join(dir, 'model.sealed'), '--key', keyPath, '--chunk-size', '4KiB');
    expect(r.code, r.err).toBe(0);
    const sealed = readFileSync(join(dir, 'model.sealed'));
    expect(sealed.includes(Buffer.from('PLAINTEXT-MARKER'))).toBe(false);
    expect(sealed.includes(Buffer.from('secret.architecture'))).toBe(false);
    expect(sealed.includes(Buffer.from(data.get('w')!.subarray(0, 16)))).toBe(false);
    expect(readdirSync(dir).filter((n) => n.includes('partial'))).toEqual([]);
    const again = await run('seal', input, '-o', join(dir, 'model.sealed'), '--key', keyPath);
    expect(again.code).toBe(3);
    expect(again.err).toMatch(/already exists.*--force/);
  });

  it('inspect without a key shows the public header and no tensor name', async () => {
    const r = await run('inspect', join(dir, 'model.sealed'), '--json');
    expect(r.code).toBe(0);
    const view = JSON.parse(r.out).files[0];
    expect(view).toMatchObject({ version: 1, suite: 'aes-256-gcm', kind: 'model', keyId: 'demo-key-1', chunkSize: 4096 });
    expect(r.out).not.toMatch(/secret|"w"|F32/);
    const human = await run('inspect', join(dir, 'model.sealed'));
    expect(human.out).not.toMatch(/secret|F32/);
  });

  it('inspect with a key shows the tensor table', async () => {
    const r = await run('inspect', join(dir, 'model.sealed'), '--key', keyPath, '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.tensors.map((t: { name: string }) => t.name)).toEqual(tensors.map((t) => t.name));
    expect(j.metadata).toEqual({ format: 'pt' });
  });

  it('seal --json lists every tensor with the plain SHA-256 of its source bytes (computed in the sealing pass)', async () => {
    const r = await run('seal', input, '-o', join(dir, 'json.sealed'), '--key', keyPath, '--chunk-size', '4KiB', '--json');
    expect(r.code, r.err).toBe(0);
    const [file] = JSON.parse(r.out).files;
    expect(file.tensors).toEqual(tensors.map((t) => ({ name: t.name, sha256: createHash('sha256').update(data.get(t.name)!).digest('hex') })));
  });

  it('verify --json lists every tensor with the plain SHA-256 of the original bytes', async () => {
    const r = await run('verify', join(dir, 'model.sealed'), '--key', keyPath, '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.verified).toBe(true);
    expect(j.tensors).toEqual(
      tensors.map((t) => ({
        name: t.name,
        dtype: t.dtype,
        shape: t.shape,
        byteLength: data.get(t.name)!.length,
        digest: expect.stringMatching(/^[0-9a-f]{64}$/),
        sha256: createHash('sha256').update(data.get(t.name)!).digest('hex'),
      })),
    );
  });

  it('verify exits 1 with ERR_INTEGRITY on a tampered file and ERR_KEY_MISMATCH with another key', async () => {
    const bad = readFileSync(join(dir, 'model.sealed'));
    bad[bad.length - 100]! ^= 4;
    writeFileSync(join(dir, 'bad.sealed'), bad);
    const r = await run('verify', join(dir, 'bad.sealed'), '--key', keyPath, '--json');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error ERR_INTEGRITY: .*chunk \d+ at offset \d+ failed authentication/);
    expect(JSON.parse(r.out)).toMatchObject({ verified: false, error: { code: 'ERR_INTEGRITY' } });

    await run('keygen', '-o', join(dir, 'other.key'));
    const w = await run('verify', join(dir, 'model.sealed'), '--key', join(dir, 'other.key'));
    expect(w.code).toBe(1);
    expect(w.err).toMatch(/^error ERR_KEY_MISMATCH: /);
  });

  it('refuses a key file readable by others, a missing file, and bad options, with the documented exit codes', async () => {
    const loose = join(dir, 'loose.key');
    writeFileSync(loose, readFileSync(keyPath));
    chmodSync(loose, 0o644);
    const r = await run('verify', join(dir, 'model.sealed'), '--key', loose);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/ERR_KEY_FILE: .*chmod 600/);
    expect((await run('verify', join(dir, 'missing.sealed'), '--key', keyPath)).code).toBe(3);
    const usage = await run('seal', input, '-o', join(dir, 'x.sealed'), '--key', keyPath, '--chunk-size', '3000');
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/^error ERR_INVALID_ARGUMENT: chunk size must be a multiple of 4 KiB/);
    const unknown = await run('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/^error ERR_INVALID_ARGUMENT: /);
    expect(existsSync(join(dir, 'x.sealed'))).toBe(false);
  });

  it('seals a sharded folder and verifies it', async () => {
    const src = join(dir, 'sharded');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(src);
    writeSafetensors(join(src, 'model-00001-of-00002.safetensors'), [{ name: 'a', dtype: 'F16', shape: [2000] }]);
    writeSafetensors(join(src, 'model-00002-of-00002.safetensors'), [{ name: 'b', dtype: 'I32', shape: [10] }]);
    writeFileSync(
      join(src, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: 4040 }, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }),
    );
    expect((await run('seal', src, '-o', join(dir, 'sharded.sealed'), '--key', keyPath, '--suite', 'chacha20-poly1305')).code).toBe(0);
    const v = await run('verify', join(dir, 'sharded.sealed'), '--key', keyPath, '--json');
    expect(v.code, v.err).toBe(0);
    expect(JSON.parse(v.out)).toMatchObject({ verified: true, sharded: true, suite: 'chacha20-poly1305', tensorCount: 2 });
    const insp = await run('inspect', join(dir, 'sharded.sealed'), '--json');
    expect(JSON.parse(insp.out).files.map((f: { kind: string }) => f.kind)).toEqual(['shard', 'shard', 'index']);
    expect(insp.out).not.toMatch(/"a"|"b"/);
  });
});
