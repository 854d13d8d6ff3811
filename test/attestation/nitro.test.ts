import 'reflect-metadata';
import { sign, webcrypto, X509Certificate } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { encode as cborEncode } from 'cborg';
import { describe, expect, it, vi } from 'vitest';
import { parseNitroDocument, verifyNitroDocument } from '../../src/attestation/verifiers/nitro.js';
import { AWS_NITRO_ROOT_G1 } from '../../src/attestation/roots.js';
import { fingerprint } from '../../src/attestation/certs.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { pinnedTo } from './pinned-policy.js';
import { certs, flip, outcome, typedError, vec } from './helpers.js';

// Bit-flip and property loops run thousands of verifications; on a shared 2-core machine that can take minutes.
vi.setConfig({ testTimeout: 300_000 });

const D1 = { file: 'nitro/evervault_doc_20221013.cose.bin', at: new Date(1665651482136), from: new Date('2022-10-13T08:57:59Z'), to: new Date('2022-10-13T11:58:02Z') };
const D2 = { file: 'nitro/evervault_ga_doc_20230918.cose.bin', at: new Date(1695049410860), from: new Date('2023-09-18T14:37:09Z'), to: new Date('2023-09-18T17:37:12Z') };

/** A Nitro-shaped document signed by a chain the test makes: root -> intermediate -> leaf (P-384). */
async function forgeDocument(opts: { dropIntermediate?: boolean } = {}) {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
  const gen = async () => (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const [rootK, midK, leafK] = [await gen(), await gen(), await gen()];
  const ca = [new px509.BasicConstraintsExtension(true, undefined, true)];
  const notBefore = new Date('2020-01-01T00:00:00Z');
  const notAfter = new Date('2040-01-01T00:00:00Z');
  const root = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=aws.nitro-enclaves, O=Amazon, OU=AWS, C=US', notBefore, notAfter, keys: rootK, signingAlgorithm: alg, extensions: ca });
  const mid = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: 'CN=zonal.nitro-enclaves', issuer: root.subject, notBefore, notAfter, publicKey: midK.publicKey, signingKey: rootK.privateKey, signingAlgorithm: alg, extensions: ca });
  const leaf = await px509.X509CertificateGenerator.create({ serialNumber: '03', subject: 'CN=i-forged-enc', issuer: mid.subject, notBefore, notAfter, publicKey: leafK.publicKey, signingKey: midK.privateKey, signingAlgorithm: alg });
  const pcrs = new Map<number, Uint8Array>();
  for (let i = 0; i < 16; i++) pcrs.set(i, new Uint8Array(48).fill(i));
  const raw = (c: px509.X509Certificate) => new Uint8Array(c.rawData);
  const payload = cborEncode(
    new Map<string, unknown>([
      ['module_id', 'i-forged-enc'],
      ['digest', 'SHA384'],
      ['timestamp', Date.parse('2030-01-01T00:00:00Z')],
      ['pcrs', pcrs],
      ['certificate', raw(leaf)],
      ['cabundle', opts.dropIntermediate ? [raw(root)] : [raw(root), raw(mid)]],
      ['public_key', null],
      ['user_data', new Uint8Array(64).fill(0xab)],
      ['nonce', null],
    ]),
  );
  const protectedHeader = cborEncode(new Map([[1, -35]]));
  const tbs = cborEncode(['Signature1', protectedHeader, new Uint8Array(0), payload]);
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafK.privateKey));
  const signature = sign('sha384', tbs, { key: der, format: 'der', type: 'pkcs8', dsaEncoding: 'ieee-p1363' });
  const doc = cborEncode([protectedHeader, new Map(), payload, new Uint8Array(signature)]);
  return { doc, rootFingerprint: fingerprint(new X509Certificate(Buffer.from(root.rawData))) };
}

