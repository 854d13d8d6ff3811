import { describe, expect, it } from 'vitest';
import { compactVerify, decodeJwt, decodeProtectedHeader, flattenedDecrypt, importJWK, SignJWT, type CryptoKey } from 'jose';
import { parseFlattenedJwe, problemType } from '../../src/protocol/messages.js';
import { parseManifest, RESOURCE_MAGIC } from '../../src/protocol/resource.js';
import { TEE_PUBKEY_CLAIM_PATH, teePubkeyOfToken } from '../../src/protocol/token.js';
import { startBroker } from '../../src/broker/server.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { json, send, type Reply } from './client.js';
import { attest, attestBody, attested, auth, DATA_KEY, type Fixture, KEY_ID, MODELS, resource, signingKey, simulatedPolicy, teeKeyPair, useFixtures } from './fixture.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from './memory.js';

const fixture = useFixtures();

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
    const verified = await compactVerify(receipt, await importJWK(f.receipt.publicJwk, 'ES256'));
    expect(verified.protectedHeader).toMatchObject({ alg: 'ES256', kid: f.receipt.kid });
    const claims = JSON.parse(Buffer.from(verified.payload).toString('utf8'));
    expect(claims).toMatchObject({ auditSeq: release.seq, auditHash: release.hash, keyId: KEY_ID, models: MODELS, tee: 'simulated', verdict: { allowed: true, reasons: [] }, evidenceDigest: release.evidenceDigest, teePubkey: release.teePubkeyThumbprint });
    expect(verified.protectedHeader.typ).toBe('sealed-tensors-receipt+jws');
    expect((release.detail as Record<string, unknown>).receiptId).toBe(claims.receiptId);
    expect(f.errors).toEqual([]);
  });
});

