/**
 * Real hardware evidence (SEV-SNP is in server.test.ts; here TDX, Nitro, Azure vTPM and NVIDIA)
 * through /attest in the KBS shapes. None of it can hold the binding of a fresh nonce, so each must
 * pass every verifier check and then be denied for the binding alone: the reasons and the audit
 * entry say exactly that.
 */
import { describe, expect, it, vi } from 'vitest';
import { certs, vec } from '../attestation/helpers.js';
import { parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { kbsReportData } from '../../src/protocol/binding.js';
import { encodeNvidiaAdditionalEvidence } from '../../src/protocol/device-evidence.js';
import { encodeTdxEvidence } from '../../src/protocol/evidence.js';
import type { Reply } from './client.js';
import { attest, auth, type Fixture, resource, teeKeyPair, useFixtures } from './fixture.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { testNitro, TEST_NITRO_PCR0 } from './forged-nitro.js';

vi.setConfig({ testTimeout: 60_000 });

const fixture = useFixtures();

const body = (nonce: string, jwk: object, primary: unknown, additional = '') => ({
  'runtime-data': { nonce, 'tee-pubkey': jwk },
  'tee-evidence': { primary_evidence: primary, additional_evidence: additional },
});

type AuditCheck = { check: string; ok: boolean; detail: string };

/**
 * A 403 whose reasons are exactly the binding checks named, with every other check in the audit
 * entry passed; returns the audit entry's checks.
 */
function deniedForBindingAlone(f: Fixture, r: Reply, tee: string, binding: string[], releasedBefore = 0): AuditCheck[] {
  expect(r.status, r.text).toBe(403);
  const reasons = (r.json as { reasons: string[] }).reasons;
  expect(reasons.map((x) => x.slice(0, x.indexOf(':')))).toEqual(binding);
  for (const x of reasons) expect(x).toMatch(/is not SHA-384\(JCS\(\{[^}]*\}\)\)(?: \(zero-padded\))? of this challenge and key.*not bound to this session/);
  expect(r.headers['sealed-tensors-receipt']).toBeUndefined();
  expect(f.keystore.handedOut).toHaveLength(releasedBefore);
  const entry = f.audit.entries.at(-1)!;
  expect(entry).toMatchObject({ event: 'attest', verdict: 'deny', tee });
  expect(entry.reasons).toEqual(reasons);
  const checks = (entry.detail as { checks: AuditCheck[] }).checks;
  expect(checks.filter((c) => !c.ok).map((c) => c.check)).toEqual(binding);
  expect(f.audit.entries.filter((e) => e.event === 'release')).toHaveLength(releasedBefore);
  return checks;
}

