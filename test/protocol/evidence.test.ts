import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { verifyEvidence } from '../../src/attestation/verify.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import {
  EVIDENCE_LIMITS,
  decodePrimaryEvidence,
  decodeTeeEvidence,
  encodeTeeEvidence,
  snpReportFromJson,
  snpReportToJson,
  type DecodedEvidence,
} from '../../src/protocol/evidence.js';
import { certs, vec } from '../attestation/helpers.js';
import { fuzzRuns } from '../helpers/fuzz.js';

vi.setConfig({ testTimeout: 120_000 });

const json = (path: string): unknown => JSON.parse(Buffer.from(vec(path)).toString('utf8'));
/** Through JSON text and back, as the bytes travel on the wire. */
const wire = <T>(v: T): unknown => JSON.parse(JSON.stringify(v));
const x509 = (d: DecodedEvidence): X509Certificate[] => (d.certificates ?? []).map((c) => new X509Certificate(c));
const AMD = () => [...certs('sev-snp/ask_ark_milan.pem'), ...certs('sev-snp/ask_ark_genoa.pem')];
const wrap = (primary: unknown, additional = '') => ({ primary_evidence: primary, additional_evidence: additional });

function formatError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof SealedTensorsError)) throw err;
    expect(err.code).toBe('ERR_EVIDENCE_FORMAT');
    return err.message;
  }
  throw new Error('expected ERR_EVIDENCE_FORMAT, but it decoded');
}

/** A deep copy with one change at a path (undefined deletes the member). */
function edit(value: unknown, path: (string | number)[], to: unknown): unknown {
  const copy = structuredClone(value) as Record<string | number, unknown>;
  let at: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (to === undefined) delete at[last];
  else at[last] = to;
  return copy;
}

