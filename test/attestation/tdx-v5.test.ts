import 'reflect-metadata';
import { createHash, sign, webcrypto } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { describe, expect, it, vi } from 'vitest';
import { parseTdxQuote, verifyTdxQuote, INTEL_QE_VENDOR_ID } from '../../src/attestation/verifiers/tdx.js';
import type { TdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { flip, outcomeAsync, typedError } from './helpers.js';

// Bit-flip and property loops run thousands of verifications; on a shared 2-core machine that can take minutes.
vi.setConfig({ testTimeout: 300_000 });

// No real v5 quote is among the vectors, so this builds one the way a TD 1.5 platform does, under a
// test root the verifier is told to trust: it checks the v5 layout (body descriptor, TD15 fields).

function der(tag: number, ...parts: Uint8Array[]): Uint8Array {
  const body = Buffer.concat(parts);
  const len = body.length < 128 ? [body.length] : body.length < 256 ? [0x81, body.length] : [0x82, body.length >> 8, body.length & 0xff];
  return new Uint8Array([tag, ...len, ...body]);
}
function oid(dotted: string): Uint8Array {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [a! * 40 + b!];
  for (const n of rest) {
    const groups = [];
    let v = n;
    do {
      groups.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    out.push(...groups.map((g, i) => (i < groups.length - 1 ? g | 0x80 : g)));
  }
  return der(0x06, new Uint8Array(out));
}
const int = (n: number) => der(0x02, new Uint8Array([n]));
const octets = (b: Uint8Array) => der(0x04, b);
const seq = (...p: Uint8Array[]) => der(0x30, ...p);

const SGX = '1.2.840.113741.1.13.1';
function sgxExtension(): Uint8Array {
  const comps = Array.from({ length: 16 }, (_, i) => seq(oid(`${SGX}.2.${i + 1}`), int(i % 4)));
  return seq(
    seq(oid(`${SGX}.1`), octets(new Uint8Array(16))),
    seq(oid(`${SGX}.2`), seq(...comps, seq(oid(`${SGX}.2.17`), int(13)), seq(oid(`${SGX}.2.18`), octets(new Uint8Array(16))))),
    seq(oid(`${SGX}.3`), octets(new Uint8Array([0, 0]))),
    seq(oid(`${SGX}.4`), octets(Buffer.from('00906ed50000', 'hex'))),
  );
}

async function buildV5(bodyType: 2 | 3) {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const gen = async () => (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const [rootK, caK, pckK, attK] = [await gen(), await gen(), await gen(), await gen()];
  const ca = [new px509.BasicConstraintsExtension(true, undefined, true)];
  const notBefore = new Date('2024-01-01T00:00:00Z');
  const notAfter = new Date('2034-01-01T00:00:00Z');
  const root = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=Test SGX Root CA', notBefore, notAfter, keys: rootK, signingAlgorithm: alg, extensions: ca });
  const pca = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: 'CN=Test PCK Platform CA', issuer: root.subject, notBefore, notAfter, publicKey: caK.publicKey, signingKey: rootK.privateKey, signingAlgorithm: alg, extensions: ca });
  const pck = await px509.X509CertificateGenerator.create({
    serialNumber: '03',
    subject: 'CN=Test PCK Certificate',
    issuer: pca.subject,
    notBefore,
    notAfter,
    publicKey: pckK.publicKey,
    signingKey: caK.privateKey,
    signingAlgorithm: alg,
    extensions: [new px509.Extension(SGX, false, sgxExtension())],
  });
  const pkcs8 = async (k: webcrypto.CryptoKey) => ({ key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', k)), format: 'der' as const, type: 'pkcs8' as const, dsaEncoding: 'ieee-p1363' as const });
  const attRaw = new Uint8Array(await webcrypto.subtle.exportKey('raw', attK.publicKey)).subarray(1); // drop 0x04
  const auth = new Uint8Array(32).fill(0xa5);

  const header = Buffer.alloc(48);
  header.writeUInt16LE(5, 0);
  header.writeUInt16LE(2, 2);
  header.writeUInt32LE(0x81, 4);
  Buffer.from(INTEL_QE_VENDOR_ID, 'hex').copy(header, 12);
  const bodySize = bodyType === 3 ? 648 : 584;
  const desc = Buffer.alloc(6);
  desc.writeUInt16LE(bodyType, 0);
  desc.writeUInt32LE(bodySize, 2);
  const body = Buffer.alloc(bodySize);
  body[0] = 7; // tee_tcb_svn[0]
  body.fill(0x11, 136, 184); // MRTD
  body.fill(0x22, 520, 584); // REPORTDATA
  if (bodyType === 3) body.fill(0x33, 600, 648); // MRSERVICETD
  const signed = Buffer.concat([header, desc, body]);
  const quoteSig = sign('sha256', signed, await pkcs8(attK.privateKey));

  const qe = Buffer.alloc(384);
  createHash('sha256').update(attRaw).update(auth).digest().copy(qe, 320);
  qe.writeUInt16LE(2, 256);
  qe.writeUInt16LE(8, 258);
  const qeSig = sign('sha256', qe, await pkcs8(pckK.privateKey));
  const pem = Buffer.from([pck, pca, root].map((c) => c.toString('pem')).join('\n'));
  const inner = Buffer.alloc(6);
  inner.writeUInt16LE(5, 0);
  inner.writeUInt32LE(pem.length, 2);
  const authLen = Buffer.alloc(2);
  authLen.writeUInt16LE(auth.length, 0);
  const certData = Buffer.concat([qe, qeSig, authLen, auth, inner, pem]);
  const outer = Buffer.alloc(6);
  outer.writeUInt16LE(6, 0);
  outer.writeUInt32LE(certData.length, 2);
  const sigData = Buffer.concat([quoteSig, attRaw, outer, certData]);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(sigData.length, 0);
  const quote = new Uint8Array(Buffer.concat([signed, len, sigData]));
  const rootFp = createHash('sha256').update(new Uint8Array(root.rawData)).digest('hex');
  return { quote, rootFp, signedLength: signed.length, caKey: caK.privateKey, caName: pca.subject, alg };
}

describe('TDX quote v5 (built by the test under a test root)', () => {
  it('TD 1.5 body (type 3): verifies with the test root pinned, exposes MRSERVICETD; refused with the default roots', async () => {
    const { quote, rootFp } = await buildV5(3);
    const q = parseTdxQuote(quote);
    expect(q).toMatchObject({ version: 5, bodyType: 3 });
    const r = await verifyTdxQuote(quote, { now: new Date('2026-01-01T00:00:00Z'), trustedRoots: [rootFp] });
    expect(r.claims.measurement).toBe('11'.repeat(48));
    expect(r.claims.reportData).toBe('22'.repeat(64));
    expect(r.claims.measurements.mrServiceTd).toBe('33'.repeat(48));
    expect(r.claims.tcb).toMatchObject({ tdxModuleSvn: 7, pceSvn: 13, qeSvn: 8 });
    expect(r.claims.platform.fmspc).toBe('00906ed50000');
    const e = await typedError(() => verifyTdxQuote(quote, { now: new Date('2026-01-01T00:00:00Z') }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/Test SGX Root CA.*not a pinned root/);
  });

  it('TD 1.0 body in a v5 quote (type 2) verifies; a body size that disagrees with its type is a format error', async () => {
    const { quote, rootFp } = await buildV5(2);
    expect(await outcomeAsync(() => verifyTdxQuote(quote, { now: new Date('2026-01-01T00:00:00Z'), trustedRoots: [rootFp] }))).toBe('accepted');
    const bad = quote.slice();
    new DataView(bad.buffer).setUint32(50, 648, true);
    await typedError(() => parseTdxQuote(bad), ['ERR_EVIDENCE_FORMAT']);
  });

  it('every bit of the v5 header, body descriptor and TD 1.5 body is signed', async () => {
    const { quote, rootFp, signedLength } = await buildV5(3);
    const now = new Date('2026-01-01T00:00:00Z');
    for (let byte = 0; byte < signedLength; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const o = await outcomeAsync(() => verifyTdxQuote(flip(quote, byte, bit), { now, trustedRoots: [rootFp] }));
        if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT'].includes(o)) throw new Error(`byte ${byte} bit ${bit}: ${o}`);
      }
    }
  });

  it('a CRL from the PCK CA that lists the PCK certificate makes the quote fail as revoked', async () => {
    const { quote, rootFp, caKey, caName, alg } = await buildV5(3);
    const now = new Date('2026-01-01T00:00:00Z');
    const crl = async (serials: string[]) =>
      new Uint8Array(
        (
          await px509.X509CrlGenerator.create({
            issuer: caName,
            thisUpdate: new Date('2025-12-01T00:00:00Z'),
            nextUpdate: new Date('2026-02-01T00:00:00Z'),
            entries: serials.map((serialNumber) => ({ serialNumber, revocationDate: new Date('2025-12-15T00:00:00Z') })),
            signingKey: caKey,
            signingAlgorithm: alg,
          })
        ).rawData,
      );
    const clean: TdxCollateral = { crls: [await crl(['0a', '0b'])], certificates: [] };
    const ok = await verifyTdxQuote(quote, { now, trustedRoots: [rootFp], collateral: clean });
    expect(ok.checks.find((k) => k.check === 'tdx.crl')!.detail).toMatch(/1 certificate\(s\) of the PCK chain checked, none revoked/);
    const revoked: TdxCollateral = { crls: [await crl(['0a', '03'])], certificates: [] };
    const e = await typedError(() => verifyTdxQuote(quote, { now, trustedRoots: [rootFp], collateral: revoked }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/Test PCK Certificate" serial 03 is revoked/);
    // An expired CRL is not evidence of non-revocation.
    await typedError(() => verifyTdxQuote(quote, { now: new Date('2026-03-01T00:00:00Z'), trustedRoots: [rootFp], collateral: clean }), ['ERR_EVIDENCE_CHAIN']);
  });
});
