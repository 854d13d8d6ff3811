import fc from 'fast-check';
import { describe, it, vi } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { parseSnpReport, verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { parseTdxQuote, verifyTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import { parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { parseNitroDocument, verifyNitroDocument } from '../../src/attestation/verifiers/nitro.js';
import { parseAzureEvidence, parseHclReport, parseTpmsAttest, verifyAzureEvidence } from '../../src/attestation/verifiers/azure.js';
import { parseNvidiaReport, verifyNvidiaReport } from '../../src/attestation/verifiers/nvidia.js';
import { parseSimulatedEvidence } from '../../src/attestation/verifiers/simulated.js';
import { parseCertificates } from '../../src/attestation/certs.js';
import { parseSnpCertTable } from '../../src/attestation/providers/snp-certs.js';
import { nsmAttestationDocument } from '../../src/attestation/providers/nsm.js';
import { MAX_AGE_SECONDS_LIMIT, parsePolicy, validatePolicy } from '../../src/attestation/policy/policy.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { TEE_TYPES, type Claims } from '../../src/attestation/types.js';
import { certs, vec } from './helpers.js';
import { fuzzRuns } from '../helpers/fuzz.js';

// Bit-flip and property loops run thousands of verifications; on a shared 2-core machine that can take minutes.
vi.setConfig({ testTimeout: 300_000 });

const ALLOWED = new Set(['ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_CHAIN', 'ERR_POLICY']);

/** The property: a parser returns, or throws a SealedTensorsError with an evidence/policy code. Nothing else. */
function typedOnly(fn: () => unknown, extra: readonly string[] = []): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    if (err instanceof SealedTensorsError && (ALLOWED.has(err.code) || extra.includes(err.code))) return true;
    throw err;
  }
}

async function typedOnlyAsync(fn: () => Promise<unknown>): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (err) {
    if (err instanceof SealedTensorsError && ALLOWED.has(err.code)) return true;
    throw err;
  }
}

/** Random bytes, and bytes that start like the real structure (so parsing gets past the magic). */
const bytes = (max: number) => fc.uint8Array({ minLength: 0, maxLength: max });

/** Truncations and random overwrites of a real input. */
function mutations(base: Uint8Array) {
  return fc.oneof(
    fc.nat({ max: base.length }).map((n) => base.slice(0, n)),
    fc.tuple(fc.nat({ max: base.length - 1 }), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([at, patch]) => {
      const c = base.slice();
      c.set(patch.subarray(0, base.length - at), at);
      return c;
    }),
    fc.tuple(fc.nat({ max: base.length - 1 }), fc.nat({ max: 0xffffffff })).map(([at, v]) => {
      // Length fields are where parsers break: write a random u16/u32 anywhere.
      const c = base.slice();
      const view = new DataView(c.buffer);
      if (at + 4 <= c.length) view.setUint32(at, v, true);
      else if (at + 2 <= c.length) view.setUint16(at, v & 0xffff, true);
      return c;
    }),
  );
}

// 3000 under `npm run fuzz`.
const RUNS = fuzzRuns(400);

