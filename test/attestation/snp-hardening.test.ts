import 'reflect-metadata';
import { sign, webcrypto, X509Certificate } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { EvidenceRevokedError, SealedTensorsError } from '../../src/errors.js';
import { parseSnpReport, snpReservedRanges, SNP_SIGNED_LENGTH, verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { verifyAzureEvidence } from '../../src/attestation/verifiers/azure.js';
import { certificateSubject } from '../../src/attestation/der.js';
import { fingerprint } from '../../src/attestation/certs.js';
import { verifyEvidence } from '../../src/attestation/verify.js';
import { certs, outcome, typedError, vec } from './helpers.js';
import { fuzzRuns } from '../helpers/fuzz.js';

vi.setConfig({ testTimeout: 120_000 });

const MILAN = { report: 'sev-snp/gsg_milan_report.bin', certs: ['sev-snp/gsg_milan_vcek.der', 'sev-snp/ask_ark_milan.pem'], at: new Date('2022-09-24T01:00:00Z') };
const GENOA = { report: 'sev-snp/azure_genoa_report.bin', certs: ['sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_genoa.pem'], at: new Date('2026-01-01T00:00:00Z') };
const VLEK = { report: 'sev-snp/trustee_milan_vlek_report.bin', certs: ['sev-snp/trustee_milan_vlek.der', 'sev-snp/asvk_ark_milan_vlek.pem'], at: new Date('2025-06-01T00:00:00Z') };

describe('SEV-SNP reserved bytes', () => {
  for (const [name, v] of Object.entries({ MILAN, GENOA, VLEK })) {
    it(`${name}: a non-zero byte in any reserved range is refused by the parser, before any signature check`, async () => {
      const bytes = vec(v.report);
      const version = parseSnpReport(bytes).version;
      expect(outcome(() => verifySnpReport(bytes, { now: v.at, certificates: certs(...v.certs) }))).toBe('accepted');
      for (const [from, to] of snpReservedRanges(version)) {
        for (const at of new Set([from, to - 1])) {
          const bad = bytes.slice();
          bad[at] = 0x01;
          const e = await typedError(() => parseSnpReport(bad), ['ERR_EVIDENCE_FORMAT']);
          expect(e.message).toMatch(new RegExp(`reserved byte at offset 0x${at.toString(16)} is 0x1, must be zero`));
          // The verifier reports the reserved byte, not a signature failure: the check runs first.
          const ev = await typedError(() => verifySnpReport(bad, { now: v.at, certificates: certs(...v.certs) }), ['ERR_EVIDENCE_FORMAT']);
          expect(ev.message).toMatch(/reserved byte/);
        }
      }
    });
  }

  it('the bytes after R and S (outside the signature) are among them: a set byte there is refused, not ignored', async () => {
    const bytes = vec(GENOA.report);
    const bad = bytes.slice();
    bad[SNP_SIGNED_LENGTH + 144 + 100] = 0xff;
    const e = await typedError(() => verifySnpReport(bad, { now: GENOA.at, certificates: certs(...GENOA.certs) }), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/reserved byte at offset 0x394/);
    // Azure evidence carries the same report inside its HCL report.
    const hcl = vec('azure-vtpm/az_snp_genoa_hcl_report.bin');
    expect(Buffer.from(hcl.subarray(32, 32 + 1184)).equals(Buffer.from(bytes))).toBe(true);
  });

  it('version 2 reserves the CPUID bytes; versions 3 to 5 use them', () => {
    expect(snpReservedRanges(2)).toContainEqual([0x188, 0x1a0]);
    expect(snpReservedRanges(3)).toContainEqual([0x18b, 0x1a0]);
    expect(snpReservedRanges(5)).toContainEqual([0x208, SNP_SIGNED_LENGTH]);
    expect(snpReservedRanges(4)).toContainEqual([0x1f8, SNP_SIGNED_LENGTH]);
  });
});

// AMD's chain as KDS serves it (RSA-PSS ARK and ASK, P-384 VCEK), under a test ARK the verifier is
// told to trust, re-signing the real Milan report; the CRLs are made as AMD makes its KDS CRL.
const PSS = { name: 'RSA-PSS', hash: 'SHA-384', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048, saltLength: 48 };
async function amdChain() {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const gen = async (a: object) => (await webcrypto.subtle.generateKey(a as Parameters<typeof webcrypto.subtle.generateKey>[0] & { name: 'RSA-PSS' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const [arkK, askK, otherK] = [await gen(PSS), await gen(PSS), await gen(PSS)];
  const vcekK = await gen({ name: 'ECDSA', namedCurve: 'P-384' });
  const dn = (cn: string) => `CN=${cn}, O=Advanced Micro Devices, L=Santa Clara, ST=CA, C=US, OU=Engineering`;
  const ca = [new px509.BasicConstraintsExtension(true, undefined, true)];
  const validity = { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2040-01-01T00:00:00Z'), signingAlgorithm: PSS };
  const report = vec(MILAN.report);
  const amd = (suffix: string, value: Uint8Array) => new px509.Extension(`1.3.6.1.4.1.3704.1.${suffix}`, false, value);
  const int = (n: number) => new Uint8Array([2, 1, n]);
  const vcekExt = [amd('2', new Uint8Array([0x16, 8, ...Buffer.from('Milan-B0')])), amd('3.1', int(2)), amd('3.2', int(0)), amd('3.3', int(5)), amd('3.8', int(68)), amd('4', report.subarray(0x1a0, 0x1e0))];
  const ark = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '0a', name: dn('ARK-Milan'), keys: arkK, extensions: ca, ...validity });
  const ask = await px509.X509CertificateGenerator.create({ serialNumber: '0b', subject: dn('SEV-Milan'), issuer: ark.subject, publicKey: askK.publicKey, signingKey: arkK.privateKey, extensions: ca, ...validity });
  const vcek = await px509.X509CertificateGenerator.create({ serialNumber: '0c', subject: dn('SEV-VCEK'), issuer: ask.subject, publicKey: vcekK.publicKey, signingKey: askK.privateKey, extensions: vcekExt, ...validity });
  const pk = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', vcekK.privateKey));
  const sig = sign('sha384', report.subarray(0, SNP_SIGNED_LENGTH), { key: pk, format: 'der', type: 'pkcs8', dsaEncoding: 'ieee-p1363' });
  const signed = report.slice();
  signed.fill(0, 0x2a0, 0x2a0 + 144);
  signed.set(Buffer.from(sig.subarray(0, 48)).reverse(), 0x2a0);
  signed.set(Buffer.from(sig.subarray(48)).reverse(), 0x2a0 + 72);
  const chain = [vcek, ask, ark].map((c) => new X509Certificate(Buffer.from(c.rawData)));
  const crl = async (by: 'ark' | 'ask', serials: string[], o: { key?: 'other'; nextUpdate?: Date | null; issuer?: string } = {}) =>
    new Uint8Array(
      (
        await px509.X509CrlGenerator.create({
          issuer: o.issuer ?? (by === 'ark' ? ark.subject : ask.subject),
          thisUpdate: new Date('2022-09-01T00:00:00Z'),
          ...(o.nextUpdate === null ? {} : { nextUpdate: o.nextUpdate ?? new Date('2022-10-01T00:00:00Z') }),
          entries: serials.map((serialNumber) => ({ serialNumber, revocationDate: new Date('2022-09-02T00:00:00Z') })),
          signingKey: o.key === 'other' ? otherK.privateKey : by === 'ark' ? arkK.privateKey : askK.privateKey,
          signingAlgorithm: PSS,
        })
      ).rawData,
    );
  return { report: signed, chain, trustedRoots: [fingerprint(chain[2]!)], crl, otherKey: otherK.privateKey };
}

describe('SEV-SNP CRLs (ARK and ASK)', () => {
  it('clean CRLs from the ARK and the ASK are checked and reported; a revoked ASK or VCEK throws EvidenceRevokedError', async () => {
    const t = await amdChain();
    const opts = { now: MILAN.at, certificates: t.chain, trustedRoots: t.trustedRoots };
    const plain = verifySnpReport(t.report, opts);
    expect(plain.claims.platform.crlChecked).toBeUndefined();
    const ok = verifySnpReport(t.report, { ...opts, crls: [await t.crl('ark', ['01', '02']), await t.crl('ask', ['0d'])] });
    expect(ok.checks.filter((k) => k.check === 'snp.crl').map((k) => k.detail)).toEqual([
      expect.stringMatching(/CRL from ARK-Milan .*1 certificate\(s\) of the chain checked, none revoked/),
      expect.stringMatching(/CRL from SEV-Milan .*1 certificate\(s\) of the chain checked, none revoked/),
    ]);
    expect(ok.claims.platform.crlChecked).toBe('SEV-VCEK,SEV-Milan');

    let e = await typedError(async () => verifySnpReport(t.report, { ...opts, crls: [await t.crl('ark', ['01', '0b'])] }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
    expect(e.message).toMatch(/"SEV-Milan" \(serial 0B\) is revoked by "ARK-Milan"/);
    e = await typedError(async () => verifySnpReport(t.report, { ...opts, crls: [await t.crl('ask', ['0c'])] }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
    expect(e.message).toMatch(/"SEV-VCEK" \(serial 0C\) is revoked/);
    // The entry point a broker calls passes the CRLs through too.
    e = await typedError(async () => verifyEvidence('snp', t.report, { ...opts, crls: [await t.crl('ask', ['0c'])] }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
  });

  it('a CRL not signed by its issuer, out of date, or from outside the chain is refused', async () => {
    const t = await amdChain();
    const opts = { now: MILAN.at, certificates: t.chain, trustedRoots: t.trustedRoots };
    let e = await typedError(async () => verifySnpReport(t.report, { ...opts, crls: [await t.crl('ark', [], { key: 'other' })] }), ['ERR_EVIDENCE_SIGNATURE']);
    expect(e.message).toMatch(/bad signature/);
    e = await typedError(async () => verifySnpReport(t.report, { ...opts, crls: [await t.crl('ark', [], { nextUpdate: new Date('2022-09-10T00:00:00Z') })] }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/fetch a current CRL/);
    // No nextUpdate: nothing says when it stops being current, so it never is.
    e = await typedError(async () => verifySnpReport(t.report, { ...opts, crls: [await t.crl('ark', [], { nextUpdate: null })] }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/no next update/);
    e = await typedError(async () => verifySnpReport(t.report, { ...opts, crls: [await t.crl('ark', [], { issuer: 'CN=ARK-Genoa' })] }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/issuer is not a certificate of the verified chain/);
  });

  it(`mutated AMD CRLs (${fuzzRuns(100)} bit flips and truncations) are refused with typed errors only`, async () => {
    const t = await amdChain();
    const opts = { now: MILAN.at, certificates: t.chain, trustedRoots: t.trustedRoots };
    const clean = await t.crl('ark', ['01', '02']);
    expect(outcome(() => verifySnpReport(t.report, { ...opts, crls: [clean] }))).toBe('accepted');
    const mutated = fc.oneof(
      fc.tuple(fc.nat({ max: clean.length - 1 }), fc.nat({ max: 7 })).map(([at, bit]) => {
        const c = clean.slice();
        c[at]! ^= 1 << bit;
        return c;
      }),
      fc.nat({ max: clean.length - 1 }).map((n) => clean.slice(0, n)),
    );
    fc.assert(
      fc.property(mutated, (m) => {
        try {
          verifySnpReport(t.report, { ...opts, crls: [m] });
        } catch (err) {
          if (err instanceof SealedTensorsError && ['ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_CHAIN'].includes(err.code)) return;
          throw err;
        }
        throw new Error('a mutated CRL was accepted');
      }),
      { numRuns: fuzzRuns(100) },
    );
  });

  it("real chain: a CRL naming the genuine ARK-Milan but signed by another key fails the ARK's RSA-PSS check", async () => {
    const t = await amdChain();
    const real = certs(...MILAN.certs);
    const arkSubject = certificateSubject(real[2]!.raw, 'ARK');
    const forged = new Uint8Array(
      (
        await px509.X509CrlGenerator.create({
          issuer: new px509.Name(arkSubject),
          thisUpdate: new Date('2022-09-01T00:00:00Z'),
          nextUpdate: new Date('2022-10-01T00:00:00Z'),
          entries: [],
          signingKey: t.otherKey,
          signingAlgorithm: PSS,
        })
      ).rawData,
    );
    const e = await typedError(() => verifySnpReport(vec(MILAN.report), { now: MILAN.at, certificates: real, crls: [forged] }), ['ERR_EVIDENCE_SIGNATURE']);
    expect(e.message).toMatch(/ARK-Milan.*bad signature/);
    // Azure evidence takes the same CRLs for its SNP chain.
    const az = vec('azure-vtpm/az_snp_genoa_evidence.json');
    expect(outcome(() => verifyAzureEvidence(az, { now: GENOA.at, certificates: certs('azure-vtpm/ask_ark_genoa.pem'), crls: [forged] }))).toBe('ERR_EVIDENCE_CHAIN');
  });

  it('exposes VMPL and the decoded current, committed and launch TCBs as claims', () => {
    const c = verifySnpReport(vec(VLEK.report), { now: VLEK.at, certificates: certs(...VLEK.certs) }).claims;
    expect(c.vmpl).toBe(1);
    expect(c.tcb).toMatchObject({ microcode: 217, currentMicrocode: 220, committedMicrocode: 219, launchMicrocode: 219, currentBootloader: 4, committedSnp: 24 });
    expect(verifySnpReport(vec(GENOA.report), { now: GENOA.at, certificates: certs(...GENOA.certs) }).claims.vmpl).toBe(0);
  });
});
