import { afterEach, describe, expect, it } from 'vitest';
import { compactVerify, decodeJwt, decodeProtectedHeader, flattenedDecrypt, importJWK, SignJWT, type CryptoKey } from 'jose';
import { parseFlattenedJwe, problemType } from '../../src/protocol/messages.js';
import { parseManifest, RESOURCE_MAGIC } from '../../src/protocol/resource.js';
import { TEE_PUBKEY_CLAIM_PATH, teePubkeyOfToken } from '../../src/protocol/token.js';
import { startBroker } from '../../src/broker/server.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { json, send, type Reply } from './client.js';
import { attest, attestBody, attested, auth, DATA_KEY, type Fixture, KEY_ID, MODELS, resource, signingKey, simulatedPolicy, startFixture, teeKeyPair } from './fixture.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from './memory.js';

let fixtures: Fixture[] = [];
afterEach(async () => {
  await Promise.all(fixtures.map((f) => f.broker.close()));
  fixtures = [];
});
async function fixture(over: Parameters<typeof startFixture>[0] = {}): Promise<Fixture> {
  const f = await startFixture(over);
  fixtures.push(f);
  return f;
}

/** Opens a released JWE as the session would (here with jose; the product opens it natively). */
async function openRelease(reply: Reply, privateKey: CryptoKey) {
  const jwe = parseFlattenedJwe(reply.json);
  expect(Object.keys(reply.json as object).sort()).toEqual(['ciphertext', 'encrypted_key', 'iv', 'protected', 'tag']);
  const { plaintext, protectedHeader } = await flattenedDecrypt(jwe, privateKey);
  expect(Buffer.from(plaintext.subarray(0, 4)).toString('latin1')).toBe(RESOURCE_MAGIC);
  return { key: plaintext.subarray(4, 36), manifest: parseManifest(plaintext.subarray(36)), protectedHeader };
}

/** A refusal: the status, a ProblemBody, no JWE, no receipt, no data key touched, and a deny entry in the audit log. */
function expectDenied(f: Fixture, reply: Reply, status: number, reason: RegExp): void {
  expect(reply.status, reply.text).toBe(status);
  const body = reply.json as Record<string, unknown>;
  expect(body.status).toBe(status);
  expect(typeof body.type).toBe('string');
  expect(String(body.type)).toMatch(/^https:\/\/sealed-tensors\.dev\/errors\/ERR_/);
  expect(body.reasons).toEqual(expect.arrayContaining([expect.stringMatching(reason)]));
  expect(body).not.toHaveProperty('ciphertext');
  expect(reply.headers['sealed-tensors-receipt']).toBeUndefined();
  expect(f.keystore.handedOut).toHaveLength(0);
  const last = f.audit.entries.at(-1)!;
  expect(last.verdict).toBe('deny');
  expect(last.reasons).toEqual(expect.arrayContaining([expect.stringMatching(reason)]));
  expect(f.audit.entries.some((e) => e.event === 'release')).toBe(false);
}

describe('broker: a full RCAR with the simulated TEE', () => {
  it('auth -> attest -> resource by cookie releases the key as a JWE to the tee-pubkey, with a receipt over the audit entry', async () => {
    const f = await fixture();
    const a = await auth(f);
    expect(Buffer.from(a.nonce, 'base64')).toHaveLength(32);
    expect((a.reply.json as Record<string, unknown>)['extra-params']).toBe('');
    const setCookie = String(a.reply.headers['set-cookie']);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).toMatch(/Path=\/kbs/);
    expect(setCookie).not.toMatch(/Secure/); // plain HTTP in this test

    const { privateKey, jwk } = await teeKeyPair();
    const at = await attest(f, a.cookie, await attestBody(f, a.nonce, jwk));
    expect(at.status, at.text).toBe(200);
    const token = (at.json as { token: string }).token;
    const header = decodeProtectedHeader(token);
    expect(header).toMatchObject({ alg: 'ES256', kid: f.signing.kid, jwk: { kty: 'EC', crv: 'P-256', x: f.signing.publicJwk.x } });
    const payload = decodeJwt(token);
    expect(payload.exp).toBe(Math.floor(f.clock.ms / 1000) + 300);
    expect(teePubkeyOfToken(payload)).toEqual(jwk);
    expect(TEE_PUBKEY_CLAIM_PATH[0]).toBe('submods');
    const attestEntry = f.audit.entries.at(-1)!;
    expect(attestEntry).toMatchObject({ event: 'attest', verdict: 'allow', tee: 'simulated' });
    expect(attestEntry.evidenceDigest).toMatch(/^[0-9a-f]{64}$/);
    expect(attestEntry.teePubkeyThumbprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(attestEntry.evidenceSummary).toMatchObject({ simulated: true, measurement: expect.any(String) });

    const r = await resource(f, { cookie: a.cookie });
    expect(r.status, r.text).toBe(200);
    const opened = await openRelease(r, privateKey);
    expect(opened.protectedHeader).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' });
    expect(Buffer.from(opened.key).equals(Buffer.from(DATA_KEY))).toBe(true);
    expect(opened.manifest).toEqual({ v: 1, keyId: KEY_ID, models: MODELS, notAfter: new Date(f.clock.ms + 300_000).toISOString() });

    // The key buffer the keystore lent was wiped after use.
    expect(f.keystore.handedOut).toHaveLength(1);
    expect(f.keystore.handedOut[0]!.every((b) => b === 0)).toBe(true);

    const release = f.audit.entries.at(-1)!;
    expect(release).toMatchObject({ event: 'release', verdict: 'allow', keyIds: [KEY_ID], models: MODELS, tee: 'simulated', teePubkeyThumbprint: attestEntry.teePubkeyThumbprint, evidenceDigest: attestEntry.evidenceDigest });
    const receipt = String(r.headers['sealed-tensors-receipt']);
    const verified = await compactVerify(receipt, await importJWK(f.signing.publicJwk, 'ES256'));
    expect(verified.protectedHeader).toMatchObject({ alg: 'ES256', kid: f.signing.kid });
    const claims = JSON.parse(Buffer.from(verified.payload).toString('utf8'));
    expect(claims).toMatchObject({ audit: { seq: release.seq, hash: release.hash }, keyId: KEY_ID, models: MODELS, tee: 'simulated', verdict: 'allow', evidenceDigest: release.evidenceDigest, teePubkeyThumbprint: release.teePubkeyThumbprint });
    expect((release.detail as Record<string, unknown>).receiptId).toBe(claims.rid);
    expect(f.errors).toEqual([]);
  });
});
