import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { SMALL_MODEL } from '../helpers/sealed.js';
import { makeShardedModel } from '../helpers/sharded.js';
import { tempDir } from '../helpers/tmp.js';

async function ok(...argv: string[]): Promise<string> {
  const r = await runCli(...argv);
  expect(r.err, argv.join(' ')).not.toMatch(/^error/m);
  expect(r.code, `${argv.join(' ')}: ${r.err}`).toBe(0);
  return r.out;
}

/** A key file and models sealed under it: one file, one sharded folder. */
async function ownerSide(root: string, id: string): Promise<{ key: string; file: string; folder: string }> {
  const key = join(root, `${id}.key`);
  await ok('keygen', '-o', key, '--id', id);
  writeSafetensors(join(root, `${id}.safetensors`), SMALL_MODEL, { format: 'pt' });
  const file = join(root, `${id}.sealed`);
  await ok('seal', join(root, `${id}.safetensors`), '-o', file, '--key', key, '--chunk-size', '4KiB');
  const plain = makeShardedModel(root, `${id}-sharded`).path;
  const folder = join(root, `${id}-sealed`);
  await ok('seal', plain, '-o', folder, '--key', key, '--chunk-size', '4KiB');
  return { key, file, folder };
}

describe('sealed-tensors broker (CLI)', () => {
  it('round trip: init, key add with real sealed models, list --json, bind, policy set, revoke, audit verify', async () => {
    const root = tempDir('st-broker-cli-');
    const dir = join(root, 'broker');
    const init = await ok('broker', 'init', dir, '--hostname', 'kbs.example');
    expect(init).toContain(`created broker folder ${dir}`);
    expect(init).toContain('broker policy set');
    expect(statSync(join(dir, 'kek')).mode & 0o777).toBe(0o600);

    const m = await ownerSide(root, 'model-key');
    const added = JSON.parse(await ok('broker', 'key', 'add', '--dir', dir, '--key', m.key, '--model', m.file, '--model', m.folder, '--json'));
    expect(added).toMatchObject({ keyId: 'model-key', state: 'active', policy: expect.stringMatching(/^sha256-[0-9a-f]{64}$/) });

    // The bindings are exactly the public headers' bundle ids and header digests (the index for the folder).
    const headers = JSON.parse(await ok('inspect', m.file, '--json')).files;
    const index = readdirSync(m.folder).find((n) => n.endsWith('.index.json.sealed'))!;
    const indexHeader = JSON.parse(await ok('inspect', join(m.folder, index), '--json')).files[0];
    expect(added.models).toEqual([
      { bundleId: headers[0].bundleId, headerDigest: headers[0].headerDigest, label: 'model-key.sealed' },
      { bundleId: indexHeader.bundleId, headerDigest: indexHeader.headerDigest, label: 'model-key-sealed' },
    ]);

    const list = JSON.parse(await ok('broker', 'key', 'list', '--dir', dir, '--json'));
    expect(list.keys).toHaveLength(1);
    expect(list.keys[0].models).toEqual(added.models);
    expect(await ok('broker', 'key', 'list', '--dir', dir)).toContain(`model-key  active  policy ${added.policy}  2 model(s)`);

    // A policy from a file: validated, stored under its digest, pinned by the key.
    const policyFile = join(root, 'snp.json');
    writeFileSync(policyFile, readFileSync('docs/policies/snp.json'));
    expect(await ok('broker', 'policy', 'set', '--dir', dir, 'model-key', policyFile)).toMatch(/now uses policy sha256-[0-9a-f]{64}/);
    const after = JSON.parse(await ok('broker', 'key', 'list', '--dir', dir, '--json')).keys[0];
    expect(after.policy).toMatch(/^sha256-/);
    expect(readdirSync(join(dir, 'policies')).sort()).toEqual(['default.json', `${added.policy}.json`, `${after.policy}.json`].sort());

    // A second key: added without models, then bound; then revoked.
    const other = await ownerSide(root, 'other-key');
    const noModels = await runCli('broker', 'key', 'add', '--dir', dir, '--key', other.key);
    expect(noModels.code).toBe(0);
    expect(noModels.err).toContain('no sealed model bound');
    expect(await ok('broker', 'key', 'bind', 'other-key', '--dir', dir, '--key', other.key, '--model', other.file)).toContain('bound to 1 model(s)');
    expect(await ok('broker', 'key', 'revoke', 'other-key', '--dir', dir, '--reason', 'retired')).toContain('never released again');
    expect(await ok('broker', 'key', 'revoke', 'other-key', '--dir', dir)).toContain('already revoked');
    const keys = JSON.parse(await ok('broker', 'key', 'list', '--dir', dir, '--json')).keys;
    expect(keys.map((k: { keyId: string; state: string }) => [k.keyId, k.state])).toEqual([['model-key', 'active'], ['other-key', 'revoked']]);

    // Rotation: model-key -> new-key (re-sealed model), old one revoked.
    const next = await ownerSide(root, 'new-key');
    expect(await ok('broker', 'key', 'rotate', '--dir', dir, '--key-id', 'model-key', '--key', next.key, '--model', next.folder)).toContain('"model-key" is revoked');

    const verified = await ok('broker', 'audit', 'verify', dir);
    expect(verified).toMatch(/^audit log OK: 7 entries, 0 receipt\(s\) verified; last entry 6, sha256 [0-9a-f]{64}$/m);
    const json = JSON.parse(await ok('broker', 'audit', 'verify', dir, '--json'));
    expect(json).toMatchObject({ ok: true, entries: 7 });

    // One changed byte in the middle of the log: exit 1, the changed entry named.
    const log = readFileSync(join(dir, 'audit.log'), 'utf8').split('\n');
    log[2] = log[2]!.replace('"model-key"', '"model-kez"');
    writeFileSync(join(dir, 'audit.log'), log.join('\n'));
    const bad = await runCli('broker', 'audit', 'verify', dir);
    expect(bad.code).toBe(1);
    expect(bad.out).toContain('audit log BAD: entry 2 (line 3)');
    // And the broker refuses to work on a broken log.
    const refused = await runCli('broker', 'key', 'list', '--dir', dir);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/^error ERR_AUDIT: .*entry 2/);
  });

  it('refuses models that are not the key\'s, shards, and bad folders and arguments', async () => {
    const root = tempDir('st-broker-cli-');
    const dir = join(root, 'broker');
    await ok('broker', 'init', dir);
    const a = await ownerSide(root, 'key-a');
    const b = await ownerSide(root, 'key-b');

    const wrongModel = await runCli('broker', 'key', 'add', '--dir', dir, '--key', a.key, '--model', b.file);
    expect(wrongModel.code).toBe(1);
    expect(wrongModel.err).toMatch(/^error ERR_KEY_MISMATCH: .*sealed under key id "key-b", not "key-a"/);

    const shard = readdirSync(a.folder).find((n) => n.endsWith('.safetensors.sealed') && !n.includes('index'))!;
    const lone = await runCli('broker', 'key', 'add', '--dir', dir, '--key', a.key, '--model', join(a.folder, shard));
    expect(lone.code).toBe(2);
    expect(lone.err).toContain('one shard of a sharded model');

    const plain = await runCli('broker', 'key', 'add', '--dir', dir, '--key', a.key, '--model', join(root, 'key-a.safetensors'));
    expect(plain.code).toBe(1);
    expect(plain.err).toContain('plaintext safetensors file');
    // Nothing was added by the failures.
    expect(JSON.parse(await ok('broker', 'key', 'list', '--dir', dir, '--json')).keys).toEqual([]);

    // Same id, another key: the key commitment tells.
    const impostor = join(root, 'impostor.key');
    await ok('keygen', '-o', impostor, '--id', 'key-a');
    const mismatch = await runCli('broker', 'key', 'add', '--dir', dir, '--key', impostor, '--model', a.file);
    expect(mismatch.code).toBe(1);
    expect(mismatch.err).toMatch(/^error ERR_KEY_MISMATCH: the data key does not open this file/);

    // A policy that allows simulated evidence on a broker without --allow-simulated: a usage error.
    await ok('broker', 'key', 'add', '--dir', dir, '--key', a.key, '--model', a.file);
    const sim = join(root, 'sim.json');
    writeFileSync(sim, JSON.stringify({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: ['ab'.repeat(48)] } } } }));
    const simSet = await runCli('broker', 'policy', 'set', '--dir', dir, 'key-a', sim);
    expect(simSet.code).toBe(2);
    expect(simSet.err).toMatch(/^error ERR_POLICY: .*without --allow-simulated/);
    const badPolicy = join(root, 'bad.json');
    writeFileSync(badPolicy, '{"version": 1, "tees": {"snp": {"measurement": []}}}');
    expect((await runCli('broker', 'policy', 'set', '--dir', dir, 'key-a', badPolicy)).code).toBe(2);
    expect((await runCli('broker', 'policy', 'set', '--dir', dir, 'nope', 'default')).code).toBe(3);
    const noPolicy = await runCli('broker', 'policy', 'set', '--dir', dir, 'key-a', 'strict');
    expect(noPolicy.code).toBe(3);
    expect(noPolicy.err).toMatch(/^error ERR_NOT_FOUND: there is no policy "strict"/);

    // Usage errors exit 2.
    for (const argv of [
      ['broker'],
      ['broker', 'key'],
      ['broker', 'key', 'add', '--dir', dir],
      ['broker', 'key', 'list'],
      ['broker', 'key', 'list', '--dir', dir, '--bogus'],
      ['broker', 'init'],
      ['broker', 'init', join(root, 'x'), '--hostname', 'not a name'],
      ['broker', 'init', dir],
      ['broker', 'audit', 'verify'],
    ]) {
      const r = await runCli(...argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err, argv.join(' ')).toMatch(/^error ERR_INVALID_ARGUMENT: /m);
    }

    // A folder that is not a broker's, or whose kek others may read.
    expect((await runCli('broker', 'key', 'list', '--dir', join(root, 'missing'))).err).toMatch(/^error ERR_BROKER_CONFIG: /);
    const { chmodSync } = await import('node:fs');
    chmodSync(join(dir, 'kek'), 0o640);
    const loose = await runCli('broker', 'key', 'list', '--dir', dir);
    expect(loose.code).toBe(3);
    expect(loose.err).toMatch(/^error ERR_BROKER_CONFIG: kek .* is accessible to group or others \(mode 640\)/);
  });

  it('is listed in the top-level help', async () => {
    const r = await runCli('--help');
    expect(r.out).toMatch(/broker\s+Run and manage a key broker/);
    const own = await runCli('broker', '--help');
    expect(own.out).toContain('init');
    expect(own.out).toContain('audit');
  });
});
