import { createHash, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompactSign, importJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { AuditLog, RECEIPT_TYP, receiptVerificationKey, verifyAuditLog, verifyReceipt, type ReleaseFields } from '../../src/broker/audit.js';
import { loadBrokerConfig } from '../../src/broker/config.js';
import { MODEL_1, makeBroker } from './helpers.js';

const release = (keyId = 'key-a'): ReleaseFields => ({
  keyId,
  models: [MODEL_1],
  teePubkey: 'A'.repeat(43),
  evidenceDigest: 'cd'.repeat(32),
  verdict: { allowed: true, reasons: ['policy.tee: ok'] },
  tee: 'simulated',
});

const logPath = (dir: string): string => join(dir, 'audit.log');
const lines = (dir: string): string[] => readFileSync(logPath(dir), 'utf8').split('\n').slice(0, -1);
const writeLines = (dir: string, ls: string[]): void => writeFileSync(logPath(dir), ls.map((l) => `${l}\n`).join(''));

/** A broker whose log holds init, three plain entries, a release and one more entry (seq 0..5). */
async function brokerWithLog(): Promise<{ dir: string; receipt: string }> {
  const { dir } = await makeBroker();
  const config = await loadBrokerConfig(dir);
  const log = await AuditLog.open(dir);
  await log.append({ event: 'auth', client: '127.0.0.1', tee: 'snp' });
  await log.append({ event: 'attest', client: '127.0.0.1', evidenceDigest: 'ab'.repeat(32) });
  await log.append({ event: 'deny', keyId: 'key-a', reasons: ['policy.measurements: no'] });
  const r = await log.appendRelease(release(), config.receiptKey);
  await log.append({ event: 'deny', keyId: 'key-b', reasons: ['unknown key'] });
  await log.close();
  return { dir, receipt: r.receipt };
}

describe('audit verify: the releases and denials', () => {
  it('with list: each release and denial with seq, time, key, models, verdict, reasons and receipt; nothing else', async () => {
    const { dir } = await brokerWithLog();
    const ls = lines(dir).map((l) => JSON.parse(l) as { time: string; receiptId?: string });
    expect((await verifyAuditLog(dir)).decisions).toBeUndefined();
    const v = await verifyAuditLog(dir, { list: true });
    expect(v.ok).toBe(true);
    expect(v.decisions).toEqual([
      { seq: 3, time: ls[3]!.time, event: 'deny', verdict: 'deny', keyIds: ['key-a'], models: [], reasons: ['policy.measurements: no'] },
      { seq: 4, time: ls[4]!.time, event: 'release', verdict: 'release', keyIds: ['key-a'], models: [MODEL_1], tee: 'simulated', reasons: ['policy.tee: ok'], receiptId: ls[4]!.receiptId },
      { seq: 5, time: ls[5]!.time, event: 'deny', verdict: 'deny', keyIds: ['key-b'], models: [], reasons: ['unknown key'] },
    ]);
  });
});

describe('receipt verification key', () => {
  it('a JWK without kid is known by its thumbprint: a receipt naming another kid is refused', async () => {
    const { dir } = await makeBroker();
    const config = await loadBrokerConfig(dir);
    const { kid: _kid, ...noKid } = config.receiptKey.publicJwk;
    const verifier = await receiptVerificationKey(noKid);
    expect(verifier.kid).toBe(config.receiptKeyId); // broker init's kid is the thumbprint
    const log = await AuditLog.open(dir);
    const ok = await log.appendRelease(release(), config.receiptKey);
    const renamed = await log.appendRelease(release(), { ...config.receiptKey, kid: 'some-other-key' });
    await log.close();
    await expect(verifyReceipt(ok.receipt, verifier)).resolves.toMatchObject({ keyId: 'key-a' });
    // Same key, another kid in the header: before, a kid-less verifier did not look at it.
    await expect(verifyReceipt(renamed.receipt, verifier)).rejects.toMatchObject({ code: 'ERR_AUDIT', message: expect.stringContaining('"some-other-key"') });
  });
});

describe('audit log', () => {
  it('appends chained entries; verify checks the chain and the receipts', async () => {
    const { dir } = await makeBroker();
    const config = await loadBrokerConfig(dir);
    const log = await AuditLog.open(dir);
    expect(log.head.seq).toBe(0);
    const a = await log.append({ event: 'attest', client: '::1', nested: { list: [1, 'two', null], x: 1.5 } });
    expect(a.seq).toBe(1);
    const r = await log.appendRelease(release(), config.receiptKey);
    expect(r.seq).toBe(2);
    expect(log.head).toEqual({ seq: 2, hash: r.hash });
    await log.close();

    const ls = lines(dir);
    expect(ls).toHaveLength(3);
    // prev of each line is the SHA-256 of the line before; the first chains from the genesis.
    expect(JSON.parse(ls[0]!).prev).toBe(config.auditGenesis);
    expect(JSON.parse(ls[1]!).prev).toBe(createHash('sha256').update(ls[0]!).digest('hex'));
    expect(r.hash).toBe(createHash('sha256').update(ls[2]!).digest('hex'));

    // The receipt: signed by the broker's key, over the entry's fields and its place in the chain.
    const claims = await verifyReceipt(r.receipt, await receiptVerificationKey(config.receiptKey.publicJwk));
    const entry = JSON.parse(ls[2]!);
    expect(entry.receipt).toBe(r.receipt);
    expect(claims).toMatchObject({ ...release(), receiptId: r.receiptId, auditSeq: 2, auditHash: entry.prev, auditTime: entry.time, iat: Math.floor(Date.parse(entry.time) / 1000) });
    const [h] = r.receipt.split('.');
    expect(JSON.parse(Buffer.from(h!, 'base64url').toString())).toEqual({ alg: 'ES256', kid: config.receiptKeyId, typ: RECEIPT_TYP });

    expect(await verifyAuditLog(dir)).toEqual({ ok: true, entries: 3, receipts: 1, head: { seq: 2, hash: r.hash } });
    expect((await verifyAuditLog(dir, { receipts: [r.receipt] })).ok).toBe(true);
  });

  it('concurrent appends from two instances are serialized into one chain (group commit)', async () => {
    const { dir } = await makeBroker();
    const config = await loadBrokerConfig(dir);
    const one = await AuditLog.open(dir);
    const two = await AuditLog.open(dir);
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        i % 10 === 0 ? (i % 20 === 0 ? one : two).appendRelease(release(`k${i}`), config.receiptKey) : (i % 2 ? one : two).append({ event: 'attest', n: i }),
      ),
    );
    const seqs = results.map((r) => r.seq).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    await one.close();
    await two.close();
    expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, entries: 61, receipts: 6 });
  });

  it('refuses entries it could not write faithfully', async () => {
    const { dir } = await makeBroker();
    const log = await AuditLog.open(dir);
    await expect(log.append({ event: 'Bad Event' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(log.append({ event: 'x', seq: 5 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(log.append({ event: 'x', receipt: 'y' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(log.append({ event: 'x', big: 'a'.repeat(300 * 1024) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(log.append({ event: 'release', keyId: 'k' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(log.append({ event: 'key-revoke', keyId: 'k' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' }); // no generation
    await expect(log.append({ event: 'init', generation: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    // A release a verifier would refuse is refused at its own call, and does not fail its neighbours.
    const config = await loadBrokerConfig(dir);
    const [good, bad, alsoGood] = await Promise.allSettled([
      log.appendRelease(release(), config.receiptKey),
      log.appendRelease({ ...release(), teePubkey: 'not a thumbprint' }, config.receiptKey),
      log.append({ event: 'attest' }),
    ]);
    expect(good.status).toBe('fulfilled');
    expect(bad).toMatchObject({ status: 'rejected', reason: { code: 'ERR_INVALID_ARGUMENT', message: expect.stringContaining('teePubkey') } });
    expect(alsoGood.status).toBe('fulfilled');
    await expect(log.appendRelease({ ...release(), verdict: { allowed: false, reasons: [] } } as never, config.receiptKey)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await log.close();
    expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, entries: 3, receipts: 1 });
  });

  describe('verify names the first bad entry', () => {
    it('a flipped byte: in a value (the entry whose hash no longer matches), or breaking the JSON', async () => {
      const { dir } = await brokerWithLog();
      const original = lines(dir);
      const l2 = original[2]!.replace('"127.0.0.1"', '"127.0.0.2"');
      writeLines(dir, original.map((l, i) => (i === 2 ? l2 : l)));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, entries: 2, firstBad: { seq: 2, line: 3, reason: expect.stringContaining('entry 2 was changed') } });
      writeLines(dir, original.map((l, i) => (i === 3 ? l.replace('{', '[') : l)));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, entries: 3, firstBad: { seq: 3, line: 4, reason: expect.stringContaining('not valid UTF-8 JSON') } });
      // Whitespace and key order are part of the line: a reformatted entry is not the entry.
      writeLines(dir, original.map((l, i) => (i === 1 ? l.replace(',"prev"', ', "prev"') : l)));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, firstBad: { seq: 1, reason: expect.stringContaining('form the broker writes') } });
      writeLines(dir, original);
      expect((await verifyAuditLog(dir)).ok).toBe(true);
    });

    it('a deleted, a duplicated, a reordered line; a cut-short last line; an empty log', async () => {
      const { dir } = await brokerWithLog();
      const o = lines(dir);
      writeLines(dir, [o[0]!, o[1]!, o[3]!, o[4]!, o[5]!]);
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, entries: 2, firstBad: { seq: 2, line: 3, reason: expect.stringContaining('seq is 3, expected 2') } });
      writeLines(dir, [o[0]!, o[1]!, o[1]!, o[2]!]);
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, firstBad: { seq: 2, reason: expect.stringContaining('seq is 1, expected 2') } });
      writeLines(dir, [o[0]!, o[2]!, o[1]!, o[3]!]);
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, firstBad: { seq: 1, line: 2 } });
      writeFileSync(logPath(dir), o.map((l) => `${l}\n`).join('').slice(0, -20));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, entries: 5, firstBad: { seq: 5, line: 6, reason: expect.stringContaining('incomplete') } });
      writeFileSync(logPath(dir), '');
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, entries: 0, firstBad: { seq: 0, reason: expect.stringContaining('empty') } });
      writeLines(dir, o.slice(1));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, firstBad: { seq: 0, line: 1 } });
    });

    it('a release whose signed fields were edited, or whose receipt is forged or from another key', async () => {
      const { dir, receipt } = await brokerWithLog();
      const o = lines(dir);
      const rel = JSON.parse(o[4]!);
      const edit = (change: (e: Record<string, unknown>) => void): string[] => {
        const e = structuredClone(rel);
        change(e);
        return o.map((l, i) => (i === 4 ? JSON.stringify(e) : l));
      };
      // The last lines are exactly those only a receipt protects: edit the release and drop what follows.
      writeLines(dir, edit((e) => void (e.keyId = 'key-z')).slice(0, 5));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, receipts: 0, firstBad: { seq: 4, reason: expect.stringContaining('differ from what its receipt signs (keyId)') } });
      // A signature byte changed.
      const [h, p, sig] = receipt.split('.') as [string, string, string];
      const flipped = `${h}.${p}.${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
      writeLines(dir, edit((e) => void (e.receipt = flipped)));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, firstBad: { seq: 4, reason: expect.stringContaining('signature does not verify') } });
      // A receipt re-signed with another P-256 key, same kid and claims.
      const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
      const forged = await new CompactSign(Buffer.from(p, 'base64url'))
        .setProtectedHeader(JSON.parse(Buffer.from(h, 'base64url').toString()))
        .sign(await importJWK(other, 'ES256'));
      writeLines(dir, edit((e) => void (e.receipt = forged)));
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: false, firstBad: { seq: 4, reason: expect.stringContaining('signature does not verify') } });
      writeLines(dir, o);
      expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, receipts: 1 });
    });

    it('receipts held outside the log catch a log cut off after them, or rewritten', async () => {
      const { dir, receipt } = await brokerWithLog();
      const o = lines(dir);
      writeLines(dir, o.slice(0, 4)); // the release and what follows removed: the chain alone cannot tell
      expect((await verifyAuditLog(dir)).ok).toBe(true);
      const v = await verifyAuditLog(dir, { receipts: [receipt] });
      expect(v.ok).toBe(false);
      expect(v.missingReceipts).toEqual([expect.objectContaining({ auditSeq: 4, reason: expect.stringContaining('cut off') })]);
      const bogus = await verifyAuditLog(dir, { receipts: ['a.b.c'] });
      expect(bogus).toMatchObject({ ok: false, missingReceipts: [{ reason: expect.stringContaining('does not verify') }] });
    });
  });

  it('open refuses a broken chain; an incomplete last line (a crash mid-write) is cut and recorded', async () => {
    const { dir } = await brokerWithLog();
    const o = lines(dir);
    writeLines(dir, [o[0]!, o[2]!]);
    await expect(AuditLog.open(dir)).rejects.toMatchObject({ code: 'ERR_AUDIT', message: expect.stringContaining('entry 1 (line 2)') });
    const torn = o.map((l) => `${l}\n`).join('') + o[5]!.slice(0, 30);
    writeFileSync(logPath(dir), torn);
    expect((await verifyAuditLog(dir)).firstBad?.reason).toContain('incomplete');
    const log = await AuditLog.open(dir);
    expect(log.head.seq).toBe(6);
    await log.append({ event: 'attest' });
    await log.close();
    const after = lines(dir);
    expect(JSON.parse(after[6]!)).toMatchObject({ event: 'log-repaired', truncatedBytes: 30, truncated: Buffer.from(o[5]!.slice(0, 30)).toString('base64') });
    expect(await verifyAuditLog(dir)).toMatchObject({ ok: true, entries: 8, receipts: 1 });
  });

  it('an open log notices a file replaced or shrunk under it', async () => {
    const { dir } = await brokerWithLog();
    const log = await AuditLog.open(dir);
    const o = lines(dir);
    writeFileSync(logPath(dir), o.slice(0, 3).map((l) => `${l}\n`).join('')); // same inode, shorter
    await expect(log.append({ event: 'attest' })).rejects.toMatchObject({ code: 'ERR_AUDIT', message: expect.stringContaining('shrank') });
    await log.close();
  });
});
