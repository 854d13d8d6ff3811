import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { initBroker } from '../../src/broker/init.js';
import { loadBrokerConfig } from '../../src/broker/config.js';
import { SIMULATED_DEFAULT_MEASUREMENT, readStoredPolicy } from '../../src/broker/policies.js';
import { SimulatedTee, parseSimulatedEvidence } from '../../src/index.js';
import { tempDir } from '../helpers/tmp.js';
import { makeBroker } from './helpers.js';

const mode = (p: string): number => statSync(p).mode & 0o777;

describe('broker init', () => {
  it('makes a complete folder with private files 0600 and a certificate chain that verifies', async () => {
    const { dir } = await makeBroker({ hostnames: ['broker.example', '10.1.2.3'] });
    expect(readdirSync(dir).sort()).toEqual(
      ['audit.log', 'ca.key', 'ca.pem', 'config.json', 'keystore.json', 'kek', 'policies', 'server.key', 'server.pem', 'signing.jwk', 'signing.pub.jwk', 'receipt.jwk', 'receipt.pub.jwk', 'broker.jwks'].sort(),
    );
    expect(mode(dir)).toBe(0o700);
    for (const f of ['kek', 'ca.key', 'server.key', 'signing.jwk', 'receipt.jwk', 'keystore.json', 'audit.log']) expect(mode(join(dir, f)), f).toBe(0o600);
    for (const f of ['ca.pem', 'server.pem', 'signing.pub.jwk', 'receipt.pub.jwk', 'broker.jwks', 'config.json']) expect(mode(join(dir, f)) & 0o022, f).toBe(0);
    // What sessions pin: the token key and the receipt key, public halves, each under the kid its JWS carry.
    const jwks = JSON.parse(readFileSync(join(dir, 'broker.jwks'), 'utf8')) as { keys: Record<string, unknown>[] };
    const pubOf = (f: string): unknown => JSON.parse(readFileSync(join(dir, f), 'utf8'));
    expect(jwks.keys).toEqual([pubOf('signing.pub.jwk'), pubOf('receipt.pub.jwk')]);
    expect(jwks.keys.every((k) => !('d' in k))).toBe(true);
    expect(statSync(join(dir, 'kek')).size).toBe(32);

    const ca = new X509Certificate(readFileSync(join(dir, 'ca.pem')));
    const server = new X509Certificate(readFileSync(join(dir, 'server.pem')));
    expect(ca.ca).toBe(true);
    expect(server.ca).toBe(false);
    expect(ca.verify(ca.publicKey)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'server.key'))))).toBe(true);
    for (const h of ['localhost', 'broker.example']) expect(server.checkHost(h)).toBe(h);
    expect(server.checkHost('other.example')).toBeUndefined();
    for (const ip of ['127.0.0.1', '::1', '10.1.2.3']) expect(server.checkIP(ip)).toBe(ip);
    expect(server.keyUsage).toContain('1.3.6.1.5.5.7.3.1');

    const config = await loadBrokerConfig(dir);
    expect(config.allowSimulated).toBe(false);
    expect(config.hostnames).toEqual(['localhost', '127.0.0.1', '::1', 'broker.example', '10.1.2.3']);
    expect(config.signingKey.kid).toBe(config.signingKeyId);
    const pub = JSON.parse(readFileSync(join(dir, 'signing.pub.jwk'), 'utf8'));
    expect(pub.d).toBeUndefined();
    expect(pub.kid).toBe(config.signingKeyId);

    const policy = await readStoredPolicy(dir, 'default');
    expect(policy.policy.allowSimulated).toBe(false);
    expect(Object.keys(policy.policy.tees)).toEqual([]);
    const log = readFileSync(join(dir, 'audit.log'), 'utf8').split('\n');
    expect(log).toHaveLength(2);
    expect(JSON.parse(log[0]!)).toMatchObject({ seq: 0, event: 'init', prev: config.auditGenesis, generation: 0 });
  });

  it('the certificate serves HTTPS that a client trusting only ca.pem accepts, by name and by address', async () => {
    const { dir } = await makeBroker();
    const config = await loadBrokerConfig(dir);
    const { createServer, request } = await import('node:https');
    const server = createServer({ cert: config.tls.cert, key: config.tls.key }, (_req, res) => res.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const get = (opts: { servername?: string; ca?: string }): Promise<string> =>
      new Promise((resolve) => {
        const req = request({ host: '127.0.0.1', port, path: '/', agent: false, ...opts }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve(body));
        });
        req.on('error', (err) => resolve(`error ${(err as NodeJS.ErrnoException).code}`));
        req.end();
      });
    try {
      expect(await get({ ca: config.tls.ca })).toBe('ok'); // by IP address (SAN 127.0.0.1)
      expect(await get({ ca: config.tls.ca, servername: 'localhost' })).toBe('ok');
      expect(await get({ ca: config.tls.ca, servername: 'elsewhere.example' })).toBe('error ERR_TLS_CERT_ALTNAME_INVALID');
      const other = await loadBrokerConfig((await makeBroker()).dir);
      expect(await get({ ca: other.tls.ca })).toBe('error UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('--allow-simulated: the default policy accepts the simulated TEE (its default measurement), debug denied', async () => {
    const { dir } = await makeBroker({ allowSimulated: true });
    const { policy } = await readStoredPolicy(dir, 'default');
    expect(policy.allowSimulated).toBe(true);
    expect(policy.tees.simulated?.allowDebug).toBe(false);
    const evidence = await new SimulatedTee().getEvidence(new Uint8Array(64));
    const measured = Buffer.from(parseSimulatedEvidence(evidence).measurement).toString('hex');
    expect(policy.tees.simulated?.measurements?.measurement).toEqual([measured]);
    expect(SIMULATED_DEFAULT_MEASUREMENT).toBe(measured);
    expect((await loadBrokerConfig(dir)).allowSimulated).toBe(true);
  });

  it('refuses a non-empty folder and leaves it alone; accepts an empty one', async () => {
    const root = tempDir();
    const full = join(root, 'full');
    mkdirSync(full);
    writeFileSync(join(full, 'x'), 'keep');
    await expect(initBroker(full)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    expect(readdirSync(full)).toEqual(['x']);
    const empty = join(root, 'empty');
    mkdirSync(empty);
    await initBroker(empty);
    expect(readdirSync(empty)).toContain('kek');
    expect(readdirSync(root).sort()).toEqual(['empty', 'full']); // no temp folder left
  });

  it('refuses a bad host name before writing anything', async () => {
    const root = tempDir();
    await expect(initBroker(join(root, 'b'), { hostnames: ['bad name'] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    expect(readdirSync(root)).toEqual([]);
  });
});
