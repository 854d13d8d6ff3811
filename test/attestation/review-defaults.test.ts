import { describe, expect, it } from 'vitest';
import { appraiseEvidence, verifyEvidence } from '../../src/attestation/verify.js';
import { parsePolicy, validatePolicy } from '../../src/attestation/policy/policy.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { verifyTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import { parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { verifyNitroDocument } from '../../src/attestation/verifiers/nitro.js';
import { verifyAzureEvidence } from '../../src/attestation/verifiers/azure.js';
import { verifyNvidiaReport } from '../../src/attestation/verifiers/nvidia.js';
import { checkCrls, fingerprint, verifyChain } from '../../src/attestation/certs.js';
import type { Claims } from '../../src/attestation/types.js';
import { certs, outcomeAsync, typedError, vec } from './helpers.js';
import { snpClaims } from './helpers.js';

// Findings of the outside review of the attestation defaults (issue 7).

const NONCE = new Uint8Array(32).fill(0xab);
const claims = snpClaims;

describe('an invalid `now` does not switch off validity checks', () => {
  // The Trustee VLEK expired long ago: at a real time its chain fails.
  const report = vec('sev-snp/trustee_milan_vlek_report.bin');
  const chain = certs('sev-snp/trustee_milan_vlek.der', 'sev-snp/asvk_ark_milan_vlek.pem');

  it('an expired certificate is not accepted at an Invalid Date (NaN compares false with every bound)', async () => {
    expect(await outcomeAsync(() => verifyEvidence('snp', report, { certificates: chain }))).toBe('ERR_EVIDENCE_CHAIN');
    for (const now of [new Date(NaN), new Date('not a time')]) {
      expect(await outcomeAsync(() => verifyEvidence('snp', report, { certificates: chain, now }))).toBe('ERR_INVALID_ARGUMENT');
      expect(await outcomeAsync(async () => verifySnpReport(report, { certificates: chain, now }))).not.toBe('accepted');
    }
  });

  it('appraiseEvidence and evaluatePolicy refuse a `now` that is not a valid Date with a typed error', async () => {
    const policy = validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'.repeat(48)] } } } });
    for (const now of [new Date(NaN), Date.now(), '2025-01-01T00:00:00Z', null]) {
      await typedError(() => appraiseEvidence('snp', report, { policy, expectedReportData: NONCE, certificates: chain, now: now as never }), ['ERR_INVALID_ARGUMENT']);
      await typedError(() => evaluatePolicy(policy, claims(), { expectedReportData: NONCE, now: now as never }), ['ERR_INVALID_ARGUMENT']);
    }
  });
});

describe('Azure: the HCL report comes from VMPL 0, whatever the policy says', () => {
  const azure = (vmpl: string) => claims({ tee: 'azure-snp', measurements: { measurement: 'aa'.repeat(48), pcr4: 'dd'.repeat(32) }, platform: { product: 'Genoa', vmpl } });
  const section = (platform: Record<string, string[]>) => ({ version: 1, tees: { 'azure-snp': { measurements: { measurement: ['aa'.repeat(48)], pcr4: ['dd'.repeat(32)] }, platform } } });

  it('a policy cannot widen platform.vmpl for azure-snp (the guest at VMPL 2 could sign its own runtime data and vTPM key)', async () => {
    for (const vmpl of [['0', '2'], ['2'], ['1', '2', '3']]) {
      const e = await typedError(() => validatePolicy(section({ vmpl })), ['ERR_POLICY']);
      expect(e.message).toMatch(/tees\.azure-snp\.platform\.vmpl: .*VMPL 0/);
    }
    const p = validatePolicy(section({ vmpl: ['0'] }));
    expect(evaluatePolicy(p, azure('0'), { expectedReportData: NONCE }).allowed).toBe(true);
    expect(evaluatePolicy(p, azure('2'), { expectedReportData: NONCE }).allowed).toBe(false);
  });

  it('plain SEV-SNP may still list other VMPLs (a guest under an SVSM)', () => {
    const p = validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'.repeat(48)] }, platform: { vmpl: ['2'] } } } });
    expect(evaluatePolicy(p, claims({ platform: { product: 'Genoa', vmpl: '2' } }), { expectedReportData: NONCE }).allowed).toBe(true);
  });
});

