import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const fingerprint = (pem: string): string =>
  createHash('sha256').update(createPublicKey(pem).export({ format: 'der', type: 'spki' })).digest('hex');
const roots = (dir: string): string[] => (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { simulatedRoots: string[] }).simulatedRoots;

describe('broker init --simulated-key FILE (the development TEE root)', () => {
  it('creates the key file (0600) and trusts its fingerprint; an existing file is read, never replaced', async () => {
    const dir = tempDir();
    const key = join(dir, 'tee.pem');
    const r = await runCli('broker', 'init', join(dir, 'b1'), '--allow-simulated', '--simulated-key', key, '--json');
    expect(r.code, r.err).toBe(0);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const pem = readFileSync(key, 'utf8');
    const fp = fingerprint(pem);
    expect(new SimulatedTee({ rootKey: SimulatedTee.keyFrom(pem) }).rootFingerprint).toBe(fp); // what load --simulated-key presents
    expect(roots(join(dir, 'b1'))).toEqual([fp]);
    expect(JSON.parse(r.out)).toMatchObject({ allowSimulated: true, simulatedKey: { path: key, fingerprint: fp, created: true } });

    const again = await runCli('broker', 'init', join(dir, 'b2'), '--allow-simulated', '--simulated-key', key, '--simulated-root', 'ab'.repeat(32));
    expect(again.code, again.err).toBe(0);
    expect(again.out).toContain(`trusts the simulated TEE root key ${key}, fingerprint ${fp}`);
    expect(readFileSync(key, 'utf8')).toBe(pem);
    expect(roots(join(dir, 'b2')).sort()).toEqual(['ab'.repeat(32), fp].sort());
  });

  it('needs --allow-simulated; refuses a file that is not an Ed25519 key; a key made for a failed init is removed', async () => {
    const dir = tempDir();
    const key = join(dir, 'tee.pem');
    const noAllow = await runCli('broker', 'init', join(dir, 'b'), '--simulated-key', key);
    expect(noAllow.code).toBe(2);
    expect(noAllow.err).toMatch(/--simulated-key needs --allow-simulated/);
    expect(existsSync(key) || existsSync(join(dir, 'b'))).toBe(false);

    writeFileSync(join(dir, 'junk.pem'), 'not a key');
    const junk = await runCli('broker', 'init', join(dir, 'b'), '--allow-simulated', '--simulated-key', join(dir, 'junk.pem'));
    expect(junk.code).toBe(2);
    expect(junk.err).toMatch(/Ed25519 private key/);

    mkdirSync(join(dir, 'full'));
    writeFileSync(join(dir, 'full', 'x'), 'x');
    const full = await runCli('broker', 'init', join(dir, 'full'), '--allow-simulated', '--simulated-key', key);
    expect(full.code).toBe(2);
    expect(full.err).toMatch(/not empty/);
    expect(existsSync(key)).toBe(false);
  });
});