describe('parsers give typed errors on random input (fast-check)', () => {
  it(`SEV-SNP report: ${RUNS} random inputs`, () => {
    fc.assert(fc.property(fc.oneof(bytes(1300), fc.uint8Array({ minLength: 1184, maxLength: 1184 })), (b) => typedOnly(() => parseSnpReport(b))), { numRuns: RUNS });
  });
  it(`TDX quote: ${RUNS} random inputs`, () => {
    const header = fc.uint8Array({ minLength: 0, maxLength: 6000 }).map((b) => {
      const c = new Uint8Array(Math.max(b.length, 8));
      c.set(b);
      c.set([4, 0, 2, 0, 0x81, 0, 0, 0]);
      return c;
    });
    fc.assert(fc.property(fc.oneof(bytes(6000), header), (b) => typedOnly(() => parseTdxQuote(b))), { numRuns: RUNS });
  });
  it(`Nitro COSE/CBOR: ${RUNS} random inputs`, () => {
    fc.assert(fc.property(bytes(3000), (b) => typedOnly(() => parseNitroDocument(b))), { numRuns: RUNS });
    // CBOR that is well-formed but shaped wrong.
    fc.assert(
      fc.property(fc.anything({ withMap: false, withSet: false, withBigInt: false, withDate: false, withTypedArray: true }), (v) => {
        let b: Uint8Array;
        try {
          b = new Uint8Array(Buffer.from(JSON.stringify(v) ?? 'null'));
        } catch {
          return true;
        }
        return typedOnly(() => parseNitroDocument(b));
      }),
      { numRuns: 1000 },
    );
  });
  it(`Azure HCL report, TPMS_ATTEST and evidence JSON: ${RUNS} random inputs each`, () => {
    const hcl = bytes(3000).map((b) => {
      const c = new Uint8Array(Math.max(b.length, 16));
      c.set(b);
      c.set(Buffer.from('HCLA'));
      c[12] = 2;
      return c;
    });
    fc.assert(fc.property(fc.oneof(bytes(3000), hcl), (b) => typedOnly(() => parseHclReport(b))), { numRuns: RUNS });
    const attest = bytes(300).map((b) => new Uint8Array([0xff, 0x54, 0x43, 0x47, 0x80, 0x18, ...b]));
    fc.assert(fc.property(fc.oneof(bytes(300), attest), (b) => typedOnly(() => parseTpmsAttest(b))), { numRuns: RUNS });
    fc.assert(fc.property(fc.json(), (j) => typedOnly(() => parseAzureEvidence(new Uint8Array(Buffer.from(j))))), { numRuns: RUNS });
  });
  it(`NVIDIA SPDM report: ${RUNS} random inputs`, () => {
    const spdm = bytes(5000).map((b) => {
      const c = new Uint8Array(Math.max(b.length, 42));
      c.set(b);
      c.set([0x11, 0xe0, 0x01, 0xff]);
      c[37] = 0x11;
      c[38] = 0x60;
      return c;
    });
    fc.assert(fc.property(fc.oneof(bytes(5000), spdm), (b) => typedOnly(() => parseNvidiaReport(b))), { numRuns: RUNS });
  });
  it(`simulated evidence, SNP cert table, NSM response, certificates: ${RUNS} random inputs each`, () => {
    const sim = bytes(400).map((b) => new Uint8Array([...Buffer.from('STSIMEV1'), 1, 0, ...b]));
    fc.assert(fc.property(fc.oneof(bytes(400), sim), (b) => typedOnly(() => parseSimulatedEvidence(b))), { numRuns: RUNS });
    fc.assert(fc.property(bytes(600), (b) => typedOnly(() => parseSnpCertTable(b))), { numRuns: RUNS });
    fc.assert(fc.property(bytes(600), (b) => typedOnly(() => nsmAttestationDocument(b), ['ERR_IO']) /* an NSM {"Error": ...} reply */), { numRuns: RUNS });
    fc.assert(fc.property(fc.oneof(bytes(2000), bytes(2000).map((b) => new Uint8Array([0x30, 0x82, ...b]))), (b) => typedOnly(() => parseCertificates(b, 'fuzz'))), { numRuns: RUNS });
  });
  it(`policy JSON: ${RUNS} random documents`, () => {
    fc.assert(fc.property(fc.json(), (j) => typedOnly(() => parsePolicy(j))), { numRuns: RUNS });
    const shaped = fc.record({
      version: fc.oneof(fc.constant(1), fc.anything()),
      allowSimulated: fc.oneof(fc.boolean(), fc.anything()),
      tees: fc.dictionary(fc.constantFrom('snp', 'tdx', 'nitro', 'simulated', 'x'), fc.dictionary(fc.constantFrom('measurements', 'minTcb', 'allowDebug', 'reportData', 'maxAgeSeconds', 'platform', 'tcbStatus', 'requireReportData', 'y'), fc.anything())),
    });
    fc.assert(fc.property(shaped, (p) => typedOnly(() => validatePolicy(p))), { numRuns: RUNS });
  });
  it(`TDX collateral files: ${RUNS} random inputs`, () => {
    fc.assert(fc.property(fc.oneof(bytes(500), fc.json().map((j) => new Uint8Array(Buffer.from(j)))), (b) => typedOnly(() => parseTdxCollateral([{ name: 'fuzz', bytes: b }]))), { numRuns: RUNS });
  });
});