describe("Trustee's own evidence files verify through the decoder", () => {
  it('SNP e2e SnpEvidence (Genoa, v3, no mit-vector members): signature, chain VCEK -> SEV-Genoa -> ARK-Genoa, TCB, hwID', async () => {
    const primary = json('trustee/snp_e2e_evidence.json');
    const d = decodePrimaryEvidence('snp', primary);
    expect(d).toMatchObject({ tee: 'snp', type: 'snp', additionalEvidence: '', form: 'sev AttestationReport v3' });
    expect(d.evidence).toHaveLength(1184);
    expect(d.certificates).toHaveLength(1);
    const r = await verifyEvidence('snp', d.evidence, { now: new Date('2025-06-01T00:00:00Z'), certificates: [...x509(d), ...AMD()] });
    expect(r.checks.map((c) => c.check)).toEqual(['snp.signature', 'snp.chain', 'snp.product', 'snp.tcb_extensions', 'snp.hwid']);
    expect(r.claims).toMatchObject({
      measurement: '6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e',
      reportData: '7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf929eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0',
      debug: false,
      vmpl: 0,
      tcb: { bootloader: 10, tee: 0, snp: 23, microcode: 25, firmware: '1.55.40' },
      platform: { product: 'Genoa', signingKey: 'VCEK', policy: '0x30000', version: '3' },
    });
    // The wrapped form (what a KBS client sends) gives the same bytes.
    const w = decodeTeeEvidence('snp', wrap(primary, '{"nvidia":{}}'));
    expect(Buffer.compare(w.evidence, d.evidence)).toBe(0);
    expect(w.additionalEvidence).toBe('{"nvidia":{}}');
    // A changed report member is a changed signed byte.
    const bad = decodePrimaryEvidence('snp', edit(primary, ['attestation_report', 'report_data', 0], 0));
    await expect(verifyEvidence('snp', bad.evidence, { now: new Date('2025-06-01T00:00:00Z'), certificates: [...x509(d), ...AMD()] })).rejects.toMatchObject({ code: 'ERR_EVIDENCE_SIGNATURE' });
    const badTcb = decodePrimaryEvidence('snp', edit(primary, ['attestation_report', 'committed', 'minor'], 54));
    await expect(verifyEvidence('snp', badTcb.evidence, { now: new Date('2025-06-01T00:00:00Z'), certificates: [...x509(d), ...AMD()] })).rejects.toMatchObject({ code: 'ERR_EVIDENCE_SIGNATURE' });
  });

  it.each([
    ['v0', 'az-snp-vtpm v0', '6368616c6c656e6765', 'e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced', '2026-02-20T00:00:00Z'],
    ['v1', 'az-snp-vtpm v1', '6368616c6c656e6765', 'e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced', '2026-02-20T00:00:00Z'],
    ['v2', 'az-snp-vtpm v2', '982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef', '84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7', '2026-07-16T00:00:00Z'],
  ])('az-snp-vtpm evidence %s (Milan CVM): the nonce and PCR0 Trustee\'s own test expects', async (v, form, nonce, pcr0, at) => {
    const d = decodeTeeEvidence('az-snp-vtpm', wrap(json(`trustee/az_snp_vtpm_evidence_${v}.json`)));
    expect(d).toMatchObject({ tee: 'az-snp-vtpm', type: 'azure-snp', form });
    const r = await verifyEvidence('azure-snp', d.evidence, { now: new Date(at), certificates: AMD() });
    expect(r.checks.map((c) => c.check)).toEqual(['snp.signature', 'snp.chain', 'snp.product', 'snp.tcb_extensions', 'snp.hwid', 'azure.runtime_data', 'azure.tpm_quote_signature', 'azure.pcr_digest']);
    expect(r.claims).toMatchObject({ tee: 'azure-snp', reportData: nonce, debug: false, vmpl: 0, platform: { product: 'Milan' }, measurements: { pcr0 } });
    // v2 puts the nonce into the HCL runtime data's user-data as well (Trustee checks it for v2).
    if (v === 'v2') expect(r.claims.platform.userData!.toLowerCase()).toBe(nonce.padEnd(128, '0'));
  });

  it('az-snp-vtpm Genoa (v0): the same claims as our committed Azure vector read directly', async () => {
    const opts = { now: new Date('2026-01-01T00:00:00Z'), certificates: certs('azure-vtpm/ask_ark_genoa.pem') };
    const direct = await verifyEvidence('azure-snp', vec('azure-vtpm/az_snp_genoa_evidence.json'), opts);
    const d = decodeTeeEvidence('az-snp-vtpm', wrap(json('azure-vtpm/az_snp_genoa_evidence.json')));
    const viaKbs = await verifyEvidence('azure-snp', d.evidence, opts);
    expect(viaKbs.claims).toEqual(direct.claims);
    expect(viaKbs.claims.reportData).toMatch(/^0218488b/);
  });
});