describe('a section must pin what identifies the software, not only a field every rented TEE shares', () => {
  const realSnp = () =>
    verifySnpReport(vec('sev-snp/azure_genoa_report.bin'), { now: new Date('2026-01-01T00:00:00Z'), certificates: certs('sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_genoa.pem') }).claims;
  const policyFor = (tee: string, measurements: Record<string, string[]>) => validatePolicy({ version: 1, tees: { [tee]: { measurements } } });

  it('real SNP evidence: pinning only hostData (zero on any VM launched without it) or the family id denies', () => {
    const c = realSnp();
    const expectedReportData = new Uint8Array(Buffer.from(c.reportData, 'hex'));
    expect(c.measurements.hostData).toBe('00'.repeat(32));
    const pins: Record<string, string[]>[] = [{ hostData: [c.measurements.hostData!] }, { hostData: [c.measurements.hostData!], familyId: [c.measurements.familyId!] }, { imageId: [c.measurements.imageId!] }];
    for (const m of pins) {
      const v = evaluatePolicy(policyFor('snp', m), c, { expectedReportData });
      expect(v.allowed).toBe(false);
      expect(v.reasons.join('\n')).toMatch(/policy\.measurements: .*identif/);
    }
    // The launch measurement is what a broker must name; with it the same evidence is allowed.
    expect(evaluatePolicy(policyFor('snp', { measurement: [c.measurement], hostData: [c.measurements.hostData!] }), c, { expectedReportData }).allowed).toBe(true);
  });

  it('an identity measurement pinned to all zeros (an unset field) does not count, also next to a real value', () => {
    const c = claims({ measurements: { measurement: 'aa'.repeat(48), idKeyDigest: '00'.repeat(48) } });
    expect(evaluatePolicy(policyFor('snp', { idKeyDigest: ['00'.repeat(48)] }), c, { expectedReportData: NONCE }).allowed).toBe(false);
    expect(evaluatePolicy(policyFor('snp', { idKeyDigest: ['11'.repeat(48), '00'.repeat(48)] }), c, { expectedReportData: NONCE }).allowed).toBe(false);
    expect(evaluatePolicy(policyFor('snp', { measurement: ['aa'.repeat(48)] }), c, { expectedReportData: NONCE }).allowed).toBe(true);
  });

  it('TDX needs mrTd with rtmr1 or rtmr2, Nitro pcr0 or pcr8, NVIDIA a non-zero block, Azure a vTPM PCR (the paravisor is the same in every Azure CVM)', () => {
    const az = claims({ tee: 'azure-snp', measurements: { measurement: 'aa'.repeat(48), pcr4: 'dd'.repeat(32) } });
    expect(evaluatePolicy(policyFor('azure-snp', { measurement: ['aa'.repeat(48)] }), az, { expectedReportData: NONCE }).allowed).toBe(false);
    expect(evaluatePolicy(policyFor('azure-snp', { measurement: ['aa'.repeat(48)], pcr4: ['dd'.repeat(32)] }), az, { expectedReportData: NONCE }).allowed).toBe(true);
    const tdx = claims({ tee: 'tdx', measurements: { mrTd: 'aa'.repeat(48), rtmr1: 'bb'.repeat(48), rtmr2: 'cc'.repeat(48), mrConfigId: '00'.repeat(48), rtmr3: '00'.repeat(48) }, tcb: { tcbStatus: 'UpToDate' }, platform: {} });
    expect(evaluatePolicy(policyFor('tdx', { mrConfigId: ['00'.repeat(48)], rtmr3: ['00'.repeat(48)] }), tdx, { expectedReportData: NONCE }).allowed).toBe(false);
    // MRTD alone is the firmware, shared by every TD on a cloud's TDVF: the kernel (RTMR1) or its command line (RTMR2) must be pinned too.
    expect(evaluatePolicy(policyFor('tdx', { mrTd: ['aa'.repeat(48)] }), tdx, { expectedReportData: NONCE }).allowed).toBe(false);
    expect(evaluatePolicy(policyFor('tdx', { rtmr1: ['bb'.repeat(48)], rtmr2: ['cc'.repeat(48)] }), tdx, { expectedReportData: NONCE }).allowed).toBe(false);
    expect(evaluatePolicy(policyFor('tdx', { mrTd: ['aa'.repeat(48)], rtmr2: ['cc'.repeat(48)] }), tdx, { expectedReportData: NONCE }).allowed).toBe(true);
    const nitro = claims({ tee: 'nitro', measurements: { pcr0: 'aa'.repeat(48), pcr3: 'bb'.repeat(48), pcr8: 'cc'.repeat(48) }, tcb: {}, platform: {} });
    expect(evaluatePolicy(policyFor('nitro', { pcr3: ['bb'.repeat(48)] }), nitro, { expectedReportData: NONCE }).allowed).toBe(false);
    expect(evaluatePolicy(policyFor('nitro', { pcr8: ['cc'.repeat(48)] }), nitro, { expectedReportData: NONCE }).allowed).toBe(true);
    const gpu = claims({ tee: 'nvidia', measurements: { m1: '00'.repeat(48), m2: 'aa'.repeat(48) }, tcb: {}, platform: {} });
    expect(evaluatePolicy(policyFor('nvidia', { m1: ['00'.repeat(48)] }), gpu, { expectedReportData: NONCE }).allowed).toBe(false);
    expect(evaluatePolicy(policyFor('nvidia', { m1: ['00'.repeat(48)], m2: ['aa'.repeat(48)] }), gpu, { expectedReportData: NONCE }).allowed).toBe(true);
  });
});

