import { chmodSync, copyFileSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compactVerify, importJWK, CompactSign } from 'jose';
import { loadBrokerConfig, parseListen } from '../../src/broker/config.js';
import { makeBroker } from './helpers.js';

async function failure(dir: string): Promise<{ code: string; message: string }> {
  try {
    await loadBrokerConfig(dir);
  } catch (err) {
    return { code: (err as { code: string }).code, message: (err as Error).message };
  }
  return { code: 'ok', message: '' };
}

describe('loadBrokerConfig', () => {
  it('loads a fresh folder: settings, TLS material, a signing key that signs what signing.pub.jwk verifies, the kek', async () => {
    const { dir } = await makeBroker();
    const c = await loadBrokerConfig(dir);
    expect(c).toMatchObject({ dir, listen: '127.0.0.1:8443', allowSimulated: false, simulatedRoots: [], tokenTtlSeconds: 300, challengeTtlSeconds: 60 });
    expect(c.tls.cert).toContain('BEGIN CERTIFICATE');
    expect(c.tls.key).toContain('BEGIN PRIVATE KEY');
    expect(c.kek.symmetricKeySize).toBe(32);
    const jws = await new CompactSign(Buffer.from('x')).setProtectedHeader({ alg: 'ES256', kid: c.signingKey.kid }).sign(c.signingKey.privateKey);
    const pub = JSON.parse(readFileSync(join(dir, 'signing.pub.jwk'), 'utf8'));
    await expect(compactVerify(jws, await importJWK(pub, 'ES256'))).resolves.toBeDefined();
    expect(c.signingKey.publicJwk).toEqual(pub);
  });

  it('names what is wrong: loose modes, missing files, links, edited or mismatched files', async () => {
    const { dir, root } = await makeBroker();
    const cases: [string, () => void, () => void, RegExp][] = [
      ['kek readable by group', () => chmodSync(join(dir, 'kek'), 0o640), () => chmodSync(join(dir, 'kek'), 0o600), /kek .* accessible to group or others \(mode 640\)/],
      ['server.key readable by others', () => chmodSync(join(dir, 'server.key'), 0o604), () => chmodSync(join(dir, 'server.key'), 0o600), /server\.key .* accessible/],
      ['signing.jwk readable by others', () => chmodSync(join(dir, 'signing.jwk'), 0o644), () => chmodSync(join(dir, 'signing.jwk'), 0o600), /signing\.jwk .* accessible/],
      ['ca.key readable', () => chmodSync(join(dir, 'ca.key'), 0o640), () => chmodSync(join(dir, 'ca.key'), 0o600), /ca\.key .* accessible/],
      ['config.json writable by others', () => chmodSync(join(dir, 'config.json'), 0o666), () => chmodSync(join(dir, 'config.json'), 0o644), /config\.json .* writable by group or others/],
      ['folder writable by group', () => chmodSync(dir, 0o770), () => chmodSync(dir, 0o700), /broker folder .* writable by group or others/],
      ['kek missing', () => renameSync(join(dir, 'kek'), join(root, 'kek')), () => renameSync(join(root, 'kek'), join(dir, 'kek')), /kek is missing/],
      ['kek too short', () => { copyFileSync(join(dir, 'kek'), join(root, 'kek')); writeFileSync(join(dir, 'kek'), Buffer.alloc(16), { mode: 0o600 }); }, () => copyFileSync(join(root, 'kek'), join(dir, 'kek')), /kek .* is 16 bytes, not 32/],
      ['kek a symbolic link', () => { renameSync(join(dir, 'kek'), join(root, 'kek')); symlinkSync(join(root, 'kek'), join(dir, 'kek')); }, () => { rmSync(join(dir, 'kek')); renameSync(join(root, 'kek'), join(dir, 'kek')); }, /kek .* symbolic link/],
      ['audit.log missing', () => renameSync(join(dir, 'audit.log'), join(root, 'a')), () => renameSync(join(root, 'a'), join(dir, 'audit.log')), /audit\.log is missing/],
    ];
    for (const [what, breakIt, fix, message] of cases) {
      breakIt();
      const f = await failure(dir);
      expect(f.code, what).toBe('ERR_BROKER_CONFIG');
      expect(f.message, what).toMatch(message);
      fix();
      expect((await failure(dir)).code, `${what} (fixed)`).toBe('ok');
    }

    const edit = async (file: string, change: (text: string) => string, message: RegExp): Promise<void> => {
      const original = readFileSync(join(dir, file));
      writeFileSync(join(dir, file), change(original.toString('utf8')));
      const f = await failure(dir);
      expect(f.code, file).toBe('ERR_BROKER_CONFIG');
      expect(f.message, file).toMatch(message);
      writeFileSync(join(dir, file), original);
    };
    await edit('config.json', (t) => t.replace('"tokenTtlSeconds"', '"tokenTTL"'), /tokenTTL: unknown key.*tokenTtlSeconds: missing/);
    await edit('config.json', (t) => t.replace('"tokenTtlSeconds": 300', '"tokenTtlSeconds": 0'), /tokenTtlSeconds: must be an integer from 1 to 86400/);
    await edit('config.json', (t) => t.replace('"127.0.0.1:8443"', '"nowhere"'), /listen: .* not HOST:PORT/);
    await edit('config.json', (t) => t.replace('"simulatedRoots": []', `"simulatedRoots": ["${'a'.repeat(64)}"]`), /simulatedRoots: listed, but allowSimulated is false/);
    const other = (await makeBroker()).dir;
    await edit('signing.jwk', () => readFileSync(join(other, 'signing.jwk'), 'utf8'), /signing\.pub\.jwk is not the public half/);
    await edit('server.pem', () => readFileSync(join(other, 'server.pem'), 'utf8'), /server\.pem is not issued by the CA/);
    await edit('server.key', () => readFileSync(join(other, 'server.key'), 'utf8'), /server\.key is not the key of server\.pem/);
    await edit('signing.pub.jwk', (t) => JSON.stringify({ ...JSON.parse(t), d: JSON.parse(readFileSync(join(dir, 'signing.jwk'), 'utf8')).d }), /unexpected members d \(the private key must not be in the public file\)/);
    expect((await failure(dir)).code).toBe('ok');
    // Both signing files from another broker: consistent with each other, not with config.json.
    const sk = readFileSync(join(dir, 'signing.jwk'));
    const pk = readFileSync(join(dir, 'signing.pub.jwk'));
    writeFileSync(join(dir, 'signing.jwk'), readFileSync(join(other, 'signing.jwk')));
    writeFileSync(join(dir, 'signing.pub.jwk'), readFileSync(join(other, 'signing.pub.jwk')));
    expect((await failure(dir)).message).toMatch(/not the signingKeyId .* signing\.jwk was replaced/);
    writeFileSync(join(dir, 'signing.jwk'), sk);
    writeFileSync(join(dir, 'signing.pub.jwk'), pk);
    expect((await failure(join(root, 'nothing'))).message).toMatch(/does not exist/);
  });

  it('parseListen', () => {
    expect(parseListen('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('[::1]:8443')).toEqual({ host: '::1', port: 8443 });
    expect(parseListen('kbs.example:443')).toEqual({ host: 'kbs.example', port: 443 });
    for (const bad of ['::1:80', '[zz]:80', 'host', 'host:70000', ':80', 'a b:1']) expect(() => parseListen(bad), bad).toThrow(/not HOST:PORT/);
  });
});
