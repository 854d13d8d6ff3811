/**
 * A Bearer token for az-snp-vtpm evidence: Azure's binding is the 48-byte SHA-384 digest in the
 * vTPM quote's nonce (not 64 padded bytes), so the token's claims carry 48 bytes of report data.
 * The token must still be accepted at /resource, as the cookie of the same session is. The session
 * is the one /attest keeps for Trustee's v2 vector (its verified claims, its 48-byte binding): a
 * fresh nonce cannot be bound into a real quote, so the token is issued from it directly with the
 * broker's own key.
 */
import { flattenedDecrypt, type CryptoKey } from 'jose';
import { describe, expect, it } from 'vitest';
import { certs, vec } from '../attestation/helpers.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { verifyEvidence } from '../../src/attestation/verify.js';
import { decodePrimaryEvidence } from '../../src/protocol/evidence.js';
import { parseFlattenedJwe } from '../../src/protocol/messages.js';
import { prepareSigner } from '../../src/broker/signer.js';
import { issueToken, verifyToken } from '../../src/broker/tokens.js';
import type { AttestedSession } from '../../src/broker/sessions.js';
import { DATA_KEY, resource, teeKeyPair, useFixtures } from './fixture.js';

const fixture = useFixtures();
const ISSUER = 'test-broker';
const AT = Date.parse('2026-07-16T00:00:00Z');
// Trustee's deps/verifier az_snp_vtpm test: the nonce of evidence-v2.json (the 48-byte binding).
const V2_NONCE = '982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef';

async function azureSession(): Promise<{ session: AttestedSession; privateKey: CryptoKey }> {
  const d = decodePrimaryEvidence('az-snp-vtpm', JSON.parse(Buffer.from(vec('trustee/az_snp_vtpm_evidence_v2.json')).toString('utf8')));
  const v = await verifyEvidence(d.type, d.evidence, { now: new Date(AT), certificates: certs('sev-snp/ask_ark_milan.pem') });
  expect(v.claims.reportData).toBe(V2_NONCE);
  const { jwk, privateKey } = await teeKeyPair();
  return {
    privateKey,
    session: {
      tee: 'az-snp-vtpm',
      claims: v.claims,
      teePubkey: jwk as never,
      teePubkeyRaw: jwk,
      teePubkeyThumbprint: 'x',
      // What checkPrimaryBinding keeps for az-snp-vtpm: the 48-byte digest, not padded.
      binding: new Uint8Array(Buffer.from(V2_NONCE, 'hex')),
      evidenceDigest: 'cd'.repeat(32),
      expiresAt: AT + 300_000,
      sessionRef: 'r',
    },
  };
}

describe('Bearer tokens for az-snp-vtpm evidence (48-byte binding)', () => {
  it('verifyToken accepts the token the broker issued for Azure evidence, with its 48-byte binding', async () => {
    const { session } = await azureSession();
    const f = await fixture({ issuer: ISSUER });
    const signer = await prepareSigner(f.signing, f.receipt);
    const token = await issueToken(signer, ISSUER, session, 'bm9uY2U=', AT);
    const t = await verifyToken(signer, ISSUER, token, AT);
    expect(Buffer.from(t.binding).toString('hex')).toBe(V2_NONCE);
    expect(t.claims.tee).toBe('azure-snp');
  });

  it('GET /resource with that Bearer token releases a key whose policy accepts the Azure claims', async () => {
    const { session, privateKey } = await azureSession();
    const f = await fixture({ issuer: ISSUER });
    f.clock.ms = AT;
    const pcrs = Object.fromEntries(Object.entries(session.claims.measurements).filter(([k]) => /^pcr(0|4|7|11)$/.test(k)).map(([k, v]) => [k, [v]]));
    const product = session.claims.platform.product!;
    const minTcb = Object.fromEntries(Object.entries(session.claims.tcb).filter(([, v]) => typeof v === 'number'));
    f.policies.policies.set('default', validatePolicy({ version: 1, tees: { 'azure-snp': { measurements: pcrs, minTcb, platform: { product: [product] } } } }));
    const signer = await prepareSigner(f.signing, f.receipt);
    const token = await issueToken(signer, ISSUER, session, 'bm9uY2U=', AT);
    const r = await resource(f, { token });
    expect(r.status, r.text).toBe(200);
    const { plaintext } = await flattenedDecrypt(parseFlattenedJwe(r.json), privateKey);
    expect(Buffer.from(plaintext.subarray(4, 36))).toEqual(Buffer.from(DATA_KEY));
  });
});
