import { describe, expect, it, vi } from 'vitest';
import { parseTdxQuote, verifyTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import { parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { INTEL_SGX_ROOT_CA, AMD_ARK_MILAN } from '../../src/attestation/roots.js';
import { fingerprint } from '../../src/attestation/certs.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { pinnedTo } from './pinned-policy.js';
import { certs, flip, outcomeAsync, typedError, vec } from './helpers.js';
import { bitsToFlip, LONG_RUN } from '../helpers/fuzz.js';

// Bit-flip and property loops run thousands of verifications; on a shared 2-core machine that can take minutes.
vi.setConfig({ testTimeout: 300_000 });

const Q1 = 'tdx/dcapqvl_quote_v4.bin';
const Q1_AT = new Date(1752919234 * 1000); // 2025-07-19T10:00:34Z, dcap-qvl's test time
const Q2 = 'tdx/trustee_quote4_v4.bin';
const Q2_AT = new Date('2023-07-01T01:00:00Z'); // go-tdx-guest's test time
const GTG = [
  'tdx/gtg_tcbinfo_fmspc50806f000000.json',
  'tdx/gtg_qe_identity_td_qe.json',
  'tdx/gtg_pck_platform_crl.der',
  'tdx/gtg_root_ca_crl.der',
  'tdx/gtg_tcb_signing_issuer_chain.pem',
  'tdx/gtg_pck_crl_issuer_chain.pem',
];
const c1 = () => parseTdxCollateral([{ name: 'dcapqvl', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]);
const c2 = () => parseTdxCollateral(GTG.map((name) => ({ name, bytes: vec(name) })));

describe('TDX real vectors', () => {
  it('the pinned Intel root is the SGX Root CA of the vectors (DER and PEM copies agree)', () => {
    expect(fingerprint(certs('tdx/intel_sgx_root_ca.der')[0]!)).toBe(INTEL_SGX_ROOT_CA.sha256);
    expect(fingerprint(certs('tdx/intel_sgx_root_ca.pem')[0]!)).toBe(INTEL_SGX_ROOT_CA.sha256);
  });

  it('dcap-qvl quote (70 zero bytes of padding) verifies with full collateral as UpToDate, claims as in PROVENANCE.md', async () => {
    const r = await verifyTdxQuote(vec(Q1), { now: Q1_AT, collateral: c1() });
    const q = r.raw.quote;
    expect(q.trailing).toBe(70);
    expect(q.version).toBe(4);
    expect(q.attestationKeyType).toBe(2);
    expect(q.teeType).toBe(0x81);
    expect(r.claims.platform.qeVendorId).toBe('939a7233f79c4ca9940a0db3957f0607');
    expect(r.raw.pck.fmspc).toBe('b0c06f000000');
    expect(r.raw.pck.sgxComponents).toEqual([3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(r.raw.pck.pceSvn).toBe(11);
    const c = r.claims;
    expect(c.tcb.teeTcbSvn).toBe('06010300000000000000000000000000');
    expect(c.platform.tdAttributes).toBe('0000001000000000');
    expect(c.debug).toBe(false);
    expect(c.platform.xfam).toBe('e702060000000000');
    expect(c.measurements.mrSeam).toBe('5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1');
    expect(c.measurements.mrSignerSeam).toBe('00'.repeat(48));
    expect(c.measurement).toBe('91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7');
    expect(c.measurements.rtmr0).toBe('44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0');
    expect(c.measurements.rtmr1).toBe('0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378');
    expect(c.measurements.rtmr2).toBe('d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132');
    expect(c.measurements.rtmr3).toBe('00'.repeat(48));
    expect(c.reportData).toBe('9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20');
    expect(c.platform.qeMrEnclave).toMatch(/^e5a3a7b5[0-9a-f]{48}08846bca$/);
    expect(c.platform.qeMrSigner).toBe('dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5');
    expect(c.tcb.qeSvn).toBe(6);
    expect(r.raw.collateral).toMatchObject({ status: 'UpToDate', platformStatus: 'UpToDate', qeStatus: 'UpToDate', tcbDate: '2024-03-13T00:00:00Z', advisoryIds: [] });
    expect(c.tcb.tcbStatus).toBe('UpToDate');
    expect(r.checks.map((k) => k.check)).toEqual([
      'tdx.quote_signature',
      'tdx.attestation_key_binding',
      'tdx.qe_report_signature',
      'tdx.pck_chain',
      'tdx.tcb_info',
      'tdx.tcb_level',
      'tdx.module',
      'tdx.module_identity',
      'tdx.qe_identity',
      'tdx.crl',
      'tdx.crl',
    ]);
    expect(evaluatePolicy(pinnedTo(c, { tcbStatus: ['UpToDate'] }).policy, c, pinnedTo(c).opts).allowed).toBe(true);
  });

  it('trustee quote verifies with the Intel PCS collateral of 2023 (UpToDate), claims as in PROVENANCE.md', async () => {
    const r = await verifyTdxQuote(vec(Q2), { now: Q2_AT, collateral: c2() });
    const c = r.claims;
    expect(r.raw.quote.trailing).toBe(0);
    expect(r.raw.pck.fmspc).toBe('50806f000000');
    expect(r.raw.pck.sgxComponents).toEqual([5, 5, 13, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(r.raw.pck.pceSvn).toBe(11);
    expect(c.tcb.teeTcbSvn).toBe('03000500000000000000000000000000');
    expect(c.platform.tdAttributes).toBe('0100001000000000');
    expect(c.debug).toBe(true);
    expect(c.platform.xfam).toBe('e742060000000000');
    expect(c.measurements.mrSeam).toBe('2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656');
    expect(c.measurement).toBe('705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031');
    expect(c.measurements.rtmr0).toBe('e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288');
    expect(c.measurements.rtmr1).toBe('559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596');
    expect(c.measurements.rtmr2).toBe('00'.repeat(48));
    expect(c.measurements.rtmr3).toBe('00'.repeat(48));
    expect(c.reportData).toBe('7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429');
    expect(Buffer.from(r.raw.quote.userData).toString('hex')).toBe('d099bfec0a477aa85a605dceabf2b10800000000');
    expect(r.raw.collateral).toMatchObject({ status: 'UpToDate', platformStatus: 'UpToDate', qeStatus: 'UpToDate', tcbDate: '2023-02-15T00:00:00Z' });
    // Each CRL covered one certificate of the path: PCK CA CRL -> PCK leaf, root CRL -> PCK CA.
    expect(r.checks.filter((k) => k.check === 'tdx.crl').map((k) => k.detail)).toEqual([
      expect.stringMatching(/PCK Platform CA.*1 certificate\(s\) of the PCK chain checked, none revoked/),
      expect.stringMatching(/Root CA.*1 certificate\(s\) of the PCK chain checked, none revoked/),
    ]);
    expect(c.tcb.qeSvn).toBe(4);
  });

  it('both quotes verify without collateral (signatures and PCK chain only), with no TCB status claimed', async () => {
    for (const [q, at] of [[Q1, Q1_AT], [Q2, Q2_AT]] as const) {
      const r = await verifyTdxQuote(vec(q), { now: at });
      expect(r.claims.tcb.tcbStatus).toBeUndefined();
      const { policy, opts } = pinnedTo(r.claims, { tcbStatus: ['UpToDate'], allowDebug: true });
      expect(evaluatePolicy(policy, r.claims, opts).reasons).toEqual([
        'policy.tcbStatus: the policy requires TCB status UpToDate but no collateral was evaluated (pass collateral, CLI --collateral)',
      ]);
    }
  });

  it('collateral is checked against its window: before issue and after nextUpdate/CRL expiry fail', async () => {
    await typedError(() => verifyTdxQuote(vec(Q1), { now: new Date('2025-06-19T10:32:26Z'), collateral: c1() }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyTdxQuote(vec(Q1), { now: new Date('2025-07-19T10:00:36Z'), collateral: c1() }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyTdxQuote(vec(Q2), { now: new Date('2023-07-09T00:00:00Z'), collateral: c2() }), ['ERR_EVIDENCE_CHAIN']);
    expect(await outcomeAsync(() => verifyTdxQuote(vec(Q2), { now: new Date('2023-06-18T08:43:00Z'), collateral: c2() }))).toBe('accepted');
  });

  it('reads CRLs given as PEM as well as DER', async () => {
    const pem = (name: string) => {
      const b64 = Buffer.from(vec(name)).toString('base64').replace(/.{64}/g, '$&\n');
      return { name: `${name}.pem`, bytes: new Uint8Array(Buffer.from(`-----BEGIN X509 CRL-----\n${b64}\n-----END X509 CRL-----\n`)) };
    };
    const files = GTG.map((name) => (name.endsWith('crl.der') ? pem(name) : { name, bytes: vec(name) }));
    const c = parseTdxCollateral(files);
    expect(c.crls.map((x) => Buffer.from(x).toString('hex'))).toEqual(c2().crls.map((x) => Buffer.from(x).toString('hex')));
    expect((await verifyTdxQuote(vec(Q2), { now: Q2_AT, collateral: c })).checks.filter((k) => k.check === 'tdx.crl')).toHaveLength(2);
  });

  it('rejects collateral for another platform (FMSPC) and tampered collateral', async () => {
    let e = await typedError(() => verifyTdxQuote(vec(Q2), { now: Q1_AT, collateral: c1() }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/FMSPC B0C06F000000, the PCK certificate says 50806f000000/);
    const tampered = c1();
    tampered.tcbInfo!.body = tampered.tcbInfo!.body.replace('"tcbStatus":"UpToDate"', '"tcbStatus":"OutOfDate"');
    e = await typedError(() => verifyTdxQuote(vec(Q1), { now: Q1_AT, collateral: tampered }), ['ERR_EVIDENCE_SIGNATURE']);
    const qe = c1();
    qe.qeIdentity!.body = qe.qeIdentity!.body.replace('"isvprodid":2', '"isvprodid":3');
    await typedError(() => verifyTdxQuote(vec(Q1), { now: Q1_AT, collateral: qe }), ['ERR_EVIDENCE_SIGNATURE']);
    const crl = c1();
    crl.crls[0] = flip(crl.crls[0]!, crl.crls[0]!.length - 10, 0);
    await typedError(() => verifyTdxQuote(vec(Q1), { now: Q1_AT, collateral: crl }), ['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT']);
    // Without the TCB Signing chain, the collateral cannot be checked.
    const noChain = c2();
    noChain.certificates = noChain.certificates.filter((c) => !c.subject.includes('TCB Signing'));
    e = await typedError(() => verifyTdxQuote(vec(Q2), { now: Q2_AT, collateral: noChain }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/Intel SGX TCB Signing/);
  });

  it('the PCK chain fails after and before its validity, and with a root that is not pinned', async () => {
    await typedError(() => verifyTdxQuote(vec(Q2), { now: new Date('2030-02-08T00:00:00Z') }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyTdxQuote(vec(Q2), { now: new Date('2023-02-06T00:00:00Z') }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyTdxQuote(vec(Q1), { now: new Date('2032-02-07T00:00:00Z') }), ['ERR_EVIDENCE_CHAIN']);
    for (const [q, at] of [[Q1, Q1_AT], [Q2, Q2_AT]] as const) {
      const e = await typedError(() => verifyTdxQuote(vec(q), { now: at, trustedRoots: [AMD_ARK_MILAN.sha256] }), ['ERR_EVIDENCE_CHAIN']);
      expect(e.message).toMatch(/Intel SGX Root CA.*not a pinned root/);
    }
  });

  it('rejects a quote whose PCK chain lacks the root or the intermediate, and one carrying the other quote\'s certification data', async () => {
    for (const [q, at] of [[Q1, Q1_AT], [Q2, Q2_AT]] as const) {
      const b = vec(q);
      const t = Buffer.from(b).toString('latin1');
      for (const m of t.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g)) {
        if (m.index === t.indexOf('-----BEGIN CERTIFICATE-----')) continue; // the first block is the PCK itself
        const cut = b.slice();
        cut.fill(0x20, m.index, m.index + m[0].length);
        await typedError(() => verifyTdxQuote(cut, { now: at }), ['ERR_EVIDENCE_CHAIN']);
      }
    }
    const bytes = vec(Q2);
    const text = Buffer.from(bytes).toString('latin1');
    const blocks = [...text.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g)];
    expect(blocks.length).toBe(3);
    for (const drop of [1, 2]) {
      const b = blocks[drop]!;
      const cut = bytes.slice();
      cut.fill(0x20, b.index!, b.index! + b[0].length); // blank it out, same length, so sizes stay consistent
      const e = await typedError(() => verifyTdxQuote(cut, { now: Q2_AT }), ['ERR_EVIDENCE_CHAIN']);
      expect(e.message).toMatch(/no issuer found/);
    }
    // Header and body of quote 2 with the signature data of quote 1: the attestation key does not sign it.
    const q1 = vec(Q1);
    const spliced = new Uint8Array([...bytes.subarray(0, 632), ...q1.subarray(632, 4936)]);
    await typedError(() => verifyTdxQuote(spliced, { now: Q2_AT }), ['ERR_EVIDENCE_SIGNATURE']);
  });

  it('rejects debug-mode TDX evidence under a policy pinning its measurements; accepts the non-debug quote with collateral', async () => {
    const dbg = await verifyTdxQuote(vec(Q2), { now: Q2_AT });
    const v = evaluatePolicy(pinnedTo(dbg.claims).policy, dbg.claims, pinnedTo(dbg.claims).opts);
    expect(v.allowed).toBe(false);
    // No collateral: the default TCB status requirement (UpToDate) fails too.
    expect(v.reasons).toEqual([expect.stringMatching(/^policy\.debug: /), expect.stringMatching(/^policy\.tcbStatus: .*no collateral/)]);
    const ok = await verifyTdxQuote(vec(Q1), { now: Q1_AT, collateral: c1() });
    expect(evaluatePolicy(pinnedTo(ok.claims).policy, ok.claims, pinnedTo(ok.claims).opts).allowed).toBe(true);
  });

  // Every bit of: header + TD report (signed by the attestation key), the QE report (signed by the PCK),
  // the attestation key and the QE auth data (bound by the QE report data), and both signatures.
  for (const [name, file, at] of [['dcap-qvl', Q1, Q1_AT], ['trustee', Q2, Q2_AT]] as const) {
    it(`${name}: single-bit changes at every byte of the signed and bound regions are rejected (${LONG_RUN ? 'all bits' : 'one bit per byte'})`, async () => {
      const bytes = vec(file);
      const q = parseTdxQuote(bytes);
      const sig = q.signed.length + 4; // signature data starts after its u32 length
      const regions: [string, number, number][] = [
        ['header+body', 0, q.signed.length],
        ['quote signature + attestation key', sig, sig + 128],
        ['QE report + QE report signature', sig + 134, sig + 134 + 384 + 64],
        ['QE auth data', sig + 134 + 448 + 2, sig + 134 + 448 + 2 + q.qeAuthData.length],
      ];
      expect(await outcomeAsync(() => verifyTdxQuote(bytes, { now: at }))).toBe('accepted');
      let cases = 0;
      for (const [region, from, to] of regions) {
        for (let byte = from; byte < to; byte++) {
          for (const bit of bitsToFlip(byte)) {
            const o = await outcomeAsync(() => verifyTdxQuote(flip(bytes, byte, bit), { now: at }));
            if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_CHAIN'].includes(o)) throw new Error(`${region} byte ${byte} bit ${bit}: ${o}`);
            cases++;
          }
        }
      }
      expect(cases).toBe((q.signed.length + 128 + 448 + q.qeAuthData.length) * (LONG_RUN ? 8 : 1));
    });
  }
});
