import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { parseAzureEvidence, parseHclReport, verifyAzureEvidence } from '../../src/attestation/verifiers/azure.js';
import { parseNvidiaReport, verifyNvidiaReport } from '../../src/attestation/verifiers/nvidia.js';
import { NVIDIA_DEVICE_IDENTITY_CA } from '../../src/attestation/roots.js';
import { fingerprint } from '../../src/attestation/certs.js';
import { pinnedTo } from './pinned-policy.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { certs, flip, outcome, typedError, vec } from './helpers.js';
import { bitsToFlip, LONG_RUN } from '../helpers/fuzz.js';

// Bit-flip and property loops run thousands of verifications; on a shared 2-core machine that can take minutes.
vi.setConfig({ testTimeout: 300_000 });

const AZ = 'azure-vtpm/az_snp_genoa_evidence.json';
const AZ_AT = new Date('2026-01-01T00:00:00Z');
const azCerts = () => certs('azure-vtpm/ask_ark_genoa.pem');
const NV = 'nvidia/hopper_report_1.bin';
const nvCerts = () => certs('nvidia/hopper_cert_chain_1.pem');

/** Rebuilds the evidence JSON with one field changed (byte arrays as upstream writes them). */
function azureWith(mutate: (j: { report: number[]; vcek: string; quote: { message: number[]; signature: number[]; pcrs: number[][] } }) => void): Uint8Array {
  const j = JSON.parse(Buffer.from(vec(AZ)).toString('utf8'));
  mutate(j);
  return new Uint8Array(Buffer.from(JSON.stringify(j)));
}

