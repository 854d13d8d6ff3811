import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { AuditLog, checkAuditLine, formatAuditLine, receiptVerificationKey, verifyAuditLog, verifyReceipt } from '../../src/broker/audit.js';
import { loadBrokerConfig, loadSigningKey, parseBrokerSettings, parseListen } from '../../src/broker/config.js';
import { FileKeystore, checkModels, parseKeystoreDocument } from '../../src/broker/keystore.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { KEY_A, MODEL_1, makeBroker, openBroker } from './helpers.js';

/** Runs f; returns 'ok', or the code of a SealedTensorsError; anything else fails the property. */
async function outcome(f: () => unknown): Promise<string> {
  try {
    await f();
    return 'ok';
  } catch (err) {
    if (err instanceof SealedTensorsError) return err.code;
    throw err;
  }
}

/** A JSON document with one value somewhere replaced by another arbitrary JSON value. */
function mutate(doc: unknown, path: number[], value: unknown): unknown {
  if (path.length === 0 || typeof doc !== 'object' || doc === null) return value;
  const copy: Record<string, unknown> | unknown[] = Array.isArray(doc) ? [...doc] : { ...(doc as Record<string, unknown>) };
  const keys = Object.keys(copy);
  if (keys.length === 0) return value;
  const k = keys[path[0]! % keys.length]!;
  (copy as Record<string, unknown>)[k] = mutate((copy as Record<string, unknown>)[k], path.slice(1), value);
  return copy;
}

const { dir: shared } = await makeBroker();
{
  const b = await openBroker(shared);
  await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
  await b.keystore.revoke('key-a', 'r');
  await b.keystore.add(KEY_A, { keyId: 'key-b', models: [MODEL_1], policy: 'default' });
  await b.audit.appendRelease(
    { keyId: 'key-b', models: [MODEL_1], teePubkey: 'A'.repeat(43), evidenceDigest: '00'.repeat(32), verdict: { allowed: true, reasons: [] } },
    b.config.signingKey,
  );
  await b.close();
}
const keystoreBytes = readFileSync(join(shared, 'keystore.json'));
const keystoreDoc = JSON.parse(keystoreBytes.toString('utf8'));
const auditLines = readFileSync(join(shared, 'audit.log'), 'utf8').trim().split('\n');
const configText = readFileSync(join(shared, 'config.json'), 'utf8');

