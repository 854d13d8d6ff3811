import { describe, expect, it } from 'vitest';
import * as attestation from '../../src/attestation/index.js';
import { appraiseEvidence } from '../../src/attestation/verify.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { verifyTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import { parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { verifyNitroDocument } from '../../src/attestation/verifiers/nitro.js';
import { verifyNvidiaReport } from '../../src/attestation/verifiers/nvidia.js';
import { verifyAzureEvidence } from '../../src/attestation/verifiers/azure.js';
import type { Claims } from '../../src/attestation/types.js';
import { certs, typedError, vec } from './helpers.js';
import { pinnedTo } from './pinned-policy.js';

const NONCE = new Uint8Array(32).fill(0xab);
const claims = (over: Partial<Claims> = {}): Claims => ({
  tee: 'snp',
  simulated: false,
  measurement: 'aa'.repeat(48),
  measurements: { measurement: 'aa'.repeat(48) },
  reportData: `${'ab'.repeat(32)}${'00'.repeat(32)}`,
  debug: false,
  tcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 },
  platform: { product: 'Genoa', vmpl: '0' },
  ...over,
});
const snpPolicy = (section: Record<string, unknown> = {}, tee = 'snp') => validatePolicy({ version: 1, tees: { [tee]: { measurements: { measurement: ['aa'.repeat(48)] }, ...section } } });
const reasons = (p: attestation.Policy, c: Claims, opts: attestation.EvaluateOptions = { expectedReportData: NONCE }) => evaluatePolicy(p, c, opts).reasons;

/** Every real vector, verified at its own time, with what a broker would need to allow it. */
async function realEvidence(): Promise<{ name: string; claims: Claims }[]> {
  const snp = verifySnpReport(vec('sev-snp/azure_genoa_report.bin'), { now: new Date('2026-01-01T00:00:00Z'), certificates: certs('sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_genoa.pem') });
  const collateral = parseTdxCollateral([{ name: 'dcapqvl', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]);
  const tdx = await verifyTdxQuote(vec('tdx/dcapqvl_quote_v4.bin'), { now: new Date(1752919234 * 1000), collateral });
  const nitro = verifyNitroDocument(vec('nitro/evervault_doc_20221013.cose.bin'), { now: new Date(1665651482136) });
  const azure = await verifyAzureEvidence(vec('azure-vtpm/az_snp_genoa_evidence.json'), { now: new Date('2026-01-01T00:00:00Z'), certificates: certs('azure-vtpm/ask_ark_genoa.pem') });
  const nvidia = verifyNvidiaReport(vec('nvidia/hopper_report_1.bin'), { certificates: certs('nvidia/hopper_cert_chain_1.pem') });
  return [
    { name: 'SNP Genoa', claims: snp.claims },
    { name: 'TDX with collateral', claims: tdx.claims },
    { name: 'Nitro', claims: nitro.claims },
    { name: 'Azure SNP vTPM', claims: azure.claims },
    { name: 'NVIDIA Hopper', claims: nvidia.claims },
  ];
}

describe('default deny', () => {
  it('there is no default policy: the broker entry point needs one, at run time too', async () => {
    expect('DEFAULT_POLICY' in attestation).toBe(false);
    const tee = new SimulatedTee();
    const ev = await tee.getEvidence(new Uint8Array(64).fill(1));
    for (const opts of [undefined, {}, { trustedRoots: [tee.rootFingerprint] }, { policy: null }]) {
      const e = await typedError(() => appraiseEvidence('simulated', ev, opts as never), ['ERR_INVALID_ARGUMENT']);
      expect(e.message).toMatch(/needs options with a policy: there is no default policy/);
    }
  });

  it('a section that lists no measurements denies; so does a call without expected report data', () => {
    expect(reasons(validatePolicy({ version: 1, tees: { snp: {} } }), claims())).toEqual([expect.stringMatching(/^policy\.measurements: the policy lists no measurements for "snp"/)]);
    expect(reasons(snpPolicy(), claims(), {})).toEqual([expect.stringMatching(/^policy\.expectedReportData: no expected report data was given/)]);
    expect(evaluatePolicy(snpPolicy(), claims(), { expectedReportData: NONCE }).allowed).toBe(true);
  });

  it(`genuine evidence of every real TEE is denied by an empty section, and by a pinned one without its nonce`, async () => {
    for (const { name, claims: c } of await realEvidence()) {
      const { policy, opts } = pinnedTo(c);
      expect(evaluatePolicy(policy, c, opts).allowed, name).toBe(true);
      const empty = validatePolicy({ version: 1, tees: { [c.tee]: {} } });
      // NVIDIA does not attest its debug state, so an empty section is also refused on that count.
      const debugToo = c.debugAttested === false ? [expect.stringMatching(/^policy\.debug: .*does not attest its debug state/)] : [];
      expect(evaluatePolicy(empty, c, opts).reasons, name).toEqual([...debugToo, expect.stringMatching(/^policy\.measurements: /)]);
      expect(evaluatePolicy(policy, c, { ...opts, expectedReportData: undefined }).reasons, name).toEqual([expect.stringMatching(/^policy\.expectedReportData: /)]);
      // No section for the TEE at all.
      const other = validatePolicy({ version: 1, tees: { [c.tee === 'tdx' ? 'snp' : 'tdx']: { measurements: { mrTd: ['00'] } } } });
      expect(evaluatePolicy(other, c, opts).allowed, name).toBe(false);
    }
  });

  it('simulated evidence stays denied unless allowSimulated is true, in so many words', async () => {
    const tee = new SimulatedTee();
    const sim = attestation.verifySimulatedEvidence(await tee.getEvidence(new Uint8Array(64).fill(7)), { trustedRoots: [tee.rootFingerprint] }).claims;
    const opts = { expectedReportData: new Uint8Array(64).fill(7), now: new Date(sim.issuedAt!) };
    const section = { measurements: { measurement: [sim.measurement] } };
    expect(evaluatePolicy(validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: section } }), sim, opts).allowed).toBe(true);
    for (const allowSimulated of ['yes', 'true', 1, 'no', {}, null]) {
      await typedError(() => validatePolicy({ version: 1, allowSimulated, tees: { simulated: section } }), ['ERR_POLICY']);
      // A policy built in code is validated by the evaluator too: a truthy non-boolean is an error, not true.
      await typedError(() => evaluatePolicy({ version: 1, allowSimulated, tees: { simulated: section } } as never, sim, opts), ['ERR_POLICY']);
    }
    // A snp section cannot admit simulated evidence dressed as snp.
    expect(reasons(validatePolicy({ version: 1, tees: { snp: section } }), { ...sim, tee: 'snp' }, opts).join()).toMatch(/policy\.simulated: evidence is SIMULATED/);
  });
});

