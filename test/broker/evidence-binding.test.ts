/**
 * The per-kind binding checks accept exactly what they must: Azure's vTPM nonce as Trustee's own test
 * expects it (the 48-byte digest, and v2's user-data), Nitro's document nonce only.
 */
import { describe, expect, it } from 'vitest';
import { certs, vec } from '../attestation/helpers.js';
import { verifyEvidence } from '../../src/attestation/verify.js';
import { decodePrimaryEvidence } from '../../src/protocol/evidence.js';
import { checkPrimaryBinding } from '../../src/broker/evidence-binding.js';
import type { Claims } from '../../src/attestation/types.js';

// Trustee's deps/verifier az_snp_vtpm test: the nonce of evidence-v2.json.
const V2_NONCE = '982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef';

describe('broker binding checks per evidence kind', () => {
  it('Azure v2: a binding whose SHA-384 digest is the quote nonce passes both checks; one byte off fails both', async () => {
    const d = decodePrimaryEvidence('az-snp-vtpm', JSON.parse(Buffer.from(vec('trustee/az_snp_vtpm_evidence_v2.json')).toString('utf8')));
    const v = await verifyEvidence(d.type, d.evidence, { now: new Date('2026-07-16T00:00:00Z'), certificates: certs('sev-snp/ask_ark_milan.pem') });
    const binding = new Uint8Array(64);
    binding.set(Buffer.from(V2_NONCE, 'hex'));
    const ok = checkPrimaryBinding(d, v.claims, binding);
    expect(ok.checks.map((c) => [c.check, c.ok])).toEqual([['broker.reportData', true], ['broker.userData', true]]);
    expect(Buffer.from(ok.expected).toString('hex')).toBe(V2_NONCE);
    expect(v.claims.reportData).toBe(V2_NONCE);
    binding[47]! ^= 1;
    expect(checkPrimaryBinding(d, v.claims, binding).checks.map((c) => c.ok)).toEqual([false, false]);
  });

  it('Azure: the 64-byte padded value in the quote nonce is not Trustee\'s binding and is refused', () => {
    const binding = new Uint8Array(64).fill(7);
    const claims = { tee: 'azure-snp', reportData: Buffer.from(binding).toString('hex'), platform: {} } as unknown as Claims;
    expect(checkPrimaryBinding({ type: 'azure-snp', form: 'az-snp-vtpm v1' }, claims, binding).checks[0]!.ok).toBe(false);
    const exact = { ...claims, reportData: Buffer.from(binding.subarray(0, 48)).toString('hex') };
    expect(checkPrimaryBinding({ type: 'azure-snp', form: 'az-snp-vtpm v1' }, exact, binding).checks[0]!.ok).toBe(true);
  });

  it('Nitro: only the document nonce counts; the same bytes in user_data do not bind', () => {
    const binding = new Uint8Array(64).fill(9);
    const h = Buffer.from(binding).toString('hex');
    const base = { tee: 'nitro', reportData: h, measurements: {}, tcb: {} } as unknown as Claims;
    expect(checkPrimaryBinding({ type: 'nitro', form: 'x' }, { ...base, platform: { nonce: h } }, binding).checks[0]!.ok).toBe(true);
    expect(checkPrimaryBinding({ type: 'nitro', form: 'x' }, { ...base, platform: { userData: h } }, binding).checks[0]!.ok).toBe(false);
    expect(checkPrimaryBinding({ type: 'nitro', form: 'x' }, { ...base, platform: { nonce: `${h}00` } }, binding).checks[0]!.ok).toBe(false);
  });
});
