import { describe, expect, it, vi } from 'vitest';
import { EvidenceRevokedError } from '../../src/errors.js';
import { INTEL_TD_QE_IDENTITY, verifyTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import { combineTcbStatus, parseTdxCollateral, type TdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { INTEL_SGX_ROOT_CA } from '../../src/attestation/roots.js';
import { outcomeAsync, typedError, vec } from './helpers.js';
import { BUILD_NOW as NOW, buildQuote } from './tdx-build.js';
import { parseCertificates } from '../../src/attestation/certs.js';

vi.setConfig({ testTimeout: 120_000 });

const Q1 = 'tdx/dcapqvl_quote_v4.bin';
const Q1_AT = new Date(1752919234 * 1000);
const c1 = () => parseTdxCollateral([{ name: 'dcapqvl', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]);

describe('TDX: what a TCB status needs, and what is never accepted', () => {
  it("the pinned TD QE identity is Intel's, as both signed QE identities among the vectors state it", () => {
    const docs = [
      JSON.parse(c1().qeIdentity!.body) as Record<string, unknown>,
      (JSON.parse(Buffer.from(vec('tdx/gtg_qe_identity_td_qe.json')).toString('utf8')) as { enclaveIdentity: Record<string, unknown> }).enclaveIdentity,
    ];
    for (const d of docs) {
      expect(d.id).toBe('TD_QE');
      expect(String(d.mrsigner).toLowerCase()).toBe(INTEL_TD_QE_IDENTITY.mrSigner);
      expect(d.isvprodid).toBe(INTEL_TD_QE_IDENTITY.isvProdId);
      expect(String(d.attributes).toLowerCase()).toBe(INTEL_TD_QE_IDENTITY.attributes);
      expect(String(d.attributesMask).toLowerCase()).toBe(INTEL_TD_QE_IDENTITY.attributesMask);
      expect(parseInt(String(d.miscselect), 16)).toBe(INTEL_TD_QE_IDENTITY.miscSelect);
      expect(parseInt(String(d.miscselectMask), 16)).toBe(INTEL_TD_QE_IDENTITY.miscSelectMask);
    }
  });

  it('real quote: each missing part of the collateral leaves the TCB status NotEvaluated, and a tcbStatus policy denies', async () => {
    const policy = validatePolicy({ version: 1, tees: { tdx: { tcbStatus: ['UpToDate'] } } });
    const full = await verifyTdxQuote(vec(Q1), { now: Q1_AT, collateral: c1() });
    expect(full.claims.tcb.tcbStatus).toBe('UpToDate');
    expect(full.claims.tcb.collateralMissing).toBeUndefined();
    const cuts: [string, (c: TdxCollateral) => void, RegExp][] = [
      ['QE identity', (c) => delete c.qeIdentity, /QE identity/],
      ['TCB info', (c) => delete c.tcbInfo, /TCB info/],
      ['PCK CRL', (c) => c.crls.splice(0, 1), /PCK CA CRL covering the PCK certificate/],
      ['root CA CRL', (c) => c.crls.splice(1, 1), /CRL covering "Intel SGX PCK Platform CA"/],
    ];
    for (const [what, cut, missing] of cuts) {
      const c = c1();
      cut(c);
      const r = await verifyTdxQuote(vec(Q1), { now: Q1_AT, collateral: c });
      expect(r.claims.tcb.tcbStatus, what).toBe('NotEvaluated');
      expect(String(r.claims.tcb.collateralMissing), what).toMatch(missing);
      expect(evaluatePolicy(policy, r.claims).allowed, what).toBe(false);
    }
  });

  it('a TCB level marked Revoked is rejected by the verifier with EvidenceRevokedError, with whole or partial collateral', async () => {
    const b = await buildQuote();
    const opts = { now: NOW, trustAnchors: { pck: [b.rootFp], tcbSigning: [b.rootFp] } };
    const ok = await verifyTdxQuote(b.quote, { ...opts, collateral: await b.fullCollateral() });
    expect(ok.claims.tcb).toMatchObject({ tcbStatus: 'UpToDate', platformTcbStatus: 'UpToDate', qeTcbStatus: 'UpToDate' });
    // OutOfDate is the policy's decision: the verifier reports it.
    const old = await verifyTdxQuote(b.quote, { ...opts, collateral: await b.fullCollateral({ platform: 'OutOfDate' }) });
    expect(old.claims.tcb.tcbStatus).toBe('OutOfDate');

    let e = await typedError(async () => verifyTdxQuote(b.quote, { ...opts, collateral: await b.fullCollateral({ platform: 'Revoked' }) }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
    expect(e.message).toMatch(/platform TCB status is Revoked/);
    // Only the TCB info, no CRLs or QE identity: still refused.
    const partial = await b.fullCollateral({ platform: 'Revoked' });
    e = await typedError(() => verifyTdxQuote(b.quote, { ...opts, collateral: { tcbInfo: partial.tcbInfo, crls: [], certificates: partial.certificates } }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
    const qeRevoked = await b.fullCollateral({ qe: 'Revoked' });
    e = await typedError(() => verifyTdxQuote(b.quote, { ...opts, collateral: qeRevoked }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
    expect(e.message).toMatch(/quoting enclave status is Revoked/);
    // A module (major version 1) whose identity's level is Revoked.
    const m = await buildQuote({ teeTcbSvn: [7, 1] });
    const mc = await m.fullCollateral();
    const ident = (status: string) => ({ id: 'TDX_01', mrsigner: '00'.repeat(48), attributes: '0000000000000000', attributesMask: 'FFFFFFFFFFFFFFFF', tcbLevels: [{ tcb: { isvsvn: 0 }, tcbDate: '2025-01-01T00:00:00Z', tcbStatus: status }] });
    mc.tcbInfo = await m.tcbInfo('UpToDate', { tdxModuleIdentities: [ident('UpToDate')] });
    expect((await verifyTdxQuote(m.quote, { now: NOW, trustAnchors: { pck: [m.rootFp], tcbSigning: [m.rootFp] }, collateral: mc })).claims.tcb.tdxModuleTcbStatus).toBe('UpToDate');
    mc.tcbInfo = await m.tcbInfo('UpToDate', { tdxModuleIdentities: [ident('Revoked')] });
    e = await typedError(() => verifyTdxQuote(m.quote, { now: NOW, trustAnchors: { pck: [m.rootFp], tcbSigning: [m.rootFp] }, collateral: mc }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
    expect(e.message).toMatch(/TDX module status is Revoked/);
  });

  it('a TDX module of major version 0 is checked against tdxModule: another MRSIGNERSEAM or SEAMATTRIBUTES fails', async () => {
    const good = await buildQuote({ teeTcbSvn: [7, 0] });
    const r = await verifyTdxQuote(good.quote, { now: NOW, trustAnchors: { pck: [good.rootFp], tcbSigning: [good.rootFp] }, collateral: await good.fullCollateral() });
    expect(r.checks.map((k) => k.check)).toContain('tdx.module');
    const other = await buildQuote({ teeTcbSvn: [7, 0], mrSignerSeam: new Uint8Array(48).fill(0x5a) });
    const e = await typedError(() => other.fullCollateral().then((collateral) => verifyTdxQuote(other.quote, { now: NOW, trustAnchors: { pck: [other.rootFp], tcbSigning: [other.rootFp] }, collateral })), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/MRSIGNERSEAM 5a5a.* is not tdxModule's 0000/);
    // A TCB info whose tdxModule demands a SEAMATTRIBUTES bit the quote lacks.
    const c = await good.fullCollateral();
    c.tcbInfo = await good.tcbInfo('UpToDate', { tdxModule: { mrsigner: '00'.repeat(48), attributes: '0100000000000000', attributesMask: 'FFFFFFFFFFFFFFFF' } });
    const e2 = await typedError(() => verifyTdxQuote(good.quote, { now: NOW, trustAnchors: { pck: [good.rootFp], tcbSigning: [good.rootFp] }, collateral: c }), ['ERR_EVIDENCE_CHAIN']);
    expect(e2.message).toMatch(/SEAMATTRIBUTES .* do not match tdxModule/);
    // A TCB info without tdxModule cannot vouch for the module.
    c.tcbInfo = await good.tcbInfo('UpToDate', { tdxModule: undefined });
    await typedError(() => verifyTdxQuote(good.quote, { now: NOW, trustAnchors: { pck: [good.rootFp], tcbSigning: [good.rootFp] }, collateral: c }), ['ERR_EVIDENCE_FORMAT']);
  });

  it("without collateral the QE must be Intel's production TD QE: other MRSIGNER, ISVPRODID, MISCSELECT or a debug QE fail", async () => {
    const good = await buildQuote();
    const r = await verifyTdxQuote(good.quote, { now: NOW, trustedRoots: [good.rootFp] });
    expect(r.checks.map((k) => k.check)).toContain('tdx.qe_pinned');
    const bad: [string, NonNullable<Parameters<typeof buildQuote>[0]>['qe'], RegExp][] = [
      ['mrsigner', { mrSigner: '11'.repeat(32) }, /MRSIGNER 1111.* is not Intel's/],
      ['isvprodid', { isvProdId: 1 }, /ISVPRODID 1 is not 2/],
      ['miscselect', { miscSelect: 1 }, /MISCSELECT 0x1/],
      ['debug', { attributes: '13000000000000000000000000000000' }, /debug mode/],
    ];
    for (const [what, qe, msg] of bad) {
      const b = await buildQuote({ qe });
      const e = await typedError(() => verifyTdxQuote(b.quote, { now: NOW, trustedRoots: [b.rootFp] }), ['ERR_EVIDENCE_CHAIN']);
      expect(e.message, what).toMatch(msg);
    }
    // The real quotes come from Intel's QE.
    expect(await outcomeAsync(() => verifyTdxQuote(vec(Q1), { now: Q1_AT }))).toBe('accepted');
  });

  it('trust anchors are kept per chain kind: a root trusted for PCK chains does not sign TCB info', async () => {
    const t = await buildQuote();
    // TCB info for the real dcap-qvl quote's platform, signed under the test root.
    const forged = c1();
    forged.tcbInfo = await t.tcbInfo('UpToDate', { fmspc: 'B0C06F000000', issueDate: '2025-07-01T00:00:00Z', nextUpdate: '2025-08-01T00:00:00Z' });
    forged.certificates.push(...parseCertificates(t.tcbSignerPem + t.rootPem, 'test TCB signer and root'));
    delete forged.qeIdentity;
    forged.crls = [];
    const at = Q1_AT;
    // One set for both (the test root added next to Intel's) no longer lets the test root vouch for the TCB.
    const e = await typedError(() => verifyTdxQuote(vec(Q1), { now: at, trustedRoots: [INTEL_SGX_ROOT_CA.sha256, t.rootFp], collateral: forged }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/TCB info signer.*not a pinned root/);
    // Named as a TCB signing anchor, it does (positive control: the anchor is what decides).
    const r = await verifyTdxQuote(vec(Q1), { now: at, trustAnchors: { tcbSigning: [t.rootFp] }, collateral: forged });
    expect(r.claims.tcb.platformTcbStatus).toBe('UpToDate');
    // And a PCK anchor list without Intel's root refuses the genuine quote whatever the TCB signing anchors.
    await typedError(() => verifyTdxQuote(vec(Q1), { now: at, trustAnchors: { pck: [t.rootFp], tcbSigning: [INTEL_SGX_ROOT_CA.sha256] } }), ['ERR_EVIDENCE_CHAIN']);
  });
});

describe('TDX: platform, QE and module statuses combine as Intel reports them', () => {
  it('the combination table: findings add up, out of date subsumes SW hardening, Revoked dominates', () => {
    const table: [string[], string][] = [
      [['UpToDate', 'UpToDate', 'UpToDate'], 'UpToDate'],
      [['UpToDate', 'NotEvaluated'], 'UpToDate'],
      [['SWHardeningNeeded', 'UpToDate'], 'SWHardeningNeeded'],
      [['ConfigurationNeeded', 'UpToDate'], 'ConfigurationNeeded'],
      [['ConfigurationNeeded', 'OutOfDate'], 'OutOfDateConfigurationNeeded'],
      [['OutOfDate', 'ConfigurationNeeded'], 'OutOfDateConfigurationNeeded'],
      [['ConfigurationAndSWHardeningNeeded', 'OutOfDate'], 'OutOfDateConfigurationNeeded'],
      [['SWHardeningNeeded', 'ConfigurationNeeded'], 'ConfigurationAndSWHardeningNeeded'],
      [['ConfigurationNeeded', 'UpToDate', 'SWHardeningNeeded'], 'ConfigurationAndSWHardeningNeeded'],
      [['SWHardeningNeeded', 'OutOfDate'], 'OutOfDate'],
      [['OutOfDate', 'UpToDate', 'OutOfDate'], 'OutOfDate'],
      [['OutOfDateConfigurationNeeded', 'SWHardeningNeeded'], 'OutOfDateConfigurationNeeded'],
      [['OutOfDateConfigurationNeeded', 'Revoked', 'UpToDate'], 'Revoked'],
      [['UpToDate', 'ConfigurationNeeded', 'Revoked'], 'Revoked'],
    ];
    for (const [parts, want] of table) expect(combineTcbStatus(...(parts as never[])), parts.join(' + ')).toBe(want);
  });

  it('end to end: platform ConfigurationNeeded with the QE OutOfDate is OutOfDateConfigurationNeeded, not OutOfDate', async () => {
    const b = await buildQuote();
    const r = await verifyTdxQuote(b.quote, { now: NOW, trustAnchors: { pck: [b.rootFp], tcbSigning: [b.rootFp] }, collateral: await b.fullCollateral({ platform: 'ConfigurationNeeded', qe: 'OutOfDate' }) });
    expect(r.claims.tcb).toMatchObject({ tcbStatus: 'OutOfDateConfigurationNeeded', platformTcbStatus: 'ConfigurationNeeded', qeTcbStatus: 'OutOfDate' });
  });
});