describe('checks the existing tests did not pin (each kills a surviving mutant of the parser or evaluator)', () => {
  const base = { measurements: { measurement: ['aa'.repeat(48)] } };

  it('an empty allow-list, and minTcb values that are NaN, Infinity, fractions or strings, are policy errors', async () => {
    for (const section of [
      { measurements: { measurement: [] } },
      { ...base, minTcb: { snp: Number.NaN } },
      { ...base, minTcb: { snp: Number.POSITIVE_INFINITY } },
      { ...base, minTcb: { snp: 1.5 } },
      { ...base, minTcb: { snp: '23' } },
      { ...base, maxAgeSeconds: Number.POSITIVE_INFINITY },
      { ...base, clockSkewSeconds: -1 },
    ]) {
      await typedError(() => validatePolicy({ version: 1, tees: { snp: section } }), ['ERR_POLICY']);
    }
  });

  it('evidence whose timestamp is not a time is refused, not judged fresh', () => {
    const p = validatePolicy({ version: 1, tees: { nitro: { measurements: { pcr0: ['aa'.repeat(48)] } } } });
    const c = claims({ tee: 'nitro', measurements: { pcr0: 'aa'.repeat(48) }, tcb: {}, platform: {}, issuedAt: 'yesterday' });
    const v = evaluatePolicy(p, c, { expectedReportData: NONCE });
    expect(v.allowed).toBe(false);
    expect(v.reasons).toEqual([expect.stringMatching(/^policy\.maxAge: evidence timestamp "yesterday" is not a time/)]);
    expect(evaluatePolicy(p, { ...c, issuedAt: new Date().toISOString() }, { expectedReportData: NONCE }).allowed).toBe(true);
  });

  it('appraiseEvidence rejects a bad policy before it looks at the evidence (garbage evidence still throws ERR_POLICY)', async () => {
    const e = await typedError(() => appraiseEvidence('snp', new Uint8Array(10), { policy: { version: 1, allowSimulated: 'no', tees: {} } as never, expectedReportData: NONCE }), ['ERR_POLICY']);
    expect(e.message).toMatch(/allowSimulated: must be true or false/);
  });
});

describe('policy files: a duplicate key is an error, not "the last one wins"', () => {
  const strict = '{ "measurements": { "measurement": ["' + 'aa'.repeat(48) + '"] } }';
  const loose = '{ "measurements": { "hostData": ["' + '00'.repeat(32) + '"], "measurement": ["' + 'bb'.repeat(48) + '"] }, "allowDebug": true }';

  it('a second section, or a second key in a section, is refused with its path (a reviewer reads the first, JSON.parse keeps the last)', async () => {
    for (const [text, path] of [
      [`{ "version": 1, "tees": { "snp": ${strict}, "snp": ${loose} } }`, 'tees.snp'],
      [`{ "version": 1, "tees": { "snp": { "measurements": { "measurement": ["${'aa'.repeat(48)}"], "measurement": ["${'bb'.repeat(48)}"] } } } }`, 'tees.snp.measurements.measurement'],
      [`{ "version": 1, "tees": { "snp": ${strict} }, "allowSimulated": false, "allowSimulated": true }`, 'allowSimulated'],
      // The same key spelled with an escape is the same key.
      [`{ "version": 1, "tees": { "snp": { "allowDebug": false, "allow\\u0044ebug": true, "measurements": { "measurement": ["${'aa'.repeat(48)}"] } } } }`, 'tees.snp.allowDebug'],
    ] as const) {
      const e = await typedError(() => parsePolicy(text, 'p.json'), ['ERR_POLICY']);
      expect(e.message).toContain(`p.json: duplicate key "${path}"`);
    }
  });

  it('the same key in different objects, keys inside strings and arrays of objects are fine', () => {
    const p = parsePolicy(`{ "version": 1, "tees": { "snp": { "measurements": { "measurement": ["${'aa'.repeat(48)}"] }, "platform": { "measurement": ["x\\"measurement\\": "], "product": ["Genoa"] } }, "nitro": { "measurements": { "measurement": ["${'aa'.repeat(48)}"] } } } }`);
    expect(Object.keys(p.tees)).toEqual(['snp', 'nitro']);
    expect(p.tees.snp!.platform!.measurement).toEqual(['x"measurement": ']);
  });
});

