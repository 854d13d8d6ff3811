/**
 * Review finding 6: the token-signing key also signed receipts, so whoever could mint tokens could
 * mint receipts. Receipts now have a key of their own (receipt.jwk / receipt.pub.jwk), named in
 * config.json, used by the server and by `audit verify`; a folder from before is refused with the
 * command that adds one.
 */
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeProtectedHeader } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { AuditLog, formatAuditLine, verifyAuditLog } from '../../src/broker/audit.js';
import { loadBrokerConfig } from '../../src/broker/config.js';
import { addReceiptKey } from '../../src/broker/init.js';
import { startBroker } from '../../src/broker/server.js';
import { attested, type Fixture, resource, signingKey, startFixture } from './fixture.js';
import { makeBroker } from './helpers.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from './memory.js';

let fixtures: Fixture[] = [];
afterEach(async () => {
  await Promise.all(fixtures.map((f) => f.broker.close()));
  fixtures = [];
});

const release = (keyId = 'k1') => ({ keyId, models: [{ bundleId: 'ab'.repeat(16), headerDigest: 'cd'.repeat(32) }], teePubkey: 'A'.repeat(43), evidenceDigest: 'ef'.repeat(32), verdict: { allowed: true as const, reasons: [] } });

describe('receipts have their own key', () => {
  it('the server signs receipts with the receipt key, tokens with the signing key', async () => {
    const f = await startFixture();
    fixtures.push(f);
    const s = await attested(f);
    const r = await resource(f, { token: s.token });
    expect(r.status, r.text).toBe(200);
    const receipt = String(r.headers['sealed-tensors-receipt']);
    expect(decodeProtectedHeader(receipt).kid).toBe(f.receipt.kid);
    expect(decodeProtectedHeader(s.token).kid).toBe(f.signing.kid);
    expect(f.receipt.kid).not.toBe(f.signing.kid);
  });

  it('startBroker refuses a missing receipt key, or one that is the signing key', async () => {
    const signing = await signingKey('s');
    const base = { keystore: new MemoryKeystore(), policies: new MemoryPolicies(), audit: new MemoryAudit(), signingKey: signing, host: '127.0.0.1', port: 0, allowPlainHttpOnLoopback: true, allowSimulated: false };
    await expect(startBroker(base as never)).rejects.toThrow(/receiptKey/);
    await expect(startBroker({ ...base, receiptKey: { ...signing, kid: 'r' } })).rejects.toThrow(/receipt key must not be the signing key/);
  });

  it('init writes receipt.jwk (0600) and receipt.pub.jwk, config.json names it, and audit verify checks receipts with it', async () => {
    const { dir } = await makeBroker();
    expect(statSync(join(dir, 'receipt.jwk')).mode & 0o777).toBe(0o600);
    const c = await loadBrokerConfig(dir);
    const pub = JSON.parse(readFileSync(join(dir, 'receipt.pub.jwk'), 'utf8')) as { kid: string };
    expect(c.receiptKeyId).toBe(pub.kid);
    expect(c.receiptKey.kid).toBe(pub.kid);
    expect(c.receiptKey.kid).not.toBe(c.signingKey.kid);
    const log = await AuditLog.open(dir);
    await log.appendRelease(release(), c.receiptKey);
    await log.close();
    expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, receipts: 1 });
  });

  it('a receipt signed with the token key does not verify in a folder with a receipt key', async () => {
    const { dir } = await makeBroker();
    const c = await loadBrokerConfig(dir);
    const log = await AuditLog.open(dir);
    await log.appendRelease(release(), c.signingKey);
    await log.close();
    expect((await verifyAuditLog(dir)).ok).toBe(false);
  });

  it('a folder from before receipt keys is refused with the command that adds one; after it, it loads', async () => {
    const { dir } = await makeBroker();
    const c0 = await loadBrokerConfig(dir);
    const log = await AuditLog.open(dir);
    await log.appendRelease(release('old'), c0.signingKey); // what an old broker wrote
    await log.close();
    // Make it an old folder: no receipt key, no receiptKeyId, and an init entry that names none.
    rmSync(join(dir, 'receipt.jwk'));
    rmSync(join(dir, 'receipt.pub.jwk'));
    rmSync(join(dir, 'broker.jwks'));
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    delete cfg.receiptKeyId;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const lines = readFileSync(join(dir, 'audit.log'), 'utf8').split('\n');
    expect(lines[0]).toContain('receiptKeyId');
    // (Rewriting the init line would break the chain; verification of the legacy case is below.)
    await expect(loadBrokerConfig(dir)).rejects.toThrow(/receipt-key add/);
    const added = await addReceiptKey(dir);
    const c = await loadBrokerConfig(dir);
    expect(c.receiptKey.kid).toBe(added.receiptKeyId);
    expect(statSync(join(dir, 'receipt.jwk')).mode & 0o777).toBe(0o600);
    // Sessions pin both public keys: broker.jwks now holds the new receipt key beside the token key.
    const jwks = JSON.parse(readFileSync(join(dir, 'broker.jwks'), 'utf8')) as { keys: { kid: string }[] };
    expect(jwks.keys.map((k) => k.kid)).toEqual([c.signingKey.kid, added.receiptKeyId]);
    await expect(addReceiptKey(dir)).rejects.toThrow(/already/);
  });
});

describe('migrating a folder made before receipt keys', () => {
  it('old receipts (token key) verify before receipt-key add; after it, only receipt-key receipts do', async () => {
    const { dir } = await makeBroker();
    const c0 = await loadBrokerConfig(dir);
    // Rebuild the folder as an old broker left it: no receipt key anywhere, and an init entry naming none.
    rmSync(join(dir, 'receipt.jwk'));
    rmSync(join(dir, 'receipt.pub.jwk'));
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    delete cfg.receiptKeyId;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const init = JSON.parse(readFileSync(join(dir, 'audit.log'), 'utf8').split('\n')[0]!) as Record<string, unknown>;
    const { seq: _s, time, prev, event: _e, receiptKeyId: _r, ...fields } = init;
    writeFileSync(join(dir, 'audit.log'), Buffer.concat([formatAuditLine(0, String(time), String(prev), 'init', fields), Buffer.from('\n')]));
    let log = await AuditLog.open(dir);
    await log.appendRelease(release('old'), c0.signingKey);
    await log.close();
    expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, receipts: 1 });

    await addReceiptKey(dir);
    const c = await loadBrokerConfig(dir);
    expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, receipts: 1 });
    log = await AuditLog.open(dir);
    await log.appendRelease(release('new'), c.receiptKey);
    await log.close();
    expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, receipts: 2 });
    log = await AuditLog.open(dir);
    await log.appendRelease(release('forged'), c.signingKey);
    await log.close();
    const v = await verifyAuditLog(dir);
    expect(v.ok).toBe(false);
    expect(v.firstBad?.reason).toMatch(/signed by the token key/);
  });
});