describe('broker: transports and credentials', () => {
  it('serves HTTPS with the given certificate (Secure cookie); a client that does not trust the CA gets no connection', async () => {
    const f = await fixture({ https: true });
    expect(f.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const a = await auth(f);
    expect(String(a.reply.headers['set-cookie'])).toMatch(/; Secure/);
    const { privateKey, jwk } = await teeKeyPair();
    expect((await attest(f, a.cookie, await attestBody(f, a.nonce, jwk))).status).toBe(200);
    const r = await resource(f, { cookie: a.cookie });
    expect(r.status, r.text).toBe(200);
    expect(Buffer.from((await openRelease(r, privateKey)).key).equals(Buffer.from(DATA_KEY))).toBe(true);
    await expect(send(`${f.url}/kbs/v0/auth`, json({ version: '0.4.0', tee: 'simulated' }))).rejects.toThrow(/certificate/i);
  });

  it('releases to a bearer token alone (no cookie), and to an RSA-OAEP-256 tee-pubkey', async () => {
    const f = await fixture();
    const s = await attested(f, 'rsa');
    const r = await resource(f, { token: s.token });
    expect(r.status, r.text).toBe(200);
    const opened = await openRelease(r, s.privateKey);
    expect(opened.protectedHeader).toMatchObject({ alg: 'RSA-OAEP-256', enc: 'A256GCM' });
    expect(Buffer.from(opened.key).equals(Buffer.from(DATA_KEY))).toBe(true);
    expect(opened.manifest.keyId).toBe(KEY_ID);
  });

  it('refuses plain HTTP off loopback or without the flag, and a signing key that does not match its public JWK', async () => {
    const base = { keystore: new MemoryKeystore(), policies: new MemoryPolicies(), audit: new MemoryAudit(), signingKey: await signingKey(), receiptKey: await signingKey('receipt'), port: 0, allowSimulated: false };
    await expect(startBroker({ ...base, host: '0.0.0.0', allowPlainHttpOnLoopback: true })).rejects.toThrow(/HTTPS/);
    await expect(startBroker({ ...base, host: '127.0.0.1' })).rejects.toThrow(/HTTPS/);
    const other = await signingKey();
    await expect(startBroker({ ...base, host: '127.0.0.1', allowPlainHttpOnLoopback: true, signingKey: { ...base.signingKey, publicJwk: other.publicJwk } })).rejects.toThrow(/sign\/verify/);
  });
});

describe('broker: each denial is refused with reasons, audited, and releases nothing', () => {
  it('a replayed nonce: the challenge is single-use, a second /attest with it is 401', async () => {
    const f = await fixture();
    const a = await auth(f);
    const { jwk } = await teeKeyPair();
    const body = await attestBody(f, a.nonce, jwk);
    expect((await attest(f, a.cookie, body)).status).toBe(200);
    expectDenied(f, await attest(f, a.cookie, body), 401, /^session: no pending challenge/);
    // The same evidence under a fresh challenge does not bind it.
    const b = await auth(f);
    expectDenied(f, await attest(f, b.cookie, body), 401, /runtime-data\.nonce is not the nonce/);
    const c = await auth(f);
    const replay = structuredClone(body) as { 'runtime-data': { nonce: string } };
    replay['runtime-data'].nonce = c.nonce;
    expectDenied(f, await attest(f, c.cookie, replay), 403, /^broker\.reportData: report data is not/);
  });

  it('an expired challenge (60 s by default) is 401', async () => {
    const f = await fixture();
    const a = await auth(f);
    const { jwk } = await teeKeyPair();
    const body = await attestBody(f, a.nonce, jwk);
    f.clock.ms += 60_000;
    expectDenied(f, await attest(f, a.cookie, body), 401, /challenge expired/);
  });

  it('a tee-pubkey the evidence does not bind is 403 (evidence bound to another key)', async () => {
    const f = await fixture();
    const a = await auth(f);
    const mine = await teeKeyPair();
    const attacker = await teeKeyPair();
    const r = await attest(f, a.cookie, await attestBody(f, a.nonce, attacker.jwk, { bindKey: mine.jwk }));
    expectDenied(f, r, 403, /^broker\.reportData/);
    const checks = (f.audit.entries.at(-1)!.detail as { checks: { check: string; ok: boolean }[] }).checks;
    expect(checks.filter((c) => !c.ok).map((c) => c.check)).toEqual(['broker.reportData']);
  });

  it('evidence for another nonce is 403', async () => {
    const f = await fixture();
    const a = await auth(f);
    const b = await auth(f);
    const { jwk } = await teeKeyPair();
    expectDenied(f, await attest(f, a.cookie, await attestBody(f, a.nonce, jwk, { bindNonce: b.nonce })), 403, /^broker\.reportData/);
  });

  it('an unknown, malformed, missing or doubled cookie is 401 at /attest and /resource; a cookie not yet attested is 401 at /resource', async () => {
    const f = await fixture();
    const a = await auth(f);
    const { jwk } = await teeKeyPair();
    const body = await attestBody(f, a.nonce, jwk);
    expectDenied(f, await attest(f, 'A'.repeat(43), body), 401, /no pending challenge/);
    expectDenied(f, await attest(f, 'not-a-session', body), 401, /not one this broker issues/);
    const j = json(body);
    expectDenied(f, await f.send('/kbs/v0/attest', j), 401, /no kbs-session-id cookie/);
    expectDenied(f, await f.send('/kbs/v0/attest', { ...j, headers: { ...j.headers, cookie: `kbs-session-id=${a.cookie}; kbs-session-id=${'B'.repeat(43)}` } }), 401, /2 kbs-session-id cookies/);
    const pending = await auth(f);
    expectDenied(f, await resource(f, { cookie: pending.cookie }), 401, /no attested session/);
    expectDenied(f, await resource(f, { cookie: 'A'.repeat(43) }), 401, /no attested session/);
    expectDenied(f, await resource(f), 401, /neither a kbs-session-id cookie nor a bearer token/);
  });

  it('a token signed by another key, with alg none, or mangled is 401', async () => {
    const f = await fixture();
    const s = await attested(f);
    const other = await signingKey(f.signing.kid);
    const forged = await new SignJWT(decodeJwt(s.token)).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: f.signing.kid, jwk: other.publicJwk }).sign(other.privateKey);
    expectDenied(f, await resource(f, { token: forged }), 401, /^token: not signed by this broker/);
    const [h, p] = s.token.split('.');
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${p}.`;
    expectDenied(f, await resource(f, { token: none }), 401, /^token: /);
    expectDenied(f, await resource(f, { token: `${h}.${p}.AAAA` }), 401, /^token: /);
    // A bearer header decides alone: a valid cookie does not rescue a bad token.
    const r = await f.send(`/kbs/v0/resource/sealed-tensors/data-key/${KEY_ID}`, { method: 'GET', headers: { cookie: `kbs-session-id=${s.cookie}`, authorization: 'Basic eDp5' } });
    expectDenied(f, r, 401, /must be "Bearer <token>"/);
  });

  it('an expired token or session is 401', async () => {
    const f = await fixture();
    const s = await attested(f);
    f.clock.ms += 300_000;
    expectDenied(f, await resource(f, { token: s.token }), 401, /^token: expired/);
    expectDenied(f, await resource(f, { cookie: s.cookie }), 401, /no attested session/);
  });

  it('a revoked key is 403 with the reason, never released', async () => {
    const f = await fixture();
    const s = await attested(f);
    await f.keystore.revoke(KEY_ID, 'model retired');
    expectDenied(f, await resource(f, { cookie: s.cookie }), 403, /^key\.revoked: .*model retired/);
  });

  it('a key bound to no sealed model is 403 and never released (no model list denies by default)', async () => {
    const f = await fixture();
    const s = await attested(f);
    await f.keystore.setModels(KEY_ID, []);
    expectDenied(f, await resource(f, { cookie: s.cookie }), 403, /^key\.models: key "model-key-1" is bound to no sealed model/);
  });

  it('a policy that denies (measurement) is 403 naming the failed check; a missing policy denies by default', async () => {
    const f = await fixture();
    const s = await attested(f);
    f.policies.policies.set('default', simulatedPolicy('11'.repeat(48)));
    expectDenied(f, await resource(f, { cookie: s.cookie }), 403, /^policy\.measurements\.measurement: measurement [0-9a-f]{96} is not among/);
    await f.keystore.setPolicy(KEY_ID, 'nope');
    expectDenied(f, await resource(f, { cookie: s.cookie }), 403, /^policy\.missing: key "model-key-1" names policy "nope"/);
  });

  it('simulated evidence: refused at /attest when the broker does not allow it, and at /resource when the key\'s policy does not', async () => {
    const f = await fixture({ allowSimulated: false });
    const a = await auth(f);
    const { jwk } = await teeKeyPair();
    expectDenied(f, await attest(f, a.cookie, await attestBody(f, a.nonce, jwk)), 403, /^broker\.simulated: evidence is SIMULATED/);

    const g = await fixture();
    const s = await attested(g);
    g.policies.policies.set('default', (await import('../../src/attestation/policy/policy.js')).validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'.repeat(48)] } } } }));
    expectDenied(g, await resource(g, { cookie: s.cookie }), 403, /^policy\.simulated: evidence is SIMULATED/);
  });

  it('simulated evidence from a root the broker does not trust is 403', async () => {
    const f = await fixture();
    const a = await auth(f);
    const { jwk } = await teeKeyPair();
    expectDenied(f, await attest(f, a.cookie, await attestBody(f, a.nonce, jwk, { tee: new SimulatedTee() })), 403, /^ERR_EVIDENCE_CHAIN: simulated evidence is signed by root key/);
  });

  it('a resource that is not a known data key is 404; a malformed path is 400', async () => {
    const f = await fixture();
    const s = await attested(f);
    expectDenied(f, await resource(f, { cookie: s.cookie, path: '/kbs/v0/resource/sealed-tensors/data-key/unknown-key' }), 404, /^resource: no key "unknown-key"/);
    expectDenied(f, await resource(f, { cookie: s.cookie, path: `/kbs/v0/resource/default/key/${KEY_ID}` }), 404, /^resource: this broker serves only sealed-tensors\/data-key/);
    expectDenied(f, await resource(f, { cookie: s.cookie, path: '/kbs/v0/resource/sealed-tensors/data-key/...' }), 400, /not allowed/);
    expectDenied(f, await resource(f, { cookie: s.cookie, path: '/kbs/v0/resource/sealed-tensors/data-key/a/b' }), 400, /<repository>\/<type>\/<tag>/);
  });

  it('an oversized body is 413 (declared or streamed), malformed JSON 400, another media type 415, a wrong method 405', async () => {
    const f = await fixture();
    const a = await auth(f);
    const big = `{"x":"${'a'.repeat(1024 * 1024)}"}`;
    expectDenied(f, await f.send('/kbs/v0/attest', { headers: { 'content-type': 'application/json', cookie: `kbs-session-id=${a.cookie}` }, body: big }), 413, /larger than 1048576 bytes/);
    // The challenge was consumed by that request all the same.
    const { jwk } = await teeKeyPair();
    expectDenied(f, await attest(f, a.cookie, await attestBody(f, a.nonce, jwk)), 401, /no pending challenge/);
    const streamed = await new Promise<Reply>((resolve, reject) => {
      import('node:http').then(({ request }) => {
        const req = request(`${f.url}/kbs/v0/auth`, { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString(), json: JSON.parse(Buffer.concat(chunks).toString()) }));
        });
        req.on('error', reject);
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        let sent = 0;
        const pump = (): void => {
          while (sent < 2 * 1024 * 1024) {
            sent += chunk.length;
            if (!req.write(chunk)) return void req.once('drain', pump);
          }
          req.end();
        };
        pump();
      }, reject);
    });
    expectDenied(f, streamed, 413, /larger than 1048576 bytes/);
    f.clock.ms += 61_000; // malformed requests from one address are audited once per window: start a new one
    expectDenied(f, await f.send('/kbs/v0/auth', { headers: { 'content-type': 'application/json' }, body: '{"version":' }), 400, /not valid JSON/);
    f.clock.ms += 61_000; // malformed requests from one address are audited once per window: start a new one
    expectDenied(f, await f.send('/kbs/v0/auth', { headers: { 'content-type': 'text/plain' }, body: '{}' }), 415, /must be JSON/);
    f.clock.ms += 61_000; // malformed requests from one address are audited once per window: start a new one
    expectDenied(f, await f.send('/kbs/v0/auth', json({ version: '0.1.0', tee: 'simulated' })), 400, /version "0\.1\.0" is not supported/);
    f.clock.ms += 61_000; // malformed requests from one address are audited once per window: start a new one
    const m = await f.send('/kbs/v0/auth', { method: 'GET' });
    expectDenied(f, m, 405, /^method: GET/);
    expect(m.headers.allow).toBe('POST');
    const unknown = await f.send('/kbs/v0/nothing', { method: 'GET' });
    expect(unknown.status).toBe(404);
  });

  it('beyond 10_000 pending challenges /auth is 429 (audited) until challenges expire', async () => {
    const f = await fixture();
    const { Agent } = await import('node:http');
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    try {
      const body = json({ version: '0.4.0', tee: 'simulated' });
      let ok = 0;
      for (let batch = 0; batch < 10_000 / 500; batch++) {
        const replies = await Promise.all(Array.from({ length: 500 }, () => f.send('/kbs/v0/auth', { ...body, agent })));
        ok += replies.filter((r) => r.status === 200).length;
      }
      expect(ok).toBe(10_000);
      expectDenied(f, await f.send('/kbs/v0/auth', { ...body, agent }), 429, /^challenges: 10000 challenges are pending/);
      f.clock.ms += 60_000;
      expect((await f.send('/kbs/v0/auth', { ...body, agent })).status).toBe(200);
    } finally {
      agent.destroy();
    }
  });

  it('more requests than the per-client bucket holds are 429, audited once per episode', async () => {
    const f = await fixture({ rateLimit: { burst: 3, perSecond: 0.001 } });
    for (let i = 0; i < 3; i++) expect((await f.send('/kbs/v0/auth', json({ version: '0.4.0', tee: 'simulated' }))).status).toBe(200);
    const r = await f.send('/kbs/v0/auth', json({ version: '0.4.0', tee: 'simulated' }));
    expectDenied(f, r, 429, /^rate: more than 3 requests/);
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    for (let i = 0; i < 5; i++) expect((await resource(f)).status).toBe(429);
    expect(f.audit.entries.filter((e) => e.reasons?.some((x) => x.startsWith('rate:')))).toHaveLength(1);
  });
});

describe('broker: real evidence through /attest', () => {
  /** The attest body for real evidence in Trustee's tee-evidence shape. */
  const trusteeBody = (nonce: string, jwk: object, primary: unknown) => ({ 'runtime-data': { nonce, 'tee-pubkey': jwk }, 'tee-evidence': { primary_evidence: primary, additional_evidence: '' } });
  const onlyBindingFailed = (f: Fixture, r: Reply): { check: string; ok: boolean }[] => {
    expectDenied(f, r, 403, /^broker\.reportData: report data is not SHA-384/);
    expect((r.json as { reasons: string[] }).reasons).toHaveLength(1);
    const entry = f.audit.entries.at(-1)!;
    expect(entry).toMatchObject({ event: 'attest', verdict: 'deny', tee: 'snp' });
    const checks = (entry.detail as { checks: { check: string; ok: boolean }[] }).checks;
    expect(checks.filter((c) => !c.ok).map((c) => c.check)).toEqual(['broker.reportData']);
    return checks;
  };

  it('Trustee\'s own SEV-SNP evidence (Genoa, SnpEvidence with its VCEK) verifies at its date and is denied for the binding alone', async () => {
    const { certs, vec } = await import('../attestation/helpers.js');
    // Trustee ships AMD's ASK/ARK built in; our broker is given them (the ARK is pinned either way).
    const f = await fixture({ verifyOptions: { certificates: certs('sev-snp/ask_ark_genoa.pem') } });
    f.clock.ms = Date.parse('2025-06-01T00:00:00Z');
    const a = await auth(f, 'snp');
    const { jwk } = await teeKeyPair();
    const primary = JSON.parse(Buffer.from(vec('trustee/snp_e2e_evidence.json')).toString('utf8'));
    const checks = onlyBindingFailed(f, await attest(f, a.cookie, trusteeBody(a.nonce, jwk, primary)));
    expect(checks.map((c) => c.check)).toEqual(['snp.signature', 'snp.chain', 'snp.product', 'snp.tcb_extensions', 'snp.hwid', 'broker.tee', 'broker.reportData']);
    expect(f.audit.entries.at(-1)!.evidenceSummary).toMatchObject({ tee: 'snp', measurement: expect.stringMatching(/^6a6519d7/), debug: false });
    expect((f.audit.entries.at(-1)!.detail as Record<string, unknown>).evidenceForm).toMatch(/^sev AttestationReport v3/);
  });

  it('a go-sev-guest Milan report, encoded in Trustee\'s shape with its VCEK in cert_chain, is denied for the binding alone', async () => {
    const { certs, vec } = await import('../attestation/helpers.js');
    const { encodeTeeEvidence } = await import('../../src/protocol/evidence.js');
    const f = await fixture({ verifyOptions: { certificates: certs('sev-snp/ask_ark_milan.pem') } });
    f.clock.ms = Date.parse('2022-09-24T01:00:00Z');
    const a = await auth(f, 'snp');
    const { jwk } = await teeKeyPair();
    const te = encodeTeeEvidence('snp', vec('sev-snp/gsg_milan_report.bin'), { snpCertificates: [{ type: 'VCEK', der: vec('sev-snp/gsg_milan_vcek.der') }] });
    const checks = onlyBindingFailed(f, await attest(f, a.cookie, trusteeBody(a.nonce, jwk, te.primary_evidence)));
    expect(checks.map((c) => c.check)).toEqual(['snp.signature', 'snp.chain', 'snp.product', 'snp.tcb_extensions', 'snp.hwid', 'broker.tee', 'broker.reportData']);
    expect(f.audit.entries.at(-1)!.evidenceSummary).toMatchObject({ measurement: 'b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01' });

    // The same report judged at a date before its VCEK was issued fails the chain: the verifier runs on the broker's clock.
    f.clock.ms = Date.parse('2000-01-01T00:00:00Z');
    const b = await auth(f, 'snp');
    expectDenied(f, await attest(f, b.cookie, trusteeBody(b.nonce, jwk, te.primary_evidence)), 403, /^ERR_EVIDENCE_CHAIN: /);
  });

  it('evidence that does not decode is 400 naming the member; an unsupported tee is refused at /auth', async () => {
    const f = await fixture();
    const a = await auth(f, 'snp');
    const { jwk } = await teeKeyPair();
    expectDenied(f, await attest(f, a.cookie, trusteeBody(a.nonce, jwk, { attestation_report: {} })), 400, /^ERR_EVIDENCE_FORMAT: .*attestation_report/);
    expectDenied(f, await f.send('/kbs/v0/auth', json({ version: '0.4.0', tee: 'sample' })), 400, /tee "sample" is not supported/);
  });
});

describe('broker: release receipts through an audit sink that signs them into the entry', () => {
  it('uses the sink\'s appendRelease (the file-backed AuditLog\'s way): the receipt it signed is the one answered', async () => {
    const f = await fixture();
    const calls: { fields: Record<string, unknown>; kid: string }[] = [];
    const sink = f.audit as MemoryAudit & { appendRelease?: unknown };
    sink.appendRelease = async (fields: Record<string, unknown>, key: { kid: string; privateKey: CryptoKey }) => {
      calls.push({ fields, kid: key.kid });
      const prev = f.audit.entries.at(-1)!.hash;
      const receiptId = 'r'.repeat(22);
      const { CompactSign } = await import('jose');
      const claims = { ...fields, receiptId, auditSeq: f.audit.entries.length + 1, auditHash: prev, iat: 1 };
      const receipt = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'sealed-tensors-receipt+jws' }).sign(key.privateKey);
      const at = await f.audit.append({ event: 'release', verdict: 'allow', detail: { ...fields, receipt } });
      return { ...at, receipt, receiptId };
    };
    const s = await attested(f);
    const r = await resource(f, { cookie: s.cookie });
    expect(r.status, r.text).toBe(200);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.kid).toBe(f.receipt.kid);
    expect(calls[0]!.fields).toMatchObject({ keyId: KEY_ID, models: MODELS, teePubkey: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), evidenceDigest: expect.stringMatching(/^[0-9a-f]{64}$/), verdict: { allowed: true, reasons: [] }, tee: 'simulated' });
    const v = await compactVerify(String(r.headers['sealed-tensors-receipt']), await importJWK(f.receipt.publicJwk, 'ES256'));
    expect(JSON.parse(Buffer.from(v.payload).toString('utf8'))).toMatchObject({ receiptId: 'r'.repeat(22), keyId: KEY_ID });
  });
});

describe('broker: failures inside the broker release nothing', () => {
  it('an audit sink that fails turns a release into a 500 that names no internals; the JWE is never sent', async () => {
    const f = await fixture();
    const s = await attested(f);
    const append = f.audit.append.bind(f.audit);
    f.audit.append = async (e) => {
      if (e.event === 'release') throw new Error('disk full at /secret/path');
      return append(e);
    };
    const r = await resource(f, { cookie: s.cookie });
    expect(r.status).toBe(500);
    expect(r.text).not.toMatch(/secret|disk full/);
    expect(r.json).toMatchObject({ type: problemType('ERR_BROKER'), status: 500 });
    expect(r.headers['sealed-tensors-receipt']).toBeUndefined();
    expect(f.errors.map(String)).toEqual([expect.stringMatching(/disk full/)]);
    expect(f.audit.entries.at(-1)).toMatchObject({ verdict: 'deny', reasons: ['internal error'] });
  });

  it('a key revoked between the lookup and the release is 403; a keystore that throws is 500', async () => {
    const f = await fixture();
    const s = await attested(f);
    const get = f.keystore.get.bind(f.keystore);
    f.keystore.get = async (id) => {
      const rec = await get(id);
      await f.keystore.revoke(id, 'raced');
      return rec;
    };
    expectDenied(f, await resource(f, { cookie: s.cookie }), 403, /^key\.revoked: /);
    f.keystore.get = async () => {
      throw new Error('backend unreachable');
    };
    const r = await resource(f, { cookie: s.cookie });
    expect(r.status).toBe(500);
    expect(r.text).not.toMatch(/backend/);
  });

  it('close() stops accepting, lets an in-flight release finish, then resolves', async () => {
    const f = await fixture();
    const s = await attested(f);
    let unblock!: () => void;
    const gate = new Promise<void>((resolve) => (unblock = resolve));
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const withDataKey = f.keystore.withDataKey.bind(f.keystore);
    f.keystore.withDataKey = async (id, fn) => {
      entered();
      await gate;
      return withDataKey(id, fn);
    };
    const pending = resource(f, { cookie: s.cookie });
    await inside;
    let closed = false;
    const closing = f.broker.close().then(() => (closed = true));
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false);
    await expect(send(`${f.url}/kbs/v0/auth`, json({ version: '0.4.0', tee: 'simulated' }))).rejects.toThrow();
    unblock();
    const r = await pending;
    expect(r.status).toBe(200);
    await closing;
    expect(closed).toBe(true);
  });
});

describe('broker: random requests', () => {
  it('random bodies, headers and paths at each endpoint never produce a 500 or a release', async () => {
    const fc = (await import('fast-check')).default;
    const { fuzzRuns } = await import('../helpers/fuzz.js');
    const f = await fixture();
    const s = await attested(f);
    const jsonish = fc.oneof(
      fc.json(),
      fc.string(),
      fc.record({ version: fc.oneof(fc.constant('0.4.0'), fc.string()), tee: fc.oneof(fc.constantFrom('simulated', 'snp', 'tdx', '__proto__'), fc.string()), 'extra-params': fc.anything() }, { requiredKeys: [] }).map((x) => JSON.stringify(x)),
      fc.record(
        {
          'runtime-data': fc.record({ nonce: fc.oneof(fc.base64String(), fc.constant(Buffer.alloc(32).toString('base64'))), 'tee-pubkey': fc.oneof(fc.constant(s.jwk), fc.object(), fc.record({ kty: fc.constantFrom('EC', 'RSA'), crv: fc.string(), x: fc.base64String(), y: fc.base64String(), n: fc.string(), e: fc.string() }, { requiredKeys: ['kty'] })) }, { requiredKeys: [] }),
          'tee-evidence': fc.oneof(fc.anything(), fc.record({ evidence: fc.base64String() }), fc.record({ primary_evidence: fc.record({ evidence: fc.base64String() }), additional_evidence: fc.oneof(fc.string(), fc.anything()) })),
          'init-data': fc.anything(),
        },
        { requiredKeys: [] },
      ).map((x) => JSON.stringify(x)),
    );
    const cookie = fc.oneof(fc.constant(undefined), fc.constant(s.cookie), fc.string(), fc.base64String());
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/kbs/v0/auth', '/kbs/v0/attest', '/kbs/v0/resource/'),
        jsonish,
        cookie,
        fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain'),
        fc.stringMatching(/^[A-Za-z0-9._~/-]{0,40}$/),
        fc.option(fc.string(), { nil: undefined }),
        async (endpoint, body, c, type, tail, bearer) => {
          const headers: Record<string, string> = { 'content-type': type };
          if (c !== undefined && /^[\x21-\x7e]*$/.test(c) && !c.includes(';')) headers.cookie = `kbs-session-id=${c}`;
          if (bearer !== undefined && /^[\x21-\x7e]+$/.test(bearer)) headers.authorization = `Bearer ${bearer}`;
          let r: Reply;
          if (endpoint === '/kbs/v0/resource/') {
            r = await f.send(endpoint + tail, { method: 'GET', headers });
          } else {
            // A fresh challenge sometimes, so the attest path gets past the cookie.
            if (endpoint === '/kbs/v0/attest' && c === s.cookie) headers.cookie = `kbs-session-id=${(await auth(f)).cookie}`;
            r = await f.send(endpoint, { headers, body });
          }
          expect(r.status).not.toBe(500);
          expect(r.text).not.toContain('ciphertext');
          expect(r.headers['sealed-tensors-receipt']).toBeUndefined();
          if (r.status >= 400) expect(r.json).toMatchObject({ type: expect.stringMatching(/^https:\/\/sealed-tensors\.dev\/errors\/ERR_/), status: r.status });
        },
      ),
      { numRuns: fuzzRuns(300) },
    );
    expect(f.keystore.handedOut).toHaveLength(0);
    expect(f.audit.entries.some((e) => e.event === 'release')).toBe(false);
    expect(f.errors).toEqual([]);
  });
});