describe('freshness', () => {
  it('report data comes from the caller, per call: a fixed value in a policy is refused by the parser', async () => {
    const e = await typedError(() => validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'] }, reportData: 'ab'.repeat(32) } } }), ['ERR_POLICY']);
    expect(e.message).toMatch(/tees\.snp\.reportData: a fixed report-data value is not freshness/);
    await typedError(() => validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'] }, requireReportData: false } } }), ['ERR_POLICY']);
  });

  it('the expected value must be a nonce: at least 16 bytes, not all zero; a different nonce is a replay', () => {
    const p = snpPolicy();
    expect(reasons(p, claims(), { expectedReportData: NONCE.subarray(0, 15) })).toEqual([expect.stringMatching(/at least 16 random bytes/)]);
    expect(reasons(p, claims({ reportData: '00'.repeat(64) }), { expectedReportData: new Uint8Array(32) })).toEqual([expect.stringMatching(/not all zero/)]);
    expect(reasons(p, claims(), { expectedReportData: new Uint8Array(32).fill(0xac) })).toEqual([expect.stringMatching(/stale or replayed/)]);
    expect(reasons(p, claims(), { expectedReportData: NONCE.subarray(0, 16) })).toEqual([expect.stringMatching(/stale or replayed/)]);
  });

  it('timestamps: default maximum age 300 s, future dates beyond 60 s refused, both configurable; now is an input', () => {
    const at = '2026-03-01T12:00:00.000Z';
    const t = (s: number) => ({ expectedReportData: NONCE, now: new Date(Date.parse(at) + s * 1000) });
    const c = claims({ tee: 'nitro', issuedAt: at, measurements: { pcr0: 'aa'.repeat(48) }, platform: {} });
    const p = validatePolicy({ version: 1, tees: { nitro: { measurements: { pcr0: ['aa'.repeat(48)] } } } });
    expect(reasons(p, c, t(300))).toEqual([]);
    expect(reasons(p, c, t(301))).toEqual([expect.stringMatching(/^policy\.maxAge: evidence is 301 s old, over the 300 s limit/)]);
    expect(reasons(p, c, t(-60))).toEqual([]);
    expect(reasons(p, c, t(-61))).toEqual([expect.stringMatching(/^policy\.maxAge: evidence is dated .*61 s in the future/)]);
    expect(reasons(p, c, t(-365 * 86400))).toEqual([expect.stringMatching(/in the future/)]);
    const loose = validatePolicy({ version: 1, tees: { nitro: { measurements: { pcr0: ['aa'.repeat(48)] }, maxAgeSeconds: 3600, clockSkewSeconds: 120 } } });
    expect(reasons(loose, c, t(3600))).toEqual([]);
    expect(reasons(loose, c, t(-120))).toEqual([]);
    expect(reasons(loose, c, t(-121)).join()).toMatch(/in the future/);
  });

  it('a real Nitro document: allowed at its time, refused 301 s later and when dated ahead of now', () => {
    const c = verifyNitroDocument(vec('nitro/evervault_doc_20221013.cose.bin'), { now: new Date(1665651482136) }).claims;
    const { policy, opts } = pinnedTo(c);
    expect(evaluatePolicy(policy, c, opts).allowed).toBe(true);
    expect(evaluatePolicy(policy, c, { ...opts, now: new Date(1665651482136 + 301_000) }).reasons.join()).toMatch(/over the 300 s limit/);
    expect(evaluatePolicy(policy, c, { ...opts, now: new Date(1665651482136 - 3_600_000) }).reasons.join()).toMatch(/in the future/);
  });
});

describe('TCB defaults', () => {
  const tdx = (status: string | undefined) => claims({ tee: 'tdx', measurements: { mrTd: 'aa'.repeat(48), rtmr1: 'bb'.repeat(48) }, tcb: status === undefined ? {} : { tcbStatus: status }, platform: {} });
  const tdxPolicy = (extra: Record<string, unknown> = {}) => validatePolicy({ version: 1, tees: { tdx: { measurements: { mrTd: ['aa'.repeat(48)], rtmr1: ['bb'.repeat(48)] }, ...extra } } });

  it('TDX: UpToDate by default, a configured list otherwise, Revoked never; no collateral denies', async () => {
    expect(reasons(tdxPolicy(), tdx('UpToDate'))).toEqual([]);
    for (const st of ['OutOfDate', 'SWHardeningNeeded', 'ConfigurationNeeded', 'OutOfDateConfigurationNeeded']) {
      expect(reasons(tdxPolicy(), tdx(st)), st).toEqual([expect.stringMatching(new RegExp(`^policy\\.tcbStatus: TCB status ${st} is not among UpToDate \\(default`))]);
    }
    expect(reasons(tdxPolicy(), tdx('Revoked'))).toEqual(['policy.tcbStatus: TCB status is Revoked: never accepted']);
    expect(reasons(tdxPolicy(), tdx(undefined))).toEqual([expect.stringMatching(/no collateral was evaluated/)]);
    expect(reasons(tdxPolicy(), tdx('NotEvaluated'))).toEqual([expect.stringMatching(/no collateral was evaluated/)]);
    const all = ['UpToDate', 'SWHardeningNeeded', 'ConfigurationNeeded', 'ConfigurationAndSWHardeningNeeded', 'OutOfDate', 'OutOfDateConfigurationNeeded'];
    const lax = tdxPolicy({ tcbStatus: all });
    expect(reasons(lax, tdx('OutOfDate'))).toEqual([]);
    expect(reasons(lax, tdx('Revoked'))).toEqual(['policy.tcbStatus: TCB status is Revoked: never accepted']);
    const e = await typedError(() => tdxPolicy({ tcbStatus: ['UpToDate', 'Revoked'] }), ['ERR_POLICY']);
    expect(e.message).toMatch(/Revoked is never accepted/);
  });

  it('SEV-SNP: a built-in minimum TCB per product, VMPL 0 by default; both can be stated in the policy', () => {
    expect(reasons(snpPolicy(), claims())).toEqual([]);
    expect(reasons(snpPolicy(), claims({ tcb: { bootloader: 10, tee: 0, snp: 22, microcode: 84 } }))).toEqual([expect.stringMatching(/^policy\.minTcb\.snp: snp 22 is below the minimum 23 \(built-in floor/)]);
    expect(reasons(snpPolicy(), claims({ tcb: { bootloader: 10, tee: 0, snp: 23, microcode: 83 } }))).toEqual([expect.stringMatching(/^policy\.minTcb\.microcode: /)]);
    const milan = claims({ tcb: { bootloader: 4, tee: 0, snp: 21, microcode: 219 }, platform: { product: 'Milan', vmpl: '0' } });
    expect(reasons(snpPolicy(), milan)).toEqual([expect.stringMatching(/^policy\.minTcb\.snp: snp 21 is below the minimum 24/)]);
    // Stated in the policy, a floor replaces the built-in one for that component only (lowered: in a section pinned to that product).
    expect(reasons(snpPolicy({ minTcb: { snp: 21 }, platform: { product: ['Milan'] } }), milan)).toEqual([]);
    expect(reasons(snpPolicy({ minTcb: { snp: 21 }, platform: { product: ['Milan'] } }), { ...milan, tcb: { ...milan.tcb, microcode: 218 } })).toEqual([expect.stringMatching(/^policy\.minTcb\.microcode: microcode 218 is below the minimum 219/)]);
    // Turin has no built-in floor: the policy must state one.
    const turin = claims({ tcb: { fmc: 1, bootloader: 1, tee: 1, snp: 1, microcode: 1 }, platform: { product: 'Turin', vmpl: '0' } });
    expect(reasons(snpPolicy(), turin)).toEqual([expect.stringMatching(/^policy\.minTcb: no built-in minimum TCB for SEV-SNP product "Turin"/)]);
    expect(reasons(snpPolicy({ minTcb: { snp: 1 } }), turin)).toEqual([]);
    // VMPL: 0 unless the policy lists others.
    expect(reasons(snpPolicy(), claims({ platform: { product: 'Genoa', vmpl: '1' } }))).toEqual([expect.stringMatching(/^policy\.platform\.vmpl: vmpl "1" is not among 0 \(default/)]);
    expect(reasons(snpPolicy({ platform: { vmpl: ['0', '1'] } }), claims({ platform: { product: 'Genoa', vmpl: '1' } }))).toEqual([]);
    expect(reasons(snpPolicy({}, 'azure-snp'), claims({ tee: 'azure-snp', platform: { product: 'Genoa', vmpl: '2' } }))).toContainEqual(expect.stringMatching(/^policy\.platform\.vmpl: /));
  });

  it('real SEV-SNP vectors: Genoa and Azure pass the defaults; the Milan VLEK report (December 2024) is VMPL 1 with older microcode; the 2022 Milan report is below the floor', async () => {
    for (const { name, claims: c } of (await realEvidence()).filter((e) => e.claims.tee === 'snp' || e.claims.tee === 'azure-snp')) {
      expect(evaluatePolicy(pinnedTo(c).policy, c, pinnedTo(c).opts).allowed, name).toBe(true);
    }
    const vlek = verifySnpReport(vec('sev-snp/trustee_milan_vlek_report.bin'), { now: new Date('2025-06-01T00:00:00Z'), certificates: certs('sev-snp/trustee_milan_vlek.der', 'sev-snp/asvk_ark_milan_vlek.pem') }).claims;
    expect(evaluatePolicy(pinnedTo(vlek).policy, vlek, pinnedTo(vlek).opts).reasons).toEqual([
      expect.stringMatching(/^policy\.minTcb\.microcode: microcode 217 is below the minimum 219/),
      expect.stringMatching(/^policy\.platform\.vmpl: vmpl "1"/),
    ]);
    expect(evaluatePolicy(pinnedTo(vlek, { platform: { vmpl: ['1'], product: ['Milan'] }, minTcb: { microcode: 217 } }).policy, vlek, pinnedTo(vlek).opts).allowed).toBe(true);
    const old = verifySnpReport(vec('sev-snp/gsg_milan_report.bin'), { now: new Date('2022-09-24T01:00:00Z'), certificates: certs('sev-snp/gsg_milan_vcek.der', 'sev-snp/ask_ark_milan.pem') }).claims;
    const r = evaluatePolicy(pinnedTo(old, { allowDebug: true }).policy, old, pinnedTo(old).opts).reasons;
    expect(r).toEqual([expect.stringMatching(/^policy\.minTcb\.snp: snp 5 is below the minimum 24/), expect.stringMatching(/^policy\.minTcb\.microcode: microcode 68 is below the minimum 219/)]);
  });
});