describe('SEV-SNP: a stated minTcb lowers the built-in floor only for the product the section pins', () => {
  // A policy written for Genoa restates Genoa's floors (microcode 84); Milan's EntrySign floor is 213.
  const genoaFloors = { bootloader: 0, tee: 0, snp: 23, microcode: 84 };
  const milan = claims({ tcb: { bootloader: 4, tee: 0, snp: 24, microcode: 84 }, platform: { product: 'Milan', vmpl: '0' } });
  const policy = (platform?: Record<string, string[]>) => validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'.repeat(48)] }, minTcb: genoaFloors, ...(platform ? { platform } : {}) } } });

  it('Milan evidence below its built-in microcode floor is not let through by Genoa numbers', () => {
    const v = evaluatePolicy(policy(), milan, { expectedReportData: NONCE });
    expect(v.allowed).toBe(false);
    expect(v.reasons).toEqual([expect.stringMatching(/^policy\.minTcb\.microcode: .*below the built-in floor 219 for Milan.*platform\.product/)]);
    // Pinned to Genoa, Milan evidence is refused by the product pin instead.
    expect(evaluatePolicy(policy({ product: ['Genoa'] }), milan, { expectedReportData: NONCE }).reasons).toContainEqual(expect.stringMatching(/^policy\.platform\.product: /));
  });

  it('a section pinned to the one product may still lower its floor, on purpose', () => {
    expect(evaluatePolicy(policy({ product: ['Milan'] }), milan, { expectedReportData: NONCE }).allowed).toBe(true);
    // Genoa evidence meets the stated (equal) floors without a pin.
    expect(evaluatePolicy(policy(), claims(), { expectedReportData: NONCE }).allowed).toBe(true);
  });
});

describe('evaluatePolicy called from code with the wrong shapes', () => {
  it('null options or claims that are not an object are typed errors, not TypeErrors', async () => {
    const p = validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'.repeat(48)] } } } });
    await typedError(() => evaluatePolicy(p, claims(), null as never), ['ERR_INVALID_ARGUMENT']);
    for (const bad of [null, undefined, 'snp', { tee: 'snp' }, { ...claims(), measurements: null }, { ...claims(), platform: undefined }, { ...claims(), tcb: 5 }]) {
      await typedError(() => evaluatePolicy(p, bad as never, { expectedReportData: NONCE }), ['ERR_INVALID_ARGUMENT']);
    }
    // Well-formed claims still evaluate.
    expect(evaluatePolicy(p, claims(), { expectedReportData: NONCE }).allowed).toBe(true);
  });
});

describe('every verifier called directly refuses an invalid `now` with a typed error', () => {
  const tdxCollateral = () => parseTdxCollateral([{ name: 'dcapqvl', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]);
  const calls: [string, (now: unknown) => unknown][] = [
    ['snp', (now) => verifySnpReport(vec('sev-snp/trustee_milan_vlek_report.bin'), { certificates: certs('sev-snp/trustee_milan_vlek.der', 'sev-snp/asvk_ark_milan_vlek.pem'), now: now as Date })],
    ['tdx', (now) => verifyTdxQuote(vec('tdx/dcapqvl_quote_v4.bin'), { now: now as Date })],
    ['tdx with collateral', (now) => verifyTdxQuote(vec('tdx/dcapqvl_quote_v4.bin'), { now: now as Date, collateral: tdxCollateral() })],
    ['nitro', (now) => verifyNitroDocument(vec('nitro/evervault_doc_20221013.cose.bin'), { now: now as Date })],
    ['azure-snp', (now) => verifyAzureEvidence(vec('azure-vtpm/az_snp_genoa_evidence.json'), { certificates: certs('azure-vtpm/ask_ark_genoa.pem'), now: now as Date })],
    ['nvidia', (now) => verifyNvidiaReport(vec('nvidia/hopper_report_1.bin'), { certificates: certs('nvidia/hopper_cert_chain_1.pem'), now: now as Date })],
  ];
  for (const [name, call] of calls) {
    it(name, async () => {
      for (const now of [new Date(NaN), new Date('not a time'), Date.now(), '2025-01-01T00:00:00Z', null]) {
        const e = await typedError(() => call(now), ['ERR_INVALID_ARGUMENT']);
        expect(e.message).toMatch(/now must be a valid Date/);
      }
    });
  }

  it('the shared chain and CRL checks refuse an Invalid Date too (no verifier can skip them by accident)', async () => {
    const chain = certs('sev-snp/trustee_milan_vlek.der', 'sev-snp/asvk_ark_milan_vlek.pem');
    const opts = { now: new Date(NaN), trustedRoots: new Set([fingerprint(chain[chain.length - 1]!)]), what: 'test', hint: '' };
    await typedError(() => verifyChain(chain[0]!, chain, opts), ['ERR_INVALID_ARGUMENT']);
    await typedError(() => checkCrls([], chain, opts), ['ERR_INVALID_ARGUMENT']);
  });
});