describe('Nitro documents made by the test (chain logic)', () => {
  it('a well-formed document under a look-alike root is rejected; pinned, it verifies; without its intermediate it does not', async () => {
    const f = await forgeDocument();
    const now = new Date('2030-01-01T00:00:00Z');
    const e = await typedError(() => verifyNitroDocument(f.doc, { now }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/aws\.nitro-enclaves.*not a pinned root/);
    const ok = verifyNitroDocument(f.doc, { now, trustedRoots: [f.rootFingerprint] });
    expect(ok.claims.reportData).toBe('ab'.repeat(64));
    expect(ok.claims.measurements.pcr15).toBe('0f'.repeat(48));
    const g = await forgeDocument({ dropIntermediate: true });
    const e2 = await typedError(() => verifyNitroDocument(g.doc, { now, trustedRoots: [g.rootFingerprint] }), ['ERR_EVIDENCE_CHAIN']);
    expect(e2.message).toMatch(/no issuer found/);
  });
});

describe('Nitro timestamps a Date cannot hold', () => {
  // The parser checks no signature, so an unsigned document with placeholder bytes reaches the check.
  const docAt = (timestamp: number) =>
    cborEncode([
      cborEncode(new Map([[1, -35]])),
      new Map(),
      cborEncode(new Map<string, unknown>([['module_id', 'i-x'], ['digest', 'SHA384'], ['timestamp', timestamp], ['pcrs', new Map([[0, new Uint8Array(48)]])], ['certificate', new Uint8Array(8)], ['cabundle', [new Uint8Array(8)]]])),
      new Uint8Array(96),
    ]);

  it('above 8.64e15 ms is ERR_EVIDENCE_FORMAT from the parser; the last representable instant parses', async () => {
    expect(parseNitroDocument(docAt(8.64e15)).timestamp).toBe(8.64e15);
    for (const ts of [8.64e15 + 1, Number.MAX_SAFE_INTEGER]) {
      const e = await typedError(() => parseNitroDocument(docAt(ts)), ['ERR_EVIDENCE_FORMAT']);
      expect(e.message).toMatch(/timestamp/);
    }
  });
});

describe('Nitro real vectors', () => {
  it('the pinned root is AWS_NitroEnclaves_Root-G1 and is cabundle[0] of both documents', () => {
    expect(fingerprint(certs('nitro/aws_nitro_enclaves_root_g1.pem')[0]!)).toBe(AWS_NITRO_ROOT_G1.sha256);
    for (const d of [D1, D2]) {
      const doc = parseNitroDocument(vec(d.file));
      expect(fingerprint(new X509Certificate(Buffer.from(doc.cabundle[0]!)))).toBe(AWS_NITRO_ROOT_G1.sha256);
    }
  });

  it('production document (2022-10-13) verifies at its timestamp with the claims in PROVENANCE.md', () => {
    const r = verifyNitroDocument(vec(D1.file), { now: D1.at });
    const c = r.claims;
    expect(c.platform.moduleId).toBe('i-020b6af9246d90e92-enc0183d09086c24190');
    expect(r.raw.publicKey).toBeUndefined();
    expect(r.raw.userData).toBeUndefined();
    expect(r.raw.nonce!.length).toBe(256);
    expect(c.platform.nonce).toMatch(/^cb3dc2eb76c0c134[0-9a-f]+a64eb59db3$/);
    expect(c.reportData).toBe(c.platform.nonce);
    expect(c.measurement).toBe('f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b');
    expect(c.measurements).toMatchObject({
      pcr0: 'f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b',
      pcr1: 'bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f',
      pcr2: 'd8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a',
      pcr3: '4a9329d69c836267b18abbf9f4a38889124490453419e426818626348d21f989dc930b1562682a9082887454e53425aa',
      pcr4: '1f442c86d494a88185642086d904ed89f62fb66ee9997d7b1a4f040faab3bba4244c768a584e5778195b3afc715637c6',
      pcr8: '8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a79157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb',
    });
    expect(r.raw.cabundle.length).toBe(4);
    expect(c.debug).toBe(false);
    expect(c.issuedAt).toBe('2022-10-13T08:58:02.136Z');
    expect(r.checks.find((k) => k.check === 'nitro.chain')!.detail).toMatch(/us-east-1/);
    expect(evaluatePolicy(pinnedTo(c).policy, c, pinnedTo(c).opts).allowed).toBe(true);
  });

  it('debug-mode document (2023-09-18) verifies with the claims in PROVENANCE.md and is refused by a policy pinning its measurements', () => {
    const r = verifyNitroDocument(vec(D2.file), { now: D2.at });
    const c = r.claims;
    expect(c.platform.moduleId).toBe('i-0918f6c55e3b61d89-enc018aa8b8e2285d13');
    for (const i of [0, 1, 2, 8]) expect(c.measurements[`pcr${i}`]).toBe('00'.repeat(48));
    expect(c.measurements.pcr3).toBe('4a9329d69c836267b18abbf9f4a38889124490453419e426818626348d21f989dc930b1562682a9082887454e53425aa');
    expect(c.measurements.pcr4).toBe('d0531b1400dd43288c82c226c16bf647c637dd5e4d9b4f7a8aaadc6d6760b854a06c7008cca0d15ca80094dd33a65065');
    expect(r.raw.userData!.length).toBe(91);
    expect(c.platform.userData).toMatch(/^3059301306072a8648ce3d0201[0-9a-f]+9908b2acb$/);
    expect(c.platform.nonce).toMatch(/^bba6bfd51866d2e4[0-9a-f]+4119c1f21$/);
    expect(c.issuedAt).toBe('2023-09-18T15:03:30.860Z');
    expect(c.debug).toBe(true);
    const v = evaluatePolicy(pinnedTo(c).policy, c, pinnedTo(c).opts);
    expect(v.allowed).toBe(false);
    // Its PCR0..2 and PCR8 are zeros, which pin no image: that denies too.
    expect(v.reasons).toEqual([expect.stringMatching(/^policy\.debug: /), expect.stringMatching(/^policy\.measurements: .*identifies the software/)]);
  });

  it('verifies inside the ~3-hour window and fails just outside it, and with another pinned root', async () => {
    for (const d of [D1, D2]) {
      expect(outcome(() => verifyNitroDocument(vec(d.file), { now: new Date(d.from.getTime() + 1000) }))).toBe('accepted');
      expect(outcome(() => verifyNitroDocument(vec(d.file), { now: new Date(d.to.getTime() - 1000) }))).toBe('accepted');
      const before = await typedError(() => verifyNitroDocument(vec(d.file), { now: new Date(d.from.getTime() - 2000) }), ['ERR_EVIDENCE_CHAIN']);
      expect(before.message).toMatch(/not valid at/);
      await typedError(() => verifyNitroDocument(vec(d.file), { now: new Date(d.to.getTime() + 2000) }), ['ERR_EVIDENCE_CHAIN']);
      await typedError(() => verifyNitroDocument(vec(d.file)), ['ERR_EVIDENCE_CHAIN']); // today: long expired
      await typedError(() => verifyNitroDocument(vec(d.file), { now: d.at, trustedRoots: ['00'.repeat(32)] }), ['ERR_EVIDENCE_CHAIN']);
    }
  });

  it('policy maxAgeSeconds uses the document timestamp', () => {
    const c = verifyNitroDocument(vec(D1.file), { now: D1.at }).claims;
    const { policy: p, opts } = pinnedTo(c, { maxAgeSeconds: 300 });
    expect(evaluatePolicy(p, c, { ...opts, now: new Date(D1.at.getTime() + 299_000) }).allowed).toBe(true);
    expect(evaluatePolicy(p, c, { ...opts, now: new Date(D1.at.getTime() + 301_000) }).reasons.join()).toMatch(/301 s old, over the 300 s limit/);
  });

  // Protected header and signature: every bit. Payload (4.5 KB): every byte, one bit each, rotating
  // the bit position (byte i flips bit i mod 8): every bit would be 36k ECDSA verifications per document.
  for (const d of [D1, D2]) {
    it(`${d.file}: single-bit changes in the protected header, every payload byte and the signature are rejected`, () => {
      const bytes = vec(d.file);
      const doc = parseNitroDocument(bytes);
      const at = (needle: Uint8Array) => Buffer.from(bytes).indexOf(Buffer.from(needle));
      const prot = at(doc.protectedHeader);
      const payload = at(doc.payload);
      const sig = bytes.length - 96;
      expect([prot, payload, sig].every((x) => x > 0)).toBe(true);
      const cases: [number, number][] = [];
      for (let i = prot; i < prot + doc.protectedHeader.length; i++) for (let b = 0; b < 8; b++) cases.push([i, b]);
      for (let i = payload; i < payload + doc.payload.length; i++) cases.push([i, i % 8]);
      for (let i = sig; i < bytes.length; i++) for (let b = 0; b < 8; b++) cases.push([i, b]);
      for (const [byte, bit] of cases) {
        const o = outcome(() => verifyNitroDocument(flip(bytes, byte, bit), { now: d.at }));
        if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_CHAIN'].includes(o)) throw new Error(`byte ${byte} bit ${bit}: ${o}`);
      }
      expect(cases.length).toBe(doc.protectedHeader.length * 8 + doc.payload.length + 96 * 8);
    });
  }
});