describe('broker parsers never throw anything but SealedTensorsError', () => {
  it('keystore.json: arbitrary bytes, arbitrary JSON, and mutations of a real document', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
        expect(['ERR_KEYSTORE']).toContain(await outcome(() => parseKeystoreDocument(bytes)));
      }),
      { numRuns: fuzzRuns(300) },
    );
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (v) => {
        expect(['ERR_KEYSTORE']).toContain(await outcome(() => parseKeystoreDocument(Buffer.from(JSON.stringify(v)))));
      }),
      { numRuns: fuzzRuns(300) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(), { maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), async (path, value) => {
        const r = await outcome(() => parseKeystoreDocument(Buffer.from(JSON.stringify(mutate(keystoreDoc, path, value)))));
        expect(['ok', 'ERR_KEYSTORE', 'ERR_INVALID_ARGUMENT']).toContain(r);
      }),
      { numRuns: fuzzRuns(500) },
    );
  });

  it('a keystore.json with any byte changed is refused by the keystore with a typed error', async () => {
    const config = await loadBrokerConfig(shared);
    const audit = await AuditLog.open(shared);
    try {
      await fc.assert(
        fc.asyncProperty(fc.nat({ max: keystoreBytes.length - 1 }), fc.integer({ min: 1, max: 255 }), async (pos, x) => {
          const bytes = Buffer.from(keystoreBytes);
          bytes[pos]! ^= x;
          writeFileSync(join(shared, 'keystore.json'), bytes);
          const r = await outcome(async () => (await FileKeystore.open(config, audit)).close());
          // Whitespace outside strings is not part of the authenticated (JCS) form; anything else is.
          if (r === 'ok') expect(JSON.parse(bytes.toString('latin1'))).toEqual(keystoreDoc);
          else expect(r).toBe('ERR_KEYSTORE');
        }),
        { numRuns: fuzzRuns(150) },
      );
    } finally {
      writeFileSync(join(shared, 'keystore.json'), keystoreBytes);
      await audit.close();
    }
  });

  it('audit lines: arbitrary bytes and JSON, mutated real lines: checkAuditLine never throws', () => {
    const expected = { seq: 1, prev: JSON.parse(auditLines[1]!).prev as string };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        expect('reason' in checkAuditLine(bytes, expected)).toBe(true);
      }),
      { numRuns: fuzzRuns(500) },
    );
    fc.assert(
      fc.property(fc.nat({ max: auditLines.length - 1 }), fc.array(fc.nat(), { maxLength: 4 }), fc.jsonValue({ maxDepth: 2 }), (i, path, value) => {
        const line = Buffer.from(JSON.stringify(mutate(JSON.parse(auditLines[i]!), path, value)));
        const r = checkAuditLine(line, { seq: i, prev: JSON.parse(auditLines[i]!).prev });
        expect(typeof r).toBe('object');
      }),
      { numRuns: fuzzRuns(500) },
    );
  });

  it('audit.log with arbitrary content, or a real one with bytes changed: verify reports, never throws', async () => {
    const { dir } = await makeBroker();
    const original = readFileSync(join(shared, 'audit.log'));
    writeFileSync(join(dir, 'config.json'), configText);
    writeFileSync(join(dir, 'signing.pub.jwk'), readFileSync(join(shared, 'signing.pub.jwk')));
    writeFileSync(join(dir, 'receipt.pub.jwk'), readFileSync(join(shared, 'receipt.pub.jwk')));
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)),
          fc.tuple(fc.nat({ max: original.length - 1 }), fc.integer({ min: 1, max: 255 })).map(([pos, x]) => {
            const b = Buffer.from(original);
            b[pos]! ^= x;
            return b;
          }),
        ),
        async (bytes) => {
          writeFileSync(join(dir, 'audit.log'), bytes);
          const v = await verifyAuditLog(dir);
          expect(v.ok).toBe(false);
          expect(v.firstBad?.reason).toEqual(expect.any(String));
          // The broker itself refuses (or repairs a torn tail of) whatever verify rejects.
          const opened = await outcome(async () => (await AuditLog.open(dir)).close());
          expect(['ok', 'ERR_AUDIT', 'ERR_BROKER_CONFIG']).toContain(opened);
        },
      ),
      { numRuns: fuzzRuns(120) },
    );
  });

  it('receipts, settings, signing keys, listen addresses, model lists', async () => {
    const verifier = await receiptVerificationKey(JSON.parse(readFileSync(join(shared, 'signing.pub.jwk'), 'utf8')));
    const receipt = JSON.parse(auditLines.at(-1)!).receipt as string;
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom('a', 'B', '.', '-', '_', '0') }), fc.anything()), async (s) => {
        expect(await outcome(() => verifyReceipt(s, verifier))).toBe('ERR_AUDIT');
      }),
      { numRuns: fuzzRuns(300) },
    );
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: receipt.length - 1 }), fc.constantFrom('A', 'z', '-', '.', '0'), async (pos, c) => {
        const s = receipt.slice(0, pos) + c + receipt.slice(pos + 1);
        expect(['ok', 'ERR_AUDIT']).toContain(await outcome(() => verifyReceipt(s, verifier)));
        if (s !== receipt) expect(await outcome(() => verifyReceipt(s, verifier))).not.toBe('ok');
      }),
      { numRuns: fuzzRuns(200) },
    );
    const settings = JSON.parse(configText);
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 3 }), fc.jsonValue({ maxDepth: 2 }), fc.string(), (path, value, text) => {
        for (const input of [JSON.stringify(mutate(settings, path, value)), text]) {
          try {
            parseBrokerSettings(input);
          } catch (err) {
            expect((err as SealedTensorsError).code).toBe('ERR_BROKER_CONFIG');
          }
        }
        try {
          parseListen(text);
        } catch (err) {
          expect((err as SealedTensorsError).code).toBe('ERR_BROKER_CONFIG');
        }
        try {
          checkModels(value, 'm');
        } catch (err) {
          expect((err as SealedTensorsError).code).toBe('ERR_INVALID_ARGUMENT');
        }
      }),
      { numRuns: fuzzRuns(500) },
    );
    const jwk = JSON.parse(readFileSync(join(shared, 'signing.jwk'), 'utf8'));
    const pub = readFileSync(join(shared, 'signing.pub.jwk'), 'utf8');
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(), { maxLength: 2 }), fc.jsonValue({ maxDepth: 1 }), async (path, value) => {
        const r = await outcome(() => loadSigningKey(JSON.stringify(mutate(jwk, path, value)), pub));
        expect(['ok', 'ERR_BROKER_CONFIG']).toContain(r);
      }),
      { numRuns: fuzzRuns(200) },
    );
  });

  it('formatAuditLine output always passes checkAuditLine at its place', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.stringMatching(/^[a-z][A-Za-z0-9_]{0,10}$/), fc.jsonValue({ maxDepth: 3 })), (fields) => {
        const clean = Object.fromEntries(Object.entries(fields).filter(([k]) => !['seq', 'time', 'prev', 'event', 'receipt', 'generation', 'keyId'].includes(k)));
        const prev = 'ab'.repeat(32);
        let line: Uint8Array;
        try {
          line = formatAuditLine(7, new Date(0).toISOString(), prev, 'attest', clean);
        } catch (err) {
          // Only values JSON cannot carry faithfully (e.g. -0 becomes 0) are refused.
          expect((err as SealedTensorsError).code).toBe('ERR_INVALID_ARGUMENT');
          return;
        }
        expect(checkAuditLine(line, { seq: 7, prev })).toHaveProperty('entry');
      }),
      { numRuns: fuzzRuns(300) },
    );
  });
});
