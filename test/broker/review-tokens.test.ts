/**
 * Outside review (issue 8): token forgery and confusion attempts against /resource that the broker
 * refuses today, kept as regressions. Each forged token carries claims an attacker would want
 * (the genuine session's payload, or one with its measurement changed).
 */
import { createHmac, createPublicKey, type JsonWebKey } from 'node:crypto';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type JWTPayload } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { attested, type Fixture, KEY_ID, resource, signingKey, startFixture } from './fixture.js';

let fixtures: Fixture[] = [];
afterEach(async () => {
  await Promise.all(fixtures.map((f) => f.broker.close()));
  fixtures = [];
});

const b64 = (x: unknown): string => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

async function expect401(f: Fixture, token: string): Promise<void> {
  const r = await resource(f, { token });
  expect(r.status, r.text).toBe(401);
  expect((r.json as { reasons: string[] }).reasons[0]).toMatch(/^token: /);
  expect(r.headers['sealed-tensors-receipt']).toBeUndefined();
}

describe('review: forged and confused tokens at /resource', () => {
  it('HS256 keyed with the broker\'s public key (PEM, JWK text, x), the attacker\'s key in the jwk header or behind jku, another broker\'s key with our kid and issuer, a missing typ or another kid: all 401', async () => {
    const f = await startFixture();
    fixtures.push(f);
    const s = await attested(f);
    const payload = decodeJwt(s.token) as JWTPayload & { submods: { cpu0: Record<string, { claims: Record<string, unknown> }> } };
    const pem = createPublicKey({ key: f.signing.publicJwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
    for (const secret of [pem, JSON.stringify(f.signing.publicJwk), f.signing.publicJwk.x!]) {
      const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: f.signing.kid })}.${b64(payload)}`;
      await expect401(f, `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`);
    }
    const attacker = await generateKeyPair('ES256');
    const better = structuredClone(payload);
    better.submods.cpu0['ear.veraison.annotated-evidence']!.claims.measurement = 'ff'.repeat(48);
    await expect401(f, await new SignJWT(better).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: f.signing.kid, jwk: await exportJWK(attacker.publicKey) }).sign(attacker.privateKey));
    await expect401(f, await new SignJWT(better).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: f.signing.kid, jku: 'https://attacker.invalid/jwks' }).sign(attacker.privateKey));
    const other = await signingKey(f.signing.kid);
    await expect401(f, await new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: f.signing.kid, jwk: other.publicJwk }).sign(other.privateKey));
    // Our own key, but not the shape we issue: no typ (a receipt has another typ), another kid.
    await expect401(f, await new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: f.signing.kid }).sign(f.signing.privateKey));
    await expect401(f, await new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: 'another' }).sign(f.signing.privateKey));
    // The genuine token still works, and stops working for a revoked key.
    expect((await resource(f, { token: s.token })).status).toBe(200);
    await f.keystore.revoke(KEY_ID, 'retired');
    expect((await resource(f, { token: s.token })).status).toBe(403);
  });

  it('a receipt (signed by the same key) is not a token', async () => {
    const f = await startFixture();
    fixtures.push(f);
    const s = await attested(f);
    const r = await resource(f, { cookie: s.cookie });
    expect(r.status).toBe(200);
    await expect401(f, String(r.headers['sealed-tensors-receipt']));
  });
});
