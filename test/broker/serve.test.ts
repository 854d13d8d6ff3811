import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { flattenedDecrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { verifyAuditLog } from '../../src/broker/audit.js';
import { brokerOptions, openBrokerFolder } from '../../src/broker/folder.js';
import { RECEIPT_HEADER } from '../../src/broker/receipt.js';
import { startBroker } from '../../src/broker/server.js';
import { runCli } from '../helpers/cli.js';
import { json, send } from './client.js';
import { attest, attestBody, auth, resource, teeKeyPair, type Fixture } from './fixture.js';
import { KEY_A, MODEL_1, makeBroker } from './helpers.js';

const hasBuild = (() => {
  try {
    readFileSync(resolve('dist/cli/main.js'));
    return true;
  } catch {
    return false;
  }
})();
if (!hasBuild) console.warn('SKIPPED test/broker/serve.test.ts: dist/ is not built (npm run build)');

describe('a broker served from its folder (file keystore, policies, audit log)', () => {
  it('releases a key to an attested simulated session, denies it once revoked by another process, and the audit log verifies with the receipt', async () => {
    const tee = new SimulatedTee();
    const { dir } = await makeBroker({ allowSimulated: true, simulatedRoots: [tee.rootFingerprint] });
    const folder = await openBrokerFolder(dir);
    await folder.keystore.add(KEY_A, { keyId: 'model-key', models: [MODEL_1], policy: 'default' });
    const broker = await startBroker(brokerOptions(folder, { listen: '127.0.0.1:0' }));
    const ca = folder.config.tls.ca;
    expect(broker.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    // The fixture's RCAR steps, against this broker.
    const f = { tee, send: (path: string, opts = {}) => send(broker.url + path, { ca, ...opts }) } as unknown as Fixture;
    const path = '/kbs/v0/resource/sealed-tensors/data-key/model-key';
    let receipt: string;
    try {
      const { cookie, nonce } = await auth(f);
      const { privateKey, jwk } = await teeKeyPair();
      const a = await attest(f, cookie, await attestBody(f, nonce, jwk));
      expect(a.status, a.text).toBe(200);
      const r = await resource(f, { cookie, path });
      expect(r.status, r.text).toBe(200);
      receipt = r.headers[RECEIPT_HEADER] as string;
      expect(receipt).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
      // The release opens to "STK1" || the data key || the manifest naming the bound model.
      const { plaintext } = await flattenedDecrypt(r.json as Parameters<typeof flattenedDecrypt>[0], privateKey);
      expect(Buffer.from(plaintext.subarray(0, 4)).toString()).toBe('STK1');
      expect(plaintext.subarray(4, 36)).toEqual(KEY_A);
      expect(JSON.parse(Buffer.from(plaintext.subarray(36)).toString()).models).toEqual([MODEL_1]);

      // The operator revokes the key from another process (its own view of the folder).
      const operator = await runCli('broker', 'key', 'revoke', 'model-key', '--dir', dir, '--reason', 'leaked');
      expect(operator.code, operator.err).toBe(0);
      const again = await resource(f, { cookie, path });
      expect(again.status).toBe(403);
      expect(JSON.stringify(again.json)).toContain('key.revoked');
    } finally {
      await broker.close();
      await folder.close();
    }
    const v = await verifyAuditLog(dir, { receipts: [receipt] });
    expect(v).toMatchObject({ ok: true, receipts: 1 });
    const events = readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).event);
    expect(events).toEqual(expect.arrayContaining(['init', 'key-add', 'attest', 'release', 'key-revoke', 'deny']));
    expect((await runCli('broker', 'audit', 'verify', dir)).code).toBe(0);
  });

  it.runIf(hasBuild)('broker serve: prints its URL, answers, stops cleanly on SIGTERM; bad folders and addresses are refused', async () => {
    const { dir } = await makeBroker();
    const bin = resolve('bin/sealed-tensors.js');
    const child = spawn(process.execPath, [bin, 'broker', 'serve', '--dir', dir, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const url = await new Promise<string>((res, rej) => {
      child.stdout.on('data', (d) => {
        out += d;
        const m = /^listening on (https:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
        if (m) res(m[1]!);
      });
      child.once('exit', (code) => rej(new Error(`serve exited ${code}: ${err}`)));
    });
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const r = await send(`${url}/kbs/v0/auth`, { ca, ...json({ version: '0.4.0', tee: 'snp', 'extra-params': '' }) });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ nonce: expect.any(String) });
    const exit = new Promise<number | null>((res) => child.once('exit', res));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(out).toBe(`listening on ${url}\n`);
    expect(err).toContain('stopped by SIGTERM');
    expect((await verifyAuditLog(dir)).ok).toBe(true);

    const missing = await runCli('broker', 'serve', '--dir', join(dir, 'nope'));
    expect(missing.code).toBe(3);
    expect(missing.err).toMatch(/^error ERR_BROKER_CONFIG/);
    const badListen = await runCli('broker', 'serve', '--dir', dir, '--listen', 'nowhere');
    expect(badListen.err).toMatch(/^error ERR_BROKER_CONFIG: listen address "nowhere"/);
    const plainElsewhere = await runCli('broker', 'serve', '--dir', dir, '--listen', '0.0.0.0:0', '--allow-plain-http-on-loopback');
    expect(plainElsewhere.code).toBe(2);
  });

  it('broker serve --verify-threads: 1 to 16 accepted, anything else refused as a usage error before the folder is opened', async () => {
    for (const bad of ['0', '17', '1.5', 'two', '-1']) {
      const r = await runCli('broker', 'serve', '--dir', '/nonexistent-broker-folder', '--verify-threads', bad);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^error ERR_INVALID_ARGUMENT: --verify-threads must be an integer from 1 to 16/);
    }
    const ok = await runCli('broker', 'serve', '--dir', '/nonexistent-broker-folder', '--verify-threads', '2');
    expect(ok.err).toMatch(/^error ERR_BROKER_CONFIG/); // got past the flag to the folder
  });
});