describe('broker: real TDX, Nitro, Azure and NVIDIA evidence through /attest is denied for the binding alone', () => {
  it('TDX: the dcap-qvl v4 quote with its Intel PCS collateral ({cc_eventlog, quote}) verifies at its date, TCB status evaluated', async () => {
    const collateral = parseTdxCollateral([{ name: 'dcapqvl', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]);
    const f = await fixture({ verifyOptions: { collateral } });
    f.clock.ms = 1752919234 * 1000; // 2025-07-19T10:00:34Z, inside the collateral's window
    const a = await auth(f, 'tdx');
    const { jwk } = await teeKeyPair();
    const checks = deniedForBindingAlone(f, await attest(f, a.cookie, body(a.nonce, jwk, encodeTdxEvidence(vec('tdx/dcapqvl_quote_v4.bin')))), 'tdx', ['broker.reportData']);
    expect(checks.at(-2)).toMatchObject({ check: 'broker.tee', ok: true });
    expect(checks.filter((c) => c.check.startsWith('tdx.')).length).toBeGreaterThanOrEqual(3);
    const entry = f.audit.entries.at(-1)!;
    expect(entry.evidenceSummary).toMatchObject({ tee: 'tdx', debug: false });
    // The collateral was used: the TCB status is a verdict, not NotEvaluated.
    expect((entry.evidenceSummary as { tcb: Record<string, unknown> }).tcb.tcbStatus).toMatch(/^(UpToDate|SWHardeningNeeded|ConfigurationNeeded|ConfigurationAndSWHardeningNeeded|OutOfDate|OutOfDateConfigurationNeeded)$/);
    expect((entry.detail as Record<string, unknown>).evidenceForm).toBe('TDX quote v4');
  });

  it('TDX: the go-tdx-guest quote with its collateral files, at its date', async () => {
    const GTG = ['tdx/gtg_tcbinfo_fmspc50806f000000.json', 'tdx/gtg_qe_identity_td_qe.json', 'tdx/gtg_pck_platform_crl.der', 'tdx/gtg_root_ca_crl.der', 'tdx/gtg_tcb_signing_issuer_chain.pem', 'tdx/gtg_pck_crl_issuer_chain.pem'];
    const f = await fixture({ verifyOptions: { collateral: parseTdxCollateral(GTG.map((name) => ({ name, bytes: vec(name) }))) } });
    f.clock.ms = Date.parse('2023-07-01T01:00:00Z');
    const a = await auth(f, 'tdx');
    const { jwk } = await teeKeyPair();
    deniedForBindingAlone(f, await attest(f, a.cookie, body(a.nonce, jwk, encodeTdxEvidence(vec('tdx/trustee_quote4_v4.bin')))), 'tdx', ['broker.reportData']);
  });

  it('Nitro: both AWS attestation documents ({"evidence": base64}) verify at their time; the binding is read from the document nonce', async () => {
    for (const [file, ts] of [['nitro/evervault_doc_20221013.cose.bin', 1665651482136], ['nitro/evervault_ga_doc_20230918.cose.bin', 1695049410860]] as const) {
      const f = await fixture();
      f.clock.ms = ts + 60_000;
      const a = await auth(f, 'nitro');
      const { jwk } = await teeKeyPair();
      const r = await attest(f, a.cookie, body(a.nonce, jwk, { evidence: Buffer.from(vec(file)).toString('base64') }));
      const checks = deniedForBindingAlone(f, r, 'nitro', ['broker.reportData']);
      expect(checks.map((c) => c.check)).toEqual(['nitro.signature', 'nitro.chain', 'broker.tee', 'broker.reportData']);
      expect(checks.at(-1)!.detail).toMatch(/^attestation document nonce is not/);
      expect(f.audit.entries.at(-1)!.evidenceSummary).toMatchObject({ tee: 'nitro', issuedAt: new Date(ts).toISOString() });
    }
  });

  it('Nitro (test root): a document whose nonce is the binding is granted through /resource; the same bytes only in user_data are denied for the binding', async () => {
    const nitro = await testNitro();
    const f = await fixture({ verifyOptions: { trustedRoots: { nitro: [nitro.rootFingerprint] } } });
    f.policies.policies.set('default', validatePolicy({ version: 1, tees: { nitro: { measurements: { pcr0: [TEST_NITRO_PCR0] } } } }));
    const ts = f.clock.ms - 1000;
    const a = await auth(f, 'nitro');
    const { jwk } = await teeKeyPair();
    const doc = nitro.document({ timestampMs: ts, nonce: kbsReportData(a.nonce, jwk) });
    const r = await attest(f, a.cookie, body(a.nonce, jwk, { evidence: Buffer.from(doc).toString('base64') }));
    expect(r.status, r.text).toBe(200);
    const granted = await resource(f, { cookie: a.cookie });
    expect(granted.status, granted.text).toBe(200);
    expect(f.audit.entries.at(-1)!.verdict).toBe('allow');

    const b = await auth(f, 'nitro');
    const inUserData = nitro.document({ timestampMs: ts, userData: kbsReportData(b.nonce, jwk) });
    const checks = deniedForBindingAlone(f, await attest(f, b.cookie, body(b.nonce, jwk, { evidence: Buffer.from(inUserData).toString('base64') })), 'nitro', ['broker.reportData'], 1);
    expect(checks.map((c) => c.check)).toEqual(['nitro.signature', 'nitro.chain', 'broker.tee', 'broker.reportData']);
  });

  it('Azure: Trustee\'s az-snp-vtpm v0, v1 and v2 (Milan) and the Genoa v0 file verify; the binding is the vTPM quote nonce (and v2 user-data)', async () => {
    const cases = [
      { file: 'trustee/az_snp_vtpm_evidence_v0.json', ca: 'sev-snp/ask_ark_milan.pem', form: 'az-snp-vtpm v0', binding: ['broker.reportData'] },
      { file: 'trustee/az_snp_vtpm_evidence_v1.json', ca: 'sev-snp/ask_ark_milan.pem', form: 'az-snp-vtpm v1', binding: ['broker.reportData'] },
      { file: 'trustee/az_snp_vtpm_evidence_v2.json', ca: 'sev-snp/ask_ark_milan.pem', form: 'az-snp-vtpm v2', binding: ['broker.reportData', 'broker.userData'] },
      { file: 'azure-vtpm/az_snp_genoa_evidence.json', ca: 'sev-snp/ask_ark_genoa.pem', form: 'az-snp-vtpm v0', binding: ['broker.reportData'] },
    ];
    for (const c of cases) {
      const f = await fixture({ verifyOptions: { certificates: certs(c.ca) } });
      f.clock.ms = Date.parse('2026-07-16T00:00:00Z');
      const a = await auth(f, 'az-snp-vtpm');
      const { jwk } = await teeKeyPair();
      const primary = JSON.parse(Buffer.from(vec(c.file)).toString('utf8'));
      const checks = deniedForBindingAlone(f, await attest(f, a.cookie, body(a.nonce, jwk, primary)), 'az-snp-vtpm', c.binding);
      expect(checks.map((k) => k.check).filter((k) => k.startsWith('azure.'))).toEqual(['azure.runtime_data', 'azure.tpm_quote_signature', 'azure.pcr_digest']);
      expect(checks.some((k) => k.check === 'snp.signature' && k.ok)).toBe(true);
      expect(checks.find((k) => k.check === 'broker.reportData')!.detail).toMatch(/^vTPM quote nonce is not .*\(48 bytes\)/);
      expect((f.audit.entries.at(-1)!.detail as Record<string, unknown>).evidenceForm).toBe(c.form);
      expect(f.audit.entries.at(-1)!.evidenceSummary).toMatchObject({ tee: 'azure-snp' });
    }
  });

  it('NVIDIA: the real Hopper report as additional evidence (Trustee\'s nvidia shape) with simulated CPU evidence bound to it: denied for the device binding alone', async () => {
    const f = await fixture();
    const a = await auth(f, 'simulated');
    const { jwk } = await teeKeyPair();
    const additional = encodeNvidiaAdditionalEvidence([{ evidence: vec('nvidia/hopper_report_1.bin'), certificatesPem: Buffer.from(vec('nvidia/hopper_cert_chain_1.pem')).toString('utf8'), uuid: 'GPU-test' }]);
    // The CPU evidence binds the additional evidence text, so only the GPU's own binding can fail.
    const cpu = await f.tee.getEvidence(kbsReportData(a.nonce, jwk, additional));
    const r = await attest(f, a.cookie, body(a.nonce, jwk, { evidence: Buffer.from(cpu).toString('base64') }, additional));
    const checks = deniedForBindingAlone(f, r, 'simulated', ['broker.nvidia[0].nonce']);
    expect(checks.map((c) => c.check)).toEqual([
      'simulated.signature',
      'simulated.root',
      'broker.tee',
      'broker.simulated',
      'broker.reportData',
      'nvidia[0].nvidia.signature',
      'nvidia[0].nvidia.chain',
      'nvidia[0].nvidia.fwid',
      'broker.nvidia[0].tee',
      'broker.nvidia[0].nonce',
    ]);
    const detail = f.audit.entries.at(-1)!.detail as { devices: { device: string; uuid: string }[]; deviceSummaries: { device: string; tee: string }[] };
    expect(detail.devices).toMatchObject([{ device: 'nvidia[0]', uuid: 'GPU-test' }]);
    expect(detail.deviceSummaries).toMatchObject([{ device: 'nvidia[0]', tee: 'nvidia' }]);
  });

  it('additional evidence that does not decode is 400 naming the member; a device that does not verify is 403 with the evidence error', async () => {
    const f = await fixture();
    const { jwk } = await teeKeyPair();
    const attempt = async (additional: string) => {
      const a = await auth(f, 'simulated');
      const cpu = await f.tee.getEvidence(kbsReportData(a.nonce, jwk, additional));
      return attest(f, a.cookie, body(a.nonce, jwk, { evidence: Buffer.from(cpu).toString('base64') }, additional));
    };
    let r = await attempt('{"tpm": {}}');
    expect(r.status).toBe(400);
    expect((r.json as { reasons: string[] }).reasons[0]).toMatch(/additional_evidence\.tpm is not a device this broker verifies/);
    r = await attempt(JSON.stringify({ nvidia: { device_evidence_list: [{ arch: 'BLACKWELL', evidence: 'aa', certificate: 'AA==' }] } }));
    expect(r.status).toBe(400);
    expect((r.json as { reasons: string[] }).reasons[0]).toMatch(/arch is BLACKWELL: only Hopper GPUs/);
    r = await attempt('not json');
    expect(r.status).toBe(400);
    // The real report with another GPU's chain (here: the SNP VCEK's issuers) does not verify.
    const report = vec('nvidia/hopper_report_1.bin');
    const tampered = report.slice();
    tampered[40]! ^= 1;
    r = await attempt(encodeNvidiaAdditionalEvidence([{ evidence: tampered, certificatesPem: Buffer.from(vec('nvidia/hopper_cert_chain_1.pem')).toString('utf8') }]));
    expect(r.status).toBe(403);
    expect((r.json as { reasons: string[] }).reasons).toEqual([expect.stringMatching(/^ERR_EVIDENCE_SIGNATURE: nvidia\[0\]: NVIDIA SPDM measurement signature does not verify/)]);
    expect(f.audit.entries.at(-1)!.verdict).toBe('deny');
  });
});