describe('Azure SNP vTPM real vector', () => {
  it('verifies end to end with the claims in PROVENANCE.md', () => {
    const r = verifyAzureEvidence(vec(AZ), { now: AZ_AT, certificates: azCerts() });
    expect(r.raw.hcl).toMatchObject({ version: 2, reportSize: 2436, reportType: 2, hashType: 1 });
    expect(r.raw.hcl.runtimeData.length).toBe(1200);
    expect(Buffer.from(r.raw.hcl.snpReport).equals(Buffer.from(vec('azure-vtpm/az_snp_genoa_report.bin')))).toBe(true);
    expect(createHash('sha256').update(r.raw.hcl.runtimeData).digest('hex')).toBe('b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f');
    const c = r.claims;
    expect(c.tee).toBe('azure-snp');
    expect(c.reportData).toBe('0218488bae25d2509232bf676f1a66a30d7372add909109b36016ef136f2938ca05475f8b46094de6b64270ea35d950f');
    expect(c.measurements.pcr0).toBe('afd689d0bb1c5f36f023fbaf574135f555a28a10c1f6b938d2a25e70c7783338');
    expect(Buffer.from(r.raw.quote.pcrDigest).toString('hex')).toMatch(/^2b30a66d[0-9a-f]+cf8b3399$/);
    expect(r.raw.quote.pcrSelection).toEqual([{ hash: 0x000b, pcrs: Array.from({ length: 24 }, (_, i) => i) }]);
    expect(c.measurement).toBe('f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae');
    expect(c.platform).toMatchObject({
      'vm.secure-boot': 'true',
      'vm.tpm-enabled': 'true',
      'vm.console-enabled': 'true',
      'vm.vmUniqueId': '390CBCF5-6C67-4D9B-98EF-C3F1699CC8FC',
      userData: '00'.repeat(64),
      product: 'Genoa',
    });
    expect(c.debug).toBe(false);
    expect(r.checks.map((k) => k.check).slice(-3)).toEqual(['azure.runtime_data', 'azure.tpm_quote_signature', 'azure.pcr_digest']);
    expect(evaluatePolicy(pinnedTo(c).policy, c, pinnedTo(c).opts).allowed).toBe(true);
  });

  it('rejects a missing ASK/ARK, a root not pinned, and a time after the VCEK validity', async () => {
    await typedError(() => verifyAzureEvidence(vec(AZ), { now: AZ_AT }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyAzureEvidence(vec(AZ), { now: AZ_AT, certificates: azCerts(), trustedRoots: ['11'.repeat(32)] }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyAzureEvidence(vec(AZ), { now: new Date('2032-01-25T00:00:00Z'), certificates: azCerts() }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyAzureEvidence(vec(AZ), { now: AZ_AT, certificates: certs('sev-snp/ask_ark_milan.pem') }), ['ERR_EVIDENCE_CHAIN']);
  });

  it('rejects a changed runtime data (new key), a changed quote, a changed signature and a changed PCR', async () => {
    const hcl = parseHclReport(new Uint8Array(vec('azure-vtpm/az_snp_genoa_hcl_report.bin')));
    const runtimeAt = 32 + 1184 + 20;
    expect(hcl.runtimeData.length).toBe(1200);
    // Every byte of the runtime data (one bit each, rotating) and of the TPM quote message.
    const base = JSON.parse(Buffer.from(vec(AZ)).toString('utf8'));
    const chain = azCerts();
    let cases = 0;
    for (let i = runtimeAt; i < runtimeAt + 1200; i++) {
      const ev = azureWith((j) => (j.report[i] = j.report[i]! ^ (1 << (i % 8))));
      const o = outcome(() => verifyAzureEvidence(ev, { now: AZ_AT, certificates: chain }));
      if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT'].includes(o)) throw new Error(`runtime byte ${i}: ${o}`);
      cases++;
    }
    for (let i = 0; i < base.quote.message.length; i++) {
      for (const bit of bitsToFlip(i)) {
        const ev = azureWith((j) => (j.quote.message[i] = j.quote.message[i]! ^ (1 << bit)));
        const o = outcome(() => verifyAzureEvidence(ev, { now: AZ_AT, certificates: chain }));
        if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT'].includes(o)) throw new Error(`quote byte ${i} bit ${bit}: ${o}`);
        cases++;
      }
    }
    expect(cases).toBe(1200 + base.quote.message.length * (LONG_RUN ? 8 : 1));
    await typedError(() => verifyAzureEvidence(azureWith((j) => (j.quote.signature[7] = j.quote.signature[7]! ^ 1)), { now: AZ_AT, certificates: azCerts() }), ['ERR_EVIDENCE_SIGNATURE']);
    for (const pcr of [0, 7, 23]) {
      await typedError(() => verifyAzureEvidence(azureWith((j) => (j.quote.pcrs[pcr]![0] = j.quote.pcrs[pcr]![0]! ^ 0x80)), { now: AZ_AT, certificates: azCerts() }), ['ERR_EVIDENCE_SIGNATURE']);
    }
    // SNP report inside the HCL report: a few bits across the signed region (the SNP suite flips every bit).
    for (const off of [32, 32 + 0x50, 32 + 0x90, 32 + 0x29f]) {
      const ev = azureWith((j) => (j.report[off] = j.report[off]! ^ 0x10));
      expect(outcome(() => verifyAzureEvidence(ev, { now: AZ_AT, certificates: azCerts() }))).toMatch(/^ERR_EVIDENCE_(SIGNATURE|FORMAT|CHAIN)$/);
    }
  });

  it('reads byte strings given as unpadded base64url as well as arrays', () => {
    const j = JSON.parse(Buffer.from(vec(AZ)).toString('utf8'));
    j.report = Buffer.from(j.report).toString('base64url');
    j.quote.message = Buffer.from(j.quote.message).toString('base64url');
    const ev = parseAzureEvidence(new Uint8Array(Buffer.from(JSON.stringify(j))));
    expect(ev.hcl.snpReport.length).toBe(1184);
    expect(outcome(() => verifyAzureEvidence(new Uint8Array(Buffer.from(JSON.stringify(j))), { now: AZ_AT, certificates: azCerts() }))).toBe('accepted');
  });
});

describe('NVIDIA Hopper SPDM real vector', () => {
  it('the pinned root is the NVIDIA Device Identity CA, and it ends the vector chain', () => {
    expect(fingerprint(certs('nvidia/nvidia_device_identity_ca_root.pem')[0]!)).toBe(NVIDIA_DEVICE_IDENTITY_CA.sha256);
    expect(fingerprint(nvCerts()[4]!)).toBe(NVIDIA_DEVICE_IDENTITY_CA.sha256);
  });

  it('verifies with the claims in PROVENANCE.md', () => {
    const r = verifyNvidiaReport(vec(NV), { certificates: nvCerts() });
    expect(r.raw.blocks.length).toBe(64);
    expect(r.raw.spdmVersion).toBe(0x11);
    const c = r.claims;
    expect(c.reportData).toBe('931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb');
    expect(c.platform.responderNonce).toBe('b4b8a06aaaa35542839388e159d447a5d6f6194998fd86513e2d591ccf640985');
    expect(c.platform.driverVersion).toBe('550.90.07');
    const fwid = 'f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d';
    expect(c.platform.fwid).toBe(fwid);
    expect(c.platform.certFwid).toBe(fwid);
    expect(c.measurements.m2).toBe('8048dfd18fe229bf16eb9d30cca0f11a24dafe6eb731de1462984645a0b189b77c4e4e17de727a5e19e3d07de51da338');
    expect(c.measurements.m1).toBe('00'.repeat(48));
    const opaque = r.raw.opaque.reduce((n, f) => n + 4 + f.value.length, 0);
    expect(opaque).toBe(422);
    expect(r.checks.map((k) => k.check)).toEqual(['nvidia.signature', 'nvidia.chain', 'nvidia.fwid']);
  });

  it('rejects a missing chain, a missing root, another pinned root, and a chain out of order still verifies', async () => {
    const chain = nvCerts();
    await typedError(() => verifyNvidiaReport(vec(NV), { certificates: [] }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyNvidiaReport(vec(NV), { certificates: chain.slice(0, 4) }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyNvidiaReport(vec(NV), { certificates: [chain[0]!, chain[1]!, chain[3]!, chain[4]!] }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifyNvidiaReport(vec(NV), { certificates: chain, trustedRoots: ['22'.repeat(32)] }), ['ERR_EVIDENCE_CHAIN']);
    expect(outcome(() => verifyNvidiaReport(vec(NV), { certificates: [...chain].reverse() }))).toBe('accepted');
    // Validity: the chain starts 2020-10-17 (leaf); before that it must fail.
    await typedError(() => verifyNvidiaReport(vec(NV), { certificates: chain, now: new Date('2020-01-01T00:00:00Z') }), ['ERR_EVIDENCE_CHAIN']);
  });

  // Every byte of the signed request+response (4021 bytes), one bit each (bit = byte mod 8), plus every bit of the signature.
  it('rejects a single-bit change in every signed byte and every signature bit', () => {
    const bytes = vec(NV);
    const chain = nvCerts();
    const signedLength = parseNvidiaReport(bytes).signed.length;
    let cases = 0;
    for (let i = 0; i < bytes.length; i++) {
      const bits = i < signedLength ? [i % 8] : [0, 1, 2, 3, 4, 5, 6, 7];
      for (const bit of bits) {
        const o = outcome(() => verifyNvidiaReport(flip(bytes, i, bit), { certificates: chain }));
        if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_CHAIN'].includes(o)) throw new Error(`byte ${i} bit ${bit}: ${o}`);
        cases++;
      }
    }
    expect(cases).toBe(signedLength + 96 * 8);
  });
});
