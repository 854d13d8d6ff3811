import 'reflect-metadata';
import { createHash, sign, webcrypto, X509Certificate } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { describe, expect, it, vi } from 'vitest';
import { decodeSnpTcb, parseSnpReport, SNP_SIGNED_LENGTH, verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { AMD_ARK_GENOA, AMD_ARK_MILAN } from '../../src/attestation/roots.js';
import { fingerprint } from '../../src/attestation/certs.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { pinnedTo } from './pinned-policy.js';
import { certs, flip, outcome, typedError, vec } from './helpers.js';
import { bitsToFlip, LONG_RUN } from '../helpers/fuzz.js';

// Bit-flip and property loops run thousands of verifications; on a shared 2-core machine that can take minutes.
vi.setConfig({ testTimeout: 300_000 });

const MILAN = { report: 'sev-snp/gsg_milan_report.bin', certs: ['sev-snp/gsg_milan_vcek.der', 'sev-snp/ask_ark_milan.pem'], at: new Date('2022-09-24T01:00:00Z') };
const GENOA = { report: 'sev-snp/azure_genoa_report.bin', certs: ['sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_genoa.pem'], at: new Date('2026-01-01T00:00:00Z') };
const VLEK = { report: 'sev-snp/trustee_milan_vlek_report.bin', certs: ['sev-snp/trustee_milan_vlek.der', 'sev-snp/asvk_ark_milan_vlek.pem'], at: new Date('2025-06-01T00:00:00Z') };
const ALL = { MILAN, GENOA, VLEK };

describe('SEV-SNP real vectors', () => {
  it('the pinned ARKs are the ones in the vector chains (fingerprints computed from the genuine roots)', () => {
    expect(fingerprint(certs('sev-snp/ask_ark_milan.pem')[1]!)).toBe(AMD_ARK_MILAN.sha256);
    expect(fingerprint(certs('sev-snp/ask_ark_genoa.pem')[1]!)).toBe(AMD_ARK_GENOA.sha256);
    expect(fingerprint(certs('sev-snp/asvk_ark_milan_vlek.pem')[1]!)).toBe(AMD_ARK_MILAN.sha256);
  });

  it('Milan (go-sev-guest, VCEK serial 0, debug policy) verifies at 2022-09-24 with the claims in PROVENANCE.md', () => {
    const r = verifySnpReport(vec(MILAN.report), { now: MILAN.at, certificates: certs(...MILAN.certs) });
    const c = r.claims;
    expect(r.raw.version).toBe(2);
    expect(r.raw.guestSvn).toBe(0);
    expect(r.raw.policy).toBe(0xb0000n);
    expect(c.debug).toBe(true);
    expect(r.raw.vmpl).toBe(0);
    expect(r.raw.signatureAlgo).toBe(1);
    expect(r.raw.platformInfo).toBe(1n);
    expect(c.reportData).toBe(`0102030405${'00'.repeat(59)}`);
    expect(c.measurement).toBe('b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01');
    expect(c.measurements.hostData).toBe('00'.repeat(32));
    expect(c.measurements.idKeyDigest).toBe('00'.repeat(48));
    expect(c.measurements.authorKeyDigest).toBe('00'.repeat(48));
    expect(c.platform.reportId).toBe('8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a');
    for (const raw of [r.raw.currentTcb, r.raw.reportedTcb, r.raw.committedTcb, r.raw.launchTcb]) expect(raw).toBe(0x4405000000000002n);
    expect(decodeSnpTcb(r.raw.reportedTcb, 'Milan')).toMatchObject({ bootloader: 2, tee: 0, snp: 5, microcode: 68 });
    expect(c.tcb).toMatchObject({ bootloader: 2, tee: 0, snp: 5, microcode: 68, firmware: '1.49.3' });
    expect(c.platform.chipId).toBe(
      '3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d',
    );
    expect(c.platform.product).toBe('Milan');
    expect(c.platform.signingKey).toBe('VCEK');
    expect(r.checks.map((k) => k.check)).toEqual(['snp.signature', 'snp.chain', 'snp.product', 'snp.tcb_extensions', 'snp.hwid']);
  });

  it('Azure Genoa (report v3) verifies with the claims in PROVENANCE.md', () => {
    const r = verifySnpReport(vec(GENOA.report), { now: GENOA.at, certificates: certs(...GENOA.certs) });
    const c = r.claims;
    expect(r.raw.version).toBe(3);
    expect(r.raw.cpuid).toEqual({ family: 0x19, model: 0x11, stepping: 0x01 });
    expect(r.raw.guestSvn).toBe(65547);
    expect(r.raw.policy).toBe(0x3001fn);
    expect(c.debug).toBe(false);
    expect(r.raw.platformInfo).toBe(0x24n);
    expect(c.measurements.familyId).toBe('01232000000000000000000000000000');
    expect(c.measurements.imageId).toBe('02000000000000000000000000000000');
    expect(c.reportData).toBe(`b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f${'00'.repeat(32)}`);
    expect(c.measurement).toBe('f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae');
    expect(c.measurements.idKeyDigest).toBe('942fd93ebde6ea7a96efadeafc60f1c6b3d10e703b1dafd7555b92f7f3d32d0e006767648cba5b102af3d65756af4177');
    for (const raw of [r.raw.currentTcb, r.raw.reportedTcb, r.raw.committedTcb, r.raw.launchTcb]) expect(raw).toBe(0x541700000000000an);
    expect(c.tcb).toMatchObject({ bootloader: 10, tee: 0, snp: 23, microcode: 84, firmware: '1.55.40' });
    expect(c.platform.chipId).toBe(
      '0506ffba875e939c2729d20c74eb72b4c5ba6bf7ea1faaa640141f12c6d64782fb487f68ce69dcd021e914cc0d9244327bc121f0242d6470903ad1d4aaea4ad1',
    );
    expect(c.platform.product).toBe('Genoa');
  });

  it('Milan VLEK-signed report verifies at 2025-06-01 via the ASVK with the claims in PROVENANCE.md', () => {
    const r = verifySnpReport(vec(VLEK.report), { now: VLEK.at, certificates: certs(...VLEK.certs) });
    const c = r.claims;
    expect(r.raw.version).toBe(3);
    expect(r.raw.cpuid).toEqual({ family: 0x19, model: 0x01, stepping: 0x01 });
    expect(r.raw.flags).toBe(0x4);
    expect(c.platform.signingKey).toBe('VLEK');
    expect(r.raw.vmpl).toBe(1);
    expect(r.raw.policy).toBe(0x30000n);
    expect(r.raw.platformInfo).toBe(0x27n);
    expect(c.platform.chipId).toBe('00'.repeat(64));
    expect(c.reportData.startsWith('819770b7')).toBe(true);
    expect(c.reportData.endsWith('a7bc27ca')).toBe(true);
    expect(c.measurement).toBe('8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0');
    expect(r.raw.reportedTcb).toBe(0xd918000000000004n);
    expect(c.tcb).toMatchObject({ bootloader: 4, tee: 0, snp: 24, microcode: 217 });
    expect(decodeSnpTcb(r.raw.currentTcb, 'Milan').microcode).toBe(220);
    expect(decodeSnpTcb(r.raw.committedTcb, 'Milan').microcode).toBe(219);
    expect(decodeSnpTcb(r.raw.launchTcb, 'Milan').microcode).toBe(219);
    expect(r.checks.map((k) => k.check)).not.toContain('snp.hwid');
  });

  it('the VLEK chain fails after the VLEK expired (2025-12-10) and before it was issued', async () => {
    for (const now of [new Date('2026-01-01T00:00:00Z'), new Date('2025-12-10T22:14:22Z'), new Date('2024-12-10T22:14:20Z')]) {
      const e = await typedError(() => verifySnpReport(vec(VLEK.report), { now, certificates: certs(...VLEK.certs) }), ['ERR_EVIDENCE_CHAIN']);
      expect(e.message).toMatch(/not valid at/);
    }
  });

  it('each vector fails after its VCEK validity and before it', async () => {
    await typedError(() => verifySnpReport(vec(MILAN.report), { now: new Date('2029-09-25T00:00:00Z'), certificates: certs(...MILAN.certs) }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifySnpReport(vec(MILAN.report), { now: new Date('2022-09-23T00:00:00Z'), certificates: certs(...MILAN.certs) }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifySnpReport(vec(GENOA.report), { now: new Date('2032-01-25T00:00:00Z'), certificates: certs(...GENOA.certs) }), ['ERR_EVIDENCE_CHAIN']);
  });

  it('rejects a missing VCEK, a missing ASK/ARK, the other product\'s chain and the wrong VCEK', async () => {
    const now = MILAN.at;
    let e = await typedError(() => verifySnpReport(vec(MILAN.report), { now, certificates: certs('sev-snp/ask_ark_milan.pem') }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/no VCEK certificate was given.*kdsintf\.amd\.com/);
    e = await typedError(() => verifySnpReport(vec(MILAN.report), { now, certificates: certs('sev-snp/gsg_milan_vcek.der') }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/no issuer found/);
    // ARK only: the ASK is missing from the path.
    e = await typedError(() => verifySnpReport(vec(MILAN.report), { now, certificates: [...certs('sev-snp/gsg_milan_vcek.der'), certs('sev-snp/ask_ark_milan.pem')[1]!] }), ['ERR_EVIDENCE_CHAIN']);
    await typedError(() => verifySnpReport(vec(MILAN.report), { now, certificates: certs('sev-snp/gsg_milan_vcek.der', 'sev-snp/ask_ark_genoa.pem') }), ['ERR_EVIDENCE_CHAIN']);
    // Genoa's VCEK on the Milan report: the signature does not verify.
    await typedError(() => verifySnpReport(vec(MILAN.report), { now, certificates: certs('sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_milan.pem') }), ['ERR_EVIDENCE_SIGNATURE']);
    // ASVK instead of ASK for a VCEK-signed report.
    await typedError(() => verifySnpReport(vec(MILAN.report), { now, certificates: certs('sev-snp/gsg_milan_vcek.der', 'sev-snp/asvk_ark_milan_vlek.pem') }), ['ERR_EVIDENCE_CHAIN']);
  });

  it('each vector: rejected when its ARK is not pinned, without its ASK/ASVK, and without its VCEK/VLEK', async () => {
    for (const v of Object.values(ALL)) {
      const [leaf, chain] = v.certs;
      const other = v === GENOA ? AMD_ARK_MILAN.sha256 : AMD_ARK_GENOA.sha256;
      const e = await typedError(() => verifySnpReport(vec(v.report), { now: v.at, certificates: certs(...v.certs), trustedRoots: [other] }), ['ERR_EVIDENCE_CHAIN']);
      expect(e.message).toMatch(/not a pinned root/);
      const arkOnly = [...certs(leaf!), certs(chain!)[1]!];
      await typedError(() => verifySnpReport(vec(v.report), { now: v.at, certificates: arkOnly }), ['ERR_EVIDENCE_CHAIN']);
      await typedError(() => verifySnpReport(vec(v.report), { now: v.at, certificates: certs(chain!) }), ['ERR_EVIDENCE_CHAIN']);
    }
  });

  // An attacker's look-alike chain: own "ARK-Milan"/"SEV-Milan", own P-384 "SEV-VCEK" re-signing the real report.
  async function forge(ext: { tcb?: [number, number, number, number]; hwid?: Uint8Array | null; product?: string } = {}) {
    px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
    // ECDSA rather than AMD's RSA-PSS: key generation is fast, and the verifier's trust comes from pinning, not the algorithm.
    const alg = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
    const arkKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const askKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const vcekKeys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const dn = (cn: string) => `CN=${cn}, O=Advanced Micro Devices, L=Santa Clara, ST=CA, C=US, OU=Engineering`;
    const ca = [new px509.BasicConstraintsExtension(true, undefined, true)];
    const notBefore = new Date('2020-01-01T00:00:00Z');
    const notAfter = new Date('2040-01-01T00:00:00Z');
    const report = vec(MILAN.report);
    const [bl, tee, snp, ucode] = ext.tcb ?? [2, 0, 5, 68];
    const int = (n: number) => new Uint8Array([2, 1, n]);
    const amd = (suffix: string, value: Uint8Array) => new px509.Extension(`1.3.6.1.4.1.3704.1.${suffix}`, false, value);
    const product = ext.product ?? 'Milan-B0';
    const vcekExt = [
      amd('2', new Uint8Array([0x16, product.length, ...Buffer.from(product)])),
      amd('3.1', int(bl)),
      amd('3.2', int(tee)),
      amd('3.3', int(snp)),
      amd('3.8', int(ucode)),
    ];
    const hwid = ext.hwid === undefined ? report.subarray(0x1a0, 0x1e0) : ext.hwid;
    if (hwid) vcekExt.push(amd('4', hwid));
    const ark = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: dn('ARK-Milan'), notBefore, notAfter, keys: arkKeys, signingAlgorithm: alg, extensions: ca });
    const ask = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: dn('SEV-Milan'), issuer: ark.subject, notBefore, notAfter, publicKey: askKeys.publicKey, signingKey: arkKeys.privateKey, signingAlgorithm: alg, extensions: ca });
    const vcek = await px509.X509CertificateGenerator.create({ serialNumber: '03', subject: dn('SEV-VCEK'), issuer: ask.subject, notBefore, notAfter, publicKey: vcekKeys.publicKey, signingKey: askKeys.privateKey, signingAlgorithm: alg, extensions: vcekExt });
    const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', vcekKeys.privateKey));
    const sig = sign('sha384', report.subarray(0, SNP_SIGNED_LENGTH), { key: der, format: 'der', type: 'pkcs8', dsaEncoding: 'ieee-p1363' });
    const forged = report.slice();
    forged.fill(0, 0x2a0, 0x2a0 + 144);
    forged.set(Buffer.from(sig.subarray(0, 48)).reverse(), 0x2a0);
    forged.set(Buffer.from(sig.subarray(48)).reverse(), 0x2a0 + 72);
    const chain = [vcek, ask, ark].map((c) => new X509Certificate(Buffer.from(c.rawData)));
    return { forged, chain, arkFingerprint: fingerprint(chain[2]!) };
  }

  it('rejects a report and chain forged under a look-alike ARK-Milan root', async () => {
    const { forged, chain } = await forge();
    const e = await typedError(() => verifySnpReport(forged, { now: MILAN.at, certificates: chain }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/ARK-Milan.*not a pinned root/);
  });

  it('with a test root pinned, checks the VCEK TCB extensions, hwID and productName against the report', async () => {
    const ok = await forge();
    // Positive control: the same construction passes when its root is pinned, so the failures below are the checks'.
    expect(outcome(() => verifySnpReport(ok.forged, { now: MILAN.at, certificates: ok.chain, trustedRoots: [ok.arkFingerprint] }))).toBe('accepted');
    const cases: [Parameters<typeof forge>[0], RegExp][] = [
      [{ tcb: [3, 0, 5, 68] }, /blSPL: VCEK says 3, REPORTED_TCB says 2/],
      [{ tcb: [2, 0, 5, 69] }, /ucodeSPL: VCEK says 69/],
      [{ hwid: new Uint8Array(64).fill(7) }, /belongs to another chip/],
      [{ hwid: null }, /lacks the hwID extension/],
      [{ product: 'Genoa-B1' }, /productName "Genoa-B1" does not match the Milan chain/],
    ];
    for (const [ext, message] of cases) {
      const f = await forge(ext);
      const e = await typedError(() => verifySnpReport(f.forged, { now: MILAN.at, certificates: f.chain, trustedRoots: [f.arkFingerprint] }), ['ERR_EVIDENCE_CHAIN']);
      expect(e.message).toMatch(message);
    }
  });

  it('rejects debug-mode evidence under a policy pinning its measurements, and accepts the non-debug Genoa report', () => {
    const milan = verifySnpReport(vec(MILAN.report), { now: MILAN.at, certificates: certs(...MILAN.certs) });
    const v = evaluatePolicy(pinnedTo(milan.claims).policy, milan.claims, pinnedTo(milan.claims).opts);
    expect(v.allowed).toBe(false);
    expect(v.reasons.join('\n')).toMatch(/policy\.debug: evidence is from a debug-mode TEE/);
    const genoa = verifySnpReport(vec(GENOA.report), { now: GENOA.at, certificates: certs(...GENOA.certs) });
    expect(evaluatePolicy(pinnedTo(genoa.claims).policy, genoa.claims, pinnedTo(genoa.claims).opts)).toMatchObject({ allowed: true, reasons: [] });
  });

  // The signed region (0x000..0x29F) and the signature (R, S): every byte, one bit each (all eight
  // bits under `npm run fuzz`).
  for (const [name, v] of Object.entries(ALL)) {
    it(`${name}: single-bit changes at every byte of the signed region and the signature are rejected (${LONG_RUN ? 'all bits' : 'one bit per byte'})`, () => {
      const report = vec(v.report);
      const chain = certs(...v.certs);
      expect(outcome(() => verifySnpReport(report, { now: v.at, certificates: chain }))).toBe('accepted');
      const outcomes = new Map<string, number>();
      let cases = 0;
      for (let byte = 0; byte < SNP_SIGNED_LENGTH + 144; byte++) {
        for (const bit of bitsToFlip(byte)) {
          const o = outcome(() => verifySnpReport(flip(report, byte, bit), { now: v.at, certificates: chain }));
          outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
          if (o === 'accepted' || o.startsWith('untyped')) throw new Error(`bit ${bit} of byte 0x${byte.toString(16)}: ${o}`);
          cases++;
        }
      }
      expect(cases).toBe((SNP_SIGNED_LENGTH + 144) * (LONG_RUN ? 8 : 1));
      expect([...outcomes.keys()].every((k) => ['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_CHAIN'].includes(k))).toBe(true);
    });
  }

  it('parses every report to the documented offsets (bytes are copies, not views)', () => {
    const bytes = vec(GENOA.report);
    const r = parseSnpReport(bytes);
    expect(createHash('sha256').update(r.signed).digest('hex')).toBe(createHash('sha256').update(bytes.subarray(0, 0x2a0)).digest('hex'));
    bytes[0x90] = bytes[0x90]! ^ 0xff;
    expect(r.measurement[0]).not.toBe(bytes[0x90]);
  });
});

describe('SEV-SNP parser without vectors', () => {
  it('refuses wrong sizes, versions and algorithms with ERR_EVIDENCE_FORMAT', async () => {
    await typedError(() => parseSnpReport(new Uint8Array(1183)), ['ERR_EVIDENCE_FORMAT']);
    const r = new Uint8Array(1184);
    await typedError(() => parseSnpReport(r), ['ERR_EVIDENCE_FORMAT']); // version 0
    r[0] = 2;
    await typedError(() => parseSnpReport(r), ['ERR_EVIDENCE_FORMAT']); // SIGNATURE_ALGO 0
    r[0x34] = 1;
    expect(parseSnpReport(r).version).toBe(2);
    // Unsigned report (SIGNING_KEY = 7) cannot verify.
    r[0x48] = 7 << 2;
    expect(outcome(() => verifySnpReport(r, { certificates: [] }))).toBe('ERR_EVIDENCE_SIGNATURE');
  });

  it('decodes TCB_VERSION per product (Turin has FMC first)', () => {
    expect(decodeSnpTcb(0x541700000000000an, 'Genoa')).toMatchObject({ bootloader: 10, tee: 0, snp: 23, microcode: 84 });
    expect(decodeSnpTcb(0x4800000000180301n, 'Turin')).toMatchObject({ fmc: 1, bootloader: 3, tee: 0x18, snp: 0, microcode: 0x48 });
  });
});

