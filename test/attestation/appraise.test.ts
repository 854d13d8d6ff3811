import { describe, expect, it } from 'vitest';
import { appraiseEvidence } from '../../src/attestation/verify.js';
import { bindReportData } from '../../src/attestation/report-data.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { verifySimulatedEvidence } from '../../src/attestation/verifiers/simulated.js';
import { verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { certs, flip, typedError, vec } from './helpers.js';
import { pinnedTo } from './pinned-policy.js';

const SIM_MEASUREMENT = '43bfcf50b2cd6e4e2398f21f4314d6d326405f93b168c6955a9b13f510d568283e8fe4ce07768bf97d88044a93f0ff18';

describe('bindReportData', () => {
  it('is 64 bytes, deterministic, and changes with either input; length prefixes keep (nonce, key) pairs apart', async () => {
    const nonce = new Uint8Array(32).fill(1);
    const key = new Uint8Array(65).fill(2);
    const a = bindReportData(nonce, key);
    expect(a).toHaveLength(64);
    expect(bindReportData(nonce, key)).toEqual(a);
    expect(bindReportData(flip(nonce, 0, 0), key)).not.toEqual(a);
    expect(bindReportData(nonce, flip(key, 64, 7))).not.toEqual(a);
    // Moving a byte from the nonce to the key must not give the same binding.
    const n2 = new Uint8Array(33).fill(1);
    const k2 = new Uint8Array(64).fill(2);
    n2[32] = 2;
    expect(bindReportData(n2, k2)).not.toEqual(bindReportData(new Uint8Array([...n2.subarray(0, 32)]), new Uint8Array([2, ...k2])));
    await typedError(() => bindReportData(new Uint8Array(8), key), ['ERR_INVALID_ARGUMENT']);
    await typedError(() => bindReportData(nonce, new Uint8Array(0)), ['ERR_INVALID_ARGUMENT']);
  });
});

describe('appraiseEvidence', () => {
  it('binds a session: simulated evidence with the right binding passes an allowing policy, a replay with another nonce does not', async () => {
    const tee = new SimulatedTee();
    const key = new Uint8Array(32).fill(9);
    const nonce = new Uint8Array(32).fill(3);
    const evidence = await tee.getEvidence(bindReportData(nonce, key));
    const measurement = verifySimulatedEvidence(evidence, { trustedRoots: [tee.rootFingerprint] }).claims.measurement;
    const policy = validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [measurement] } } } });
    const ok = await appraiseEvidence('simulated', evidence, { policy, trustedRoots: [tee.rootFingerprint], expectedReportData: bindReportData(nonce, key) });
    expect(ok).toMatchObject({ tee: 'simulated', verified: true, verdict: { allowed: true, reasons: [] } });
    expect(ok.verdict.checks.map((c) => c.check)).toEqual(['simulated.signature', 'simulated.root', 'policy.simulated', 'policy.tee', 'policy.debug', 'policy.measurements.measurement', 'policy.expectedReportData', 'policy.maxAge']);
    const replay = await appraiseEvidence('simulated', evidence, { policy, trustedRoots: [tee.rootFingerprint], expectedReportData: bindReportData(new Uint8Array(32).fill(4), key) });
    expect(replay.verified).toBe(true);
    expect(replay.verdict.allowed).toBe(false);
    const otherKey = await appraiseEvidence('simulated', evidence, { policy, trustedRoots: [tee.rootFingerprint], expectedReportData: bindReportData(nonce, new Uint8Array(32).fill(8)) });
    expect(otherKey.verdict.allowed).toBe(false);
  });

  it('evidence that does not verify is a denying appraisal with the error, not an exception', async () => {
    const tee = new SimulatedTee();
    const ev = await tee.getEvidence(new Uint8Array(64));
    const policy = validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } } } });
    const a = await appraiseEvidence('simulated', flip(ev, 30, 1), { trustedRoots: [tee.rootFingerprint], policy, expectedReportData: new Uint8Array(64).fill(1) });
    expect(a).toMatchObject({ verified: false, claims: null, verdict: { allowed: false }, error: { code: 'ERR_EVIDENCE_SIGNATURE' } });
    expect(a.verdict.reasons[0]).toMatch(/^ERR_EVIDENCE_SIGNATURE: /);
    await typedError(() => appraiseEvidence('sgx' as 'snp', ev, { policy, expectedReportData: new Uint8Array(64).fill(1) }), ['ERR_INVALID_ARGUMENT']);
  });

  it('real SNP evidence: allowed by a policy pinning it at its time, denied after its chain expired', async () => {
    const certificates = certs('sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_genoa.pem');
    const now = new Date('2026-01-01T00:00:00Z');
    const claims = verifySnpReport(vec('sev-snp/azure_genoa_report.bin'), { certificates, now }).claims;
    const { policy, opts } = pinnedTo(claims);
    const expectedReportData = opts.expectedReportData!;
    const a = await appraiseEvidence('snp', vec('sev-snp/azure_genoa_report.bin'), { certificates, now, policy, expectedReportData });
    expect(a.verified && a.verdict.allowed).toBe(true);
    const late = await appraiseEvidence('snp', vec('sev-snp/azure_genoa_report.bin'), { certificates, now: new Date('2033-01-01T00:00:00Z'), policy, expectedReportData });
    expect(late).toMatchObject({ verified: false, error: { code: 'ERR_EVIDENCE_CHAIN' } });
  });
});
