/**
 * Review findings 7 and 8: what a token says about the evidence (debug or simulated evidence is
 * `warning`, not `affirming`), and whom it is from and for (a per-broker issuer and an audience,
 * both checked when the token comes back as a Bearer).
 */
import { calculateJwkThumbprint, decodeJwt, SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import type { Claims } from '../../src/attestation/types.js';
import { DEFAULT_ISSUER_PREFIX, tokenAudience } from '../../src/broker/options.js';
import { prepareSigner } from '../../src/broker/signer.js';
import { issueToken, verifyToken } from '../../src/broker/tokens.js';
import type { AttestedSession } from '../../src/broker/sessions.js';
import { attested, resource, signingKey, teeKeyPair, useFixtures } from './fixture.js';

const fixture = useFixtures();

type Cpu0 = { 'ear.status': string };
const statusOf = (token: string): string => (decodeJwt(token) as unknown as { submods: { cpu0: Cpu0 } }).submods.cpu0['ear.status'];

async function session(claims: Partial<Claims>): Promise<AttestedSession> {
  const { jwk } = await teeKeyPair();
  return {
    tee: 'snp',
    claims: { tee: 'snp', simulated: false, debug: false, measurement: '00', measurements: {}, reportData: 'ab'.repeat(64), tcb: {}, platform: {}, ...claims } as Claims,
    teePubkey: jwk as never,
    teePubkeyRaw: jwk,
    teePubkeyThumbprint: 'x',
    binding: new Uint8Array(64),
    evidenceDigest: 'cd'.repeat(32),
    expiresAt: Date.parse('2026-03-01T12:05:00Z'),
    sessionRef: 'r',
  };
}

describe('tokens: ear.status says what kind of evidence verified', () => {
  it('simulated evidence gives a warning token, and the token still works at /resource', async () => {
    const f = await fixture();
    const s = await attested(f);
    expect(statusOf(s.token)).toBe('warning');
    const r = await resource(f, { token: s.token });
    expect(r.status, r.text).toBe(200);
  });

  it('debug evidence is warning, hardware evidence that is not debug is affirming', async () => {
    const m = await signingKey();
    const signer = await prepareSigner(m, await signingKey('receipt'));
    const now = Date.parse('2026-03-01T12:00:00Z');
    expect(statusOf(await issueToken(signer, 'iss', await session({ debug: true }), 'n', now))).toBe('warning');
    expect(statusOf(await issueToken(signer, 'iss', await session({ debug: false }), 'n', now))).toBe('affirming');
    expect(statusOf(await issueToken(signer, 'iss', await session({ simulated: true }), 'n', now))).toBe('warning');
  });
});

describe('tokens: issuer per broker and an audience', () => {
  it('the default issuer names this broker\'s signing key, and tokens carry an audience', async () => {
    const f = await fixture();
    const s = await attested(f);
    const p = decodeJwt(s.token);
    expect(p.iss).toBe(`${DEFAULT_ISSUER_PREFIX}:${await calculateJwkThumbprint(f.signing.publicJwk, 'sha256')}`);
    expect(p.aud).toBe(tokenAudience(p.iss!));
    const g = await fixture();
    expect(decodeJwt((await attested(g)).token).iss).not.toBe(p.iss);
  });

  it('a token signed by this broker\'s key without the audience, with another audience or another issuer is 401', async () => {
    const f = await fixture();
    const s = await attested(f);
    const payload = decodeJwt(s.token) as JWTPayload;
    const header = { alg: 'ES256', typ: 'JWT', kid: f.signing.kid };
    const variants: JWTPayload[] = [
      (({ aud: _a, ...rest }) => rest)(payload),
      { ...payload, aud: 'some-other-service' },
      { ...payload, aud: [String(payload.aud), 'x'] },
      { ...payload, iss: 'sealed-tensors-broker' },
    ];
    for (const v of variants) {
      const token = await new SignJWT(v).setProtectedHeader(header).sign(f.signing.privateKey);
      const r = await resource(f, { token });
      expect(r.status, JSON.stringify(v)).toBe(401);
    }
  });

  it('verifyToken checks the audience it is given', async () => {
    const m = await signingKey();
    const signer = await prepareSigner(m, await signingKey('receipt'));
    const now = Date.parse('2026-03-01T12:00:00Z');
    const token = await issueToken(signer, 'iss-a', await session({}), 'n', now);
    await expect(verifyToken(signer, 'iss-a', token, now)).resolves.toBeDefined();
    await expect(verifyToken(signer, 'iss-a', token, now, 'another-audience')).rejects.toThrow(/not a valid token/);
  });
});