describe('our committed vectors in Trustee shapes: same claims as the binary path', () => {
  const snpCases = [
    { report: 'sev-snp/gsg_milan_report.bin', leaf: 'sev-snp/gsg_milan_vcek.der', type: 'VCEK', ca: 'sev-snp/ask_ark_milan.pem', at: '2022-09-24T01:00:00Z' },
    { report: 'sev-snp/azure_genoa_report.bin', leaf: 'sev-snp/azure_genoa_vcek.pem', type: 'VCEK', ca: 'sev-snp/ask_ark_genoa.pem', at: '2026-01-01T00:00:00Z' },
    { report: 'sev-snp/trustee_milan_vlek_report.bin', leaf: 'sev-snp/trustee_milan_vlek.der', type: 'VLEK', ca: 'sev-snp/asvk_ark_milan_vlek.pem', at: '2025-06-01T00:00:00Z' },
  ] as const;

  it.each(snpCases)('SNP $report: report -> sev serde JSON -> 1184 bytes is the identity; claims equal', async (c) => {
    const report = vec(c.report);
    const [ask, ark] = certs(c.ca);
    const chain = [
      { type: c.type, der: new Uint8Array(certs(c.leaf)[0]!.raw) },
      // KDS and the host's certificate table carry the ASVK of a VLEK chain under the ASK type too.
      { type: 'ASK' as const, der: new Uint8Array(ask!.raw) },
      { type: 'ARK' as const, der: new Uint8Array(ark!.raw) },
    ];
    const te = wire(encodeTeeEvidence('snp', report, { snpCertificates: chain }));
    const d = decodeTeeEvidence('snp', te);
    expect(Buffer.compare(d.evidence, report)).toBe(0);
    expect(d.certificates).toHaveLength(3);
    const now = new Date(c.at);
    const direct = await verifyEvidence('snp', report, { now, certificates: [...certs(c.leaf), ...certs(c.ca)] });
    const viaKbs = await verifyEvidence('snp', d.evidence, { now, certificates: x509(d) });
    expect(viaKbs.claims).toEqual(direct.claims);
    expect(viaKbs.checks).toEqual(direct.checks);
  });

  it('the sev serde form has the members sev 7.1 writes, in its order, with None as null', () => {
    const j = snpReportToJson(vec('sev-snp/azure_genoa_report.bin'));
    expect(Object.keys(j)).toEqual([
      'version', 'guest_svn', 'policy', 'family_id', 'image_id', 'vmpl', 'sig_algo', 'current_tcb', 'plat_info', 'key_info', 'report_data',
      'measurement', 'host_data', 'id_key_digest', 'author_key_digest', 'report_id', 'report_id_ma', 'reported_tcb', 'cpuid_fam_id',
      'cpuid_mod_id', 'cpuid_step', 'chip_id', 'committed_tcb', 'current', 'committed', 'launch_tcb', 'launch_mit_vector', 'current_mit_vector', 'signature',
    ]);
    expect(j).toMatchObject({ version: 3, cpuid_fam_id: 0x19, launch_mit_vector: null, reported_tcb: { fmc: null, bootloader: 10, tee: 0, snp: 23, microcode: 84 } });
    // Trustee's e2e file, re-encoded, is the same JSON apart from the members its older writer left out.
    const e2e = json('trustee/snp_e2e_evidence.json') as { attestation_report: Record<string, unknown> };
    const again = snpReportToJson(snpReportFromJson(e2e.attestation_report));
    expect(again).toEqual({ ...e2e.attestation_report, launch_mit_vector: null, current_mit_vector: null });
  });

  it('TDX quotes as {cc_eventlog, quote}: same bytes, same claims with collateral; the event log is carried', async () => {
    const q = vec('tdx/dcapqvl_quote_v4.bin');
    const log = new Uint8Array([1, 2, 3, 4, 5]);
    const d = decodeTeeEvidence('tdx', wire(encodeTeeEvidence('tdx', q, { eventLog: log })));
    expect(d).toMatchObject({ tee: 'tdx', type: 'tdx', form: 'TDX quote v4 with event log', eventLog: log });
    expect(Buffer.compare(d.evidence, q)).toBe(0);
    const opts = { now: new Date(1752919234 * 1000), collateral: parseTdxCollateral([{ name: 'c', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]) };
    expect((await verifyEvidence('tdx', d.evidence, opts)).claims).toEqual((await verifyEvidence('tdx', q, opts)).claims);
    // Trustee's attester writes null for no log; an empty string means none as well.
    const q2 = vec('tdx/trustee_quote4_v4.bin');
    for (const cc of [null, '', undefined]) {
      const e = decodeTeeEvidence('tdx', wrap({ ...(cc !== undefined ? { cc_eventlog: cc } : {}), quote: Buffer.from(q2).toString('base64') }));
      expect(e.eventLog).toBeUndefined();
      expect(Buffer.compare(e.evidence, q2)).toBe(0);
    }
    const r = await verifyEvidence('tdx', decodeTeeEvidence('tdx', wrap({ quote: Buffer.from(q2).toString('base64') })).evidence, { now: new Date('2023-07-01T01:00:00Z') });
    expect(r.claims.debug).toBe(true);
  });

  it('Azure: our vector in the v1 shape (hex quote, base64url report and DER vcek) gives the same claims', async () => {
    const v0 = json('azure-vtpm/az_snp_genoa_evidence.json') as { quote: { signature: number[]; message: number[]; pcrs: number[][] }; report: number[]; vcek: string };
    const hexOf = (a: number[]) => Buffer.from(a).toString('hex');
    const v1 = {
      version: 1,
      tpm_quote: { signature: hexOf(v0.quote.signature), message: hexOf(v0.quote.message).toUpperCase(), pcrs: v0.quote.pcrs.map(hexOf) },
      hcl_report: Buffer.from(v0.report).toString('base64url'),
      // Padded, as serde_with writes it; unpadded is read too.
      vcek: Buffer.from(certs('sev-snp/azure_genoa_vcek.pem')[0]!.raw).toString('base64').replace(/\+/g, '-').replace(/\//g, '_'),
    };
    const opts = { now: new Date('2026-01-01T00:00:00Z'), certificates: certs('azure-vtpm/ask_ark_genoa.pem') };
    const direct = await verifyEvidence('azure-snp', vec('azure-vtpm/az_snp_genoa_evidence.json'), opts);
    const d = decodeTeeEvidence('az-snp-vtpm', wrap(v1));
    expect(d.form).toBe('az-snp-vtpm v1');
    expect((await verifyEvidence('azure-snp', d.evidence, opts)).claims).toEqual(direct.claims);
  });

  it('Nitro and simulated: {"evidence": base64}, wrapped (as encoded) or bare; the bytes are unchanged', async () => {
    const doc = vec('nitro/evervault_doc_20221013.cose.bin');
    const wrapped = wire(encodeTeeEvidence('nitro', doc, { additionalEvidence: 'x' }));
    expect(wrapped).toEqual({ primary_evidence: { evidence: Buffer.from(doc).toString('base64') }, additional_evidence: 'x' });
    for (const te of [wrapped, { evidence: Buffer.from(doc).toString('base64') }]) {
      const d = decodeTeeEvidence('nitro', te);
      expect(Buffer.compare(d.evidence, doc)).toBe(0);
      expect(d.type).toBe('nitro');
    }
    const r = await verifyEvidence('nitro', decodeTeeEvidence('nitro', wrapped).evidence, { now: new Date(1665651482136) });
    expect(r.claims.measurements.pcr0).toMatch(/^f4d48b81/);
    const tee = new SimulatedTee();
    const ev = await tee.getEvidence(new Uint8Array(64).fill(7));
    const d = decodeTeeEvidence('simulated', wire(encodeTeeEvidence('simulated', ev)));
    expect(d).toMatchObject({ tee: 'simulated', type: 'simulated', additionalEvidence: '' });
    const s = await verifyEvidence('simulated', d.evidence, { trustedRoots: [tee.rootFingerprint] });
    expect(s.claims).toMatchObject({ simulated: true, reportData: '07'.repeat(64) });
  });
});

describe('strict parsing: each fault is ERR_EVIDENCE_FORMAT naming the member', () => {
  const e2e = json('trustee/snp_e2e_evidence.json');
  const AR = ['attestation_report'];
  const snp = (mutated: unknown) => () => decodePrimaryEvidence('snp', mutated);

  it.each([
    [[...AR, 'surprise'], 1, /attestation_report\.surprise is not a member/],
    [[...AR, 'measurement'], undefined, /attestation_report\.measurement is missing/],
    [[...AR, 'measurement', 3], 256, /measurement\[3\] must be a byte/],
    [[...AR, 'measurement', 3], -1, /measurement\[3\] must be a byte/],
    [[...AR, 'measurement', 3], 1.5, /measurement\[3\] must be a byte/],
    [[...AR, 'measurement', 3], '7', /measurement\[3\] must be a byte/],
    [[...AR, 'report_data'], new Array(63).fill(0), /report_data must hold exactly 64 bytes, got 63/],
    [[...AR, 'report_data'], 'AAAA', /report_data must be an array of bytes/],
    [[...AR, 'version'], 1, /version is 1; report versions 2 to 5/],
    [[...AR, 'version'], 6, /version is 6/],
    [[...AR, 'version'], 2 ** 32, /version must be an integer from 0 to 4294967295/],
    [[...AR, 'policy'], 2 ** 60, /policy is above 2\^53 - 1/],
    [[...AR, 'policy'], -1, /policy must be an integer/],
    [[...AR, 'cpuid_mod_id'], null, /cpuid_fam_id and cpuid_mod_id, cpuid_step must be present in a version 3 report/],
    [[...AR, 'cpuid_mod_id'], 0x50, /0x19\/0x50 is not a known SEV-SNP processor/],
    [[...AR, 'reported_tcb', 'fmc'], 3, /reported_tcb\.fmc must be null for a Genoa report/],
    [[...AR, 'reported_tcb', 'snp'], 300, /reported_tcb\.snp must be an integer from 0 to 255/],
    [[...AR, 'launch_mit_vector'], 0, /launch_mit_vector and current_mit_vector must be null in a version 3 report/],
    [[...AR, 'current', 'patch'], 1, /attestation_report\.current\.patch is not a member/],
    [[...AR, 'signature', 'r'], new Array(48).fill(1), /signature\.r must hold exactly 72 bytes/],
    [['cert_chain', 0, 'cert_type'], 'vcek', /cert_chain\[0\]\.cert_type must be "VCEK"/],
    [['cert_chain', 0, 'cert_type'], { OTHER: 'not-a-uuid' }, /cert_type\.OTHER must be a UUID/],
    [['cert_chain', 0, 'data'], [0x30, 0x03, 1, 2], /cert_chain\[0\]\.data is not a DER certificate/],
    [['cert_chain', 0, 'data'], new Array(EVIDENCE_LIMITS.certificateBytes + 1).fill(0), /data holds 16385 bytes, over the limit of 16384/],
    [['cert_chain'], new Array(9).fill({ cert_type: 'CRL', data: [] }), /cert_chain has 9 entries, over the limit of 8/],
    [['cert_chain'], {}, /cert_chain must be an array or null/],
    [['attestation_report'], [], /attestation_report must be a JSON object, got an array of 0/],
  ] as [(string | number)[], unknown, RegExp][])('SNP member %j changed', (path, value, message) => {
    expect(formatError(snp(edit(e2e, path, value)))).toMatch(message);
  });

  it('SNP: optional members absent or null are None; CRL, Empty and OTHER entries are skipped like Trustee; Turin TCBs need fmc', () => {
    expect(decodePrimaryEvidence('snp', edit(e2e, ['cert_chain'], null)).certificates).toBeUndefined();
    expect(decodePrimaryEvidence('snp', edit(e2e, ['cert_chain'], undefined)).certificates).toBeUndefined();
    const extra = edit(e2e, ['cert_chain', 1], { cert_type: { OTHER: '11111111-2222-3333-4444-555555555555' }, data: [1, 2] }) as { cert_chain: unknown[] };
    extra.cert_chain.push({ cert_type: 'CRL', data: [3] }, { cert_type: 'Empty', data: [] });
    expect(decodePrimaryEvidence('snp', extra).certificates).toHaveLength(1);
    // Turin (family 0x1a): the TCB layout has FMC first, so fmc must be given.
    const turin = edit(edit(e2e, [...AR, 'cpuid_fam_id'], 0x1a), [...AR, 'cpuid_mod_id'], 0x02);
    expect(formatError(snp(turin))).toMatch(/current_tcb\.fmc must be a number for a Turin report/);
    let t = turin;
    for (const k of ['current_tcb', 'reported_tcb', 'committed_tcb', 'launch_tcb']) t = edit(t, [...AR, k, 'fmc'], 7);
    const bytes = decodePrimaryEvidence('snp', t).evidence;
    expect([...bytes.subarray(0x180, 0x188)]).toEqual([7, 10, 0, 23, 0, 0, 0, 25]);
    expect(snpReportToJson(bytes).reported_tcb).toEqual({ fmc: 7, bootloader: 10, tee: 0, snp: 23, microcode: 25 });
    // Version 5 carries the mitigation vectors; version 2 has no CPUID.
    const v5 = edit(edit(edit(e2e, [...AR, 'version'], 5), [...AR, 'launch_mit_vector'], 3), [...AR, 'current_mit_vector'], 2 ** 40);
    const b5 = decodePrimaryEvidence('snp', v5).evidence;
    expect(new DataView(b5.buffer).getBigUint64(0x200, true)).toBe(2n ** 40n);
    expect(formatError(snp(edit(e2e, [...AR, 'version'], 5)))).toMatch(/must be present in a version 5 report/);
    let v2 = edit(e2e, [...AR, 'version'], 2);
    expect(formatError(snp(v2))).toMatch(/CPUID members must be null in a version 2 report/);
    for (const k of ['cpuid_fam_id', 'cpuid_mod_id', 'cpuid_step']) v2 = edit(v2, [...AR, k], null);
    expect(decodePrimaryEvidence('snp', v2).evidence[0x188]).toBe(0);
    expect(formatError(snp(edit(v2, [...AR, 'chip_id'], new Array(64).fill(0))))).toMatch(/masked \(zero\) chip_id/);
  });

  it('the wrapper: Trustee requires {primary_evidence, additional_evidence}; the bare form is refused for its tees', () => {
    expect(formatError(() => decodeTeeEvidence('snp', e2e))).toMatch(/tee-evidence\.attestation_report is not a member/);
    expect(formatError(() => decodeTeeEvidence('snp', { primary_evidence: e2e }))).toMatch(/tee-evidence\.additional_evidence is missing/);
    expect(formatError(() => decodeTeeEvidence('snp', wrap(e2e, {} as unknown as string)))).toMatch(/additional_evidence must be a string/);
    expect(formatError(() => decodeTeeEvidence('snp', wrap(e2e, 'x'.repeat(EVIDENCE_LIMITS.additionalEvidenceChars + 1))))).toMatch(/over the limit/);
    expect(formatError(() => decodeTeeEvidence('snp', wrap(edit(e2e, [...AR, 'vmpl'], '0'))))).toMatch(/^tee-evidence\.primary_evidence\.attestation_report\.vmpl must be an integer/);
    expect(formatError(() => decodeTeeEvidence('sgx', wrap(e2e)))).toMatch(/tee "sgx" is not supported; supported: snp, tdx, az-snp-vtpm, nitro, simulated/);
    expect(formatError(() => decodeTeeEvidence('azsnpvtpm', wrap(e2e)))).toMatch(/not supported/);
    // JSON.parse makes "__proto__" an own member: refused like any unknown one.
    expect(formatError(() => decodeTeeEvidence('snp', JSON.parse(`{"__proto__":{},"primary_evidence":{},"additional_evidence":""}`)))).toMatch(/__proto__ is not a member/);
    expect(formatError(() => decodeTeeEvidence('snp', null))).toMatch(/tee-evidence must be a JSON object, got null/);
  });

  it('TDX and the extensions: strict base64, sizes', () => {
    const q = Buffer.from(vec('tdx/trustee_quote4_v4.bin')).toString('base64');
    const tdx = (v: unknown) => () => decodeTeeEvidence('tdx', wrap(v));
    expect(formatError(tdx({ quote: '' }))).toMatch(/quote is empty/);
    expect(formatError(tdx({ quote: q.replace(/=+$/, '') }))).toMatch(/standard base64 with padding/);
    expect(formatError(tdx({ quote: q.replace(/\+/g, '-') }))).toMatch(/standard base64/);
    expect(formatError(tdx({ quote: 'AB==' }))).toMatch(/not canonical base64/);
    expect(formatError(tdx({ quote: 'A'.repeat(EVIDENCE_LIMITS.tdxQuoteBytes * 2) }))).toMatch(/over the limit/);
    expect(formatError(tdx({ quote: q, cc_eventlog: 7 }))).toMatch(/cc_eventlog must be a string, got the number 7/);
    expect(formatError(tdx({ quote: q, eventlog: '' }))).toMatch(/primary_evidence\.eventlog is not a member/);
    expect(formatError(() => decodeTeeEvidence('nitro', { evidence: 'AAAA', extra: 1 }))).toMatch(/tee-evidence\.extra is not a member/);
    expect(formatError(() => decodeTeeEvidence('simulated', wrap({ evidence: '' })))).toMatch(/evidence is empty/);
    expect(() => encodeTeeEvidence('nitro', new Uint8Array(EVIDENCE_LIMITS.extensionEvidenceBytes + 1))).toThrow(/over the limit/);
  });

  it('az-snp-vtpm: versions, hex, base64url, PCR sizes, PEM', () => {
    const v1 = json('trustee/az_snp_vtpm_evidence_v1.json');
    const v0 = json('trustee/az_snp_vtpm_evidence_v0.json');
    const az = (v: unknown) => () => decodePrimaryEvidence('az-snp-vtpm', v);
    expect(formatError(az(edit(v1, ['version'], 3)))).toMatch(/version is 3; az-snp-vtpm evidence versions 1 and 2/);
    expect(formatError(az(edit(v1, ['tpm_quote', 'signature'], 'abc')))).toMatch(/tpm_quote\.signature must be hex with an even number of digits/);
    expect(formatError(az(edit(v1, ['tpm_quote', 'pcrs', 5], '00'.repeat(31))))).toMatch(/pcrs\[5\] must be 32 bytes, got 31/);
    expect(formatError(az(edit(v1, ['tpm_quote', 'pcrs'], new Array(25).fill('00'.repeat(32)))))).toMatch(/pcrs must hold 1 to 24 entries, got 25/);
    expect(formatError(az(edit(v1, ['hcl_report'], 'a+b/')))).toMatch(/hcl_report must be URL-safe base64/);
    expect(formatError(az(edit(v1, ['vcek'], (v0 as { vcek: string }).vcek)))).toMatch(/vcek must be URL-safe base64/);
    expect(formatError(az(edit(v0, ['vcek'], 'MIIB')))).toMatch(/vcek must be one PEM CERTIFICATE block/);
    expect(formatError(az(edit(v0, ['version'], 0)))).toMatch(/primary_evidence\.quote is not a member/);
    expect(formatError(az(edit(v0, ['quote', 'pcrs', 0], [1, 2])))).toMatch(/quote\.pcrs\[0\] must hold exactly 32 bytes/);
  });

  it('snpReportToJson refuses what the JSON form cannot carry', () => {
    const r = vec('sev-snp/azure_genoa_report.bin');
    const reserved = r.slice();
    reserved[0x1a0 - 1] = 1;
    expect(() => snpReportToJson(reserved)).toThrow(/non-zero reserved byte at offset 0x19f/);
    const v6 = r.slice();
    v6[0] = 6;
    expect(() => snpReportToJson(v6)).toThrow(/version 6 is not supported/);
    const big = r.slice();
    big[0x0f] = 0x01;
    expect(() => snpReportToJson(big)).toThrow(/POLICY 0x1.* is above 2\^53 - 1/);
    expect(() => snpReportToJson(r.subarray(1))).toThrow(/must be 1184 bytes, got 1183/);
    expect(() => encodeTeeEvidence('azure-snp' as 'snp', r)).toThrow(/no tee-evidence encoding/);
  });
});

describe('decodeTeeEvidence on random and mutated JSON throws nothing but ERR_EVIDENCE_FORMAT (fast-check)', () => {
  const RUNS = fuzzRuns(300);
  const tees = fc.constantFrom('snp', 'tdx', 'az-snp-vtpm', 'nitro', 'simulated', 'sgx', '');
  const valid: [string, unknown][] = [
    ['snp', wrap(json('trustee/snp_e2e_evidence.json'))],
    ['az-snp-vtpm', wrap(json('trustee/az_snp_vtpm_evidence_v1.json'))],
    ['az-snp-vtpm', wrap(json('trustee/az_snp_vtpm_evidence_v0.json'))],
    ['tdx', wrap({ cc_eventlog: 'AAEC', quote: Buffer.from(vec('tdx/trustee_quote4_v4.bin')).toString('base64') })],
    ['nitro', wrap({ evidence: 'AAEC' })],
  ];

  function typedOnly(fn: () => DecodedEvidence): void {
    try {
      const d = fn();
      expect(d.evidence).toBeInstanceOf(Uint8Array);
      if (d.type === 'snp') expect(d.evidence).toHaveLength(1184);
    } catch (err) {
      if (!(err instanceof SealedTensorsError) || err.code !== 'ERR_EVIDENCE_FORMAT') throw err;
    }
  }

  /** All member/index paths of a JSON value. */
  function paths(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
    out.push(at);
    if (Array.isArray(v)) v.slice(0, 80).forEach((x, i) => paths(x, [...at, i], out));
    else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out);
    return out;
  }
  const validPaths = valid.map(([, v]) => paths(v));

  it('random JSON values under any tee name', () => {
    fc.assert(fc.property(tees, fc.jsonValue({ maxDepth: 4 }), (tee, v) => typedOnly(() => decodeTeeEvidence(tee, v))), { numRuns: RUNS });
  });

  it('random JSON as primary_evidence, and inside the known shapes', () => {
    fc.assert(
      fc.property(tees, fc.jsonValue({ maxDepth: 3 }), fc.string(), (tee, v, extra) => typedOnly(() => decodeTeeEvidence(tee, wrap(v, extra)))),
      { numRuns: RUNS },
    );
  });

  it('valid evidence with one member replaced, deleted or added', () => {
    const mutation = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }).map((x) => ({ kind: 'set' as const, x })),
      fc.constantFrom(-1, 256, 1.5, 2 ** 53, -0, Number.MAX_SAFE_INTEGER, null, '', [], {}, 'AAAA', '00').map((x) => ({ kind: 'set' as const, x })),
      fc.constant({ kind: 'delete' as const, x: undefined }),
    );
    fc.assert(
      fc.property(fc.nat(valid.length - 1), fc.nat(), mutation, (which, pick, m) => {
        const [tee, v] = valid[which]!;
        const all = validPaths[which]!.filter((p) => p.length > 0);
        const path = all[pick % all.length]!;
        typedOnly(() => decodeTeeEvidence(tee, edit(v, path, m.kind === 'delete' ? undefined : m.x)));
      }),
      { numRuns: RUNS },
    );
  });

  it('snpReportToJson then snpReportFromJson is the identity on representable reports', () => {
    const base = vec('sev-snp/azure_genoa_report.bin');
    // Signed fields that are free bytes in the layout (no reserved or TCB-layout bytes).
    const free = [...Array(0x38).keys()].filter((i) => i >= 0x10 && i < 0x30).concat([...Array(0x180 - 0x50).keys()].map((i) => i + 0x50));
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...free), fc.integer({ min: 0, max: 255 })), { maxLength: 20 }), (edits) => {
        const r = base.slice();
        for (const [at, b] of edits) r[at] = b;
        expect(Buffer.compare(snpReportFromJson(wire(snpReportToJson(r))), r)).toBe(0);
      }),
      { numRuns: RUNS },
    );
  });
});