describe('mutations of real evidence give typed errors (fast-check)', () => {
  it(`SEV-SNP: ${RUNS} truncations/overwrites through the full verifier`, () => {
    const base = vec('sev-snp/azure_genoa_report.bin');
    const chain = certs('sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_genoa.pem');
    const now = new Date('2026-01-01T00:00:00Z');
    fc.assert(fc.property(mutations(base), (b) => typedOnly(() => verifySnpReport(b, { now, certificates: chain }))), { numRuns: RUNS });
  });
  it(`TDX: ${RUNS} truncations/overwrites through the full verifier`, async () => {
    const base = vec('tdx/trustee_quote4_v4.bin');
    const now = new Date('2023-07-01T01:00:00Z');
    await fc.assert(fc.asyncProperty(mutations(base), (b) => typedOnlyAsync(() => verifyTdxQuote(b, { now }))), { numRuns: RUNS });
  });
  it(`Nitro: ${RUNS} truncations/overwrites through the full verifier`, () => {
    const base = vec('nitro/evervault_doc_20221013.cose.bin');
    const now = new Date(1665651482136);
    fc.assert(fc.property(mutations(base), (b) => typedOnly(() => verifyNitroDocument(b, { now }))), { numRuns: RUNS });
  });
  it(`Azure, NVIDIA, collateral: ${RUNS} truncations/overwrites of each through the parsers`, () => {
    const hcl = vec('azure-vtpm/az_snp_genoa_hcl_report.bin');
    fc.assert(fc.property(mutations(hcl), (b) => typedOnly(() => parseHclReport(b))), { numRuns: RUNS });
    const nv = vec('nvidia/hopper_report_1.bin');
    fc.assert(fc.property(mutations(nv), (b) => typedOnly(() => parseNvidiaReport(b))), { numRuns: RUNS });
    const col = vec('tdx/gtg_tcbinfo_fmspc50806f000000.json');
    fc.assert(fc.property(mutations(col), (b) => typedOnly(() => parseTdxCollateral([{ name: 'm', bytes: b }]))), { numRuns: RUNS });
  });
  it('Azure and NVIDIA: 1000 truncations/overwrites each through the full verifiers', () => {
    const az = vec('azure-vtpm/az_snp_genoa_evidence.json');
    const azChain = certs('azure-vtpm/ask_ark_genoa.pem');
    const now = new Date('2026-01-01T00:00:00Z');
    fc.assert(fc.property(mutations(az), (b) => typedOnly(() => verifyAzureEvidence(b, { now, certificates: azChain }))), { numRuns: 1000 });
    const nv = vec('nvidia/hopper_report_1.bin');
    const nvChain = certs('nvidia/hopper_cert_chain_1.pem');
    fc.assert(fc.property(mutations(nv), (b) => typedOnly(() => verifyNvidiaReport(b, { certificates: nvChain }))), { numRuns: 1000 });
  });
});

describe('policy evaluation invariants (fast-check)', () => {
  const hex = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b).toString('hex'));
  const claims: fc.Arbitrary<Claims> = fc.record({
    tee: fc.constantFrom(...TEE_TYPES),
    simulated: fc.boolean(),
    measurement: hex(48),
    measurements: fc.dictionary(fc.constantFrom('measurement', 'mrTd', 'pcr0', 'hostData'), hex(8)),
    reportData: hex(64),
    debug: fc.boolean(),
    tcb: fc.dictionary(fc.constantFrom('snp', 'microcode', 'tcbStatus', 'pceSvn'), fc.oneof(fc.nat(300), fc.constantFrom('UpToDate', 'OutOfDate'))),
    platform: fc.dictionary(fc.constantFrom('product', 'fmspc'), fc.constantFrom('Milan', 'Genoa', 'b0c06f000000')),
    issuedAt: fc.option(fc.date({ min: new Date('2020-01-01'), max: new Date('2030-01-01'), noInvalidDate: true }).map((d) => d.toISOString()), { nil: undefined }),
  }).map((c) => (c.issuedAt === undefined ? (({ issuedAt: _, ...rest }) => rest)(c) : c) as Claims);
  const section = fc.record(
    {
      measurements: fc.dictionary(fc.constantFrom('measurement', 'mrTd', 'pcr0'), fc.array(hex(8), { minLength: 1, maxLength: 3 }), { minKeys: 1 }),
      minTcb: fc.dictionary(fc.constantFrom('snp', 'microcode', 'pceSvn'), fc.nat(300), { minKeys: 1 }),
      tcbStatus: fc.constantFrom(['UpToDate'], ['UpToDate', 'OutOfDate']),
      platform: fc.dictionary(fc.constantFrom('product'), fc.constant(['Genoa']), { minKeys: 1 }),
      allowDebug: fc.boolean(),
      requireReportData: fc.constant(true as const),
      clockSkewSeconds: fc.nat(600),
      maxAgeSeconds: fc.integer({ min: 1, max: MAX_AGE_SECONDS_LIMIT }),
    },
    { requiredKeys: [] },
  );
  const policy = fc
    .record({ allowSimulated: fc.boolean(), tees: fc.dictionary(fc.constantFrom(...TEE_TYPES), section) })
    .map((p) => ({ version: 1, ...p, tees: p.allowSimulated ? p.tees : Object.fromEntries(Object.entries(p.tees).filter(([k]) => k !== 'simulated')) }));

  it(`${RUNS} random (policy, claims): allowed exactly when every check passed, one reason per failed check, simulated never allowed without allowSimulated`, () => {
    fc.assert(
      fc.property(policy, claims, fc.option(fc.uint8Array({ minLength: 1, maxLength: 64 }), { nil: undefined }), (p, c, expected) => {
        const valid = validatePolicy(p);
        const v = evaluatePolicy(valid, c, { now: new Date('2025-01-01T00:00:00Z'), ...(expected ? { expectedReportData: expected } : {}) });
        const failed = v.checks.filter((k) => !k.ok);
        if (v.allowed !== (failed.length === 0)) return false;
        if (v.reasons.length !== failed.length) return false;
        if (c.simulated && !valid.allowSimulated && v.allowed) return false;
        if (c.debug && v.allowed && valid.tees[c.tee]?.allowDebug !== true) return false;
        return true;
      }),
      { numRuns: RUNS },
    );
  });
});
