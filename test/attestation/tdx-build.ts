import 'reflect-metadata';
import { createHash, sign, webcrypto } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { INTEL_QE_VENDOR_ID, INTEL_TD_QE_IDENTITY } from '../../src/attestation/verifiers/tdx.js';
import type { TdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { parseCertificates } from '../../src/attestation/certs.js';

// No real v5 quote, and no revoked or otherwise unusual Intel collateral, is among the vectors, so
// these build quotes and collateral the way an Intel platform and Intel's PCS do, under a test root
// the verifier is told to trust.

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
export const TEST_FMSPC = '00906ed50000';
/** The PCK's SGX TCB components are i % 4 and its PCESVN 13. */
function sgxExtension(): Uint8Array {
  const comps = Array.from({ length: 16 }, (_, i) => seq(oid(`${SGX}.2.${i + 1}`), int(i % 4)));
  return seq(
    seq(oid(`${SGX}.1`), octets(new Uint8Array(16))),
    seq(oid(`${SGX}.2`), seq(...comps, seq(oid(`${SGX}.2.17`), int(13)), seq(oid(`${SGX}.2.18`), octets(new Uint8Array(16))))),
    seq(oid(`${SGX}.3`), octets(new Uint8Array([0, 0]))),
    seq(oid(`${SGX}.4`), octets(Buffer.from(TEST_FMSPC, 'hex'))),
  );
}

export interface QuoteOptions {
  bodyType?: 2 | 3;
  /** Quote version; 4 has no body descriptor (TD 1.0 body). */
  version?: 4 | 5;
  /** TEE_TCB_SVN: byte 0 module SVN, byte 1 module major version. */
  teeTcbSvn?: number[];
  mrSignerSeam?: Uint8Array;
  /** QE report fields; default: Intel's production TD QE identity, ISVSVN 8. */
  qe?: { mrSigner?: string; isvProdId?: number; isvSvn?: number; attributes?: string; miscSelect?: number };
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const NOT_BEFORE = new Date('2024-01-01T00:00:00Z');
const NOT_AFTER = new Date('2034-01-01T00:00:00Z');
export const BUILD_NOW = new Date('2026-01-01T00:00:00Z');

async function gen(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}
async function pkcs8(k: webcrypto.CryptoKey) {
  return { key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', k)), format: 'der' as const, type: 'pkcs8' as const, dsaEncoding: 'ieee-p1363' as const };
}

export async function buildQuote(o: QuoteOptions = {}) {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const version = o.version ?? 5;
  const bodyType = version === 4 ? 2 : (o.bodyType ?? 3);
  const [rootK, caK, pckK, attK, tcbK] = [await gen(), await gen(), await gen(), await gen(), await gen()];
  const ca = [new px509.BasicConstraintsExtension(true, undefined, true)];
  const validity = { notBefore: NOT_BEFORE, notAfter: NOT_AFTER, signingAlgorithm: ALG };
  const root = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=Test SGX Root CA', keys: rootK, extensions: ca, ...validity });
  const pca = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: 'CN=Test PCK Platform CA', issuer: root.subject, publicKey: caK.publicKey, signingKey: rootK.privateKey, extensions: ca, ...validity });
  const pck = await px509.X509CertificateGenerator.create({
    serialNumber: '03',
    subject: 'CN=Test PCK Certificate',
    issuer: pca.subject,
    publicKey: pckK.publicKey,
    signingKey: caK.privateKey,
    extensions: [new px509.Extension(SGX, false, sgxExtension())],
    ...validity,
  });
  // The verifier finds the collateral signer by Intel's name for it.
  const tcbSigner = await px509.X509CertificateGenerator.create({ serialNumber: '04', subject: 'CN=Intel SGX TCB Signing', issuer: root.subject, publicKey: tcbK.publicKey, signingKey: rootK.privateKey, ...validity });
  const attRaw = new Uint8Array(await webcrypto.subtle.exportKey('raw', attK.publicKey)).subarray(1); // drop 0x04
  const auth = new Uint8Array(32).fill(0xa5);

  const header = Buffer.alloc(48);
  header.writeUInt16LE(version, 0);
  header.writeUInt16LE(2, 2);
  header.writeUInt32LE(0x81, 4);
  Buffer.from(INTEL_QE_VENDOR_ID, 'hex').copy(header, 12);
  const bodySize = bodyType === 3 ? 648 : 584;
  const desc = Buffer.alloc(6);
  desc.writeUInt16LE(bodyType, 0);
  desc.writeUInt32LE(bodySize, 2);
  const body = Buffer.alloc(bodySize);
  Buffer.from(o.teeTcbSvn ?? [7]).copy(body, 0);
  if (o.mrSignerSeam) Buffer.from(o.mrSignerSeam).copy(body, 64);
  body.fill(0x11, 136, 184); // MRTD
  body.fill(0x22, 520, 584); // REPORTDATA
  if (bodyType === 3) body.fill(0x33, 600, 648); // MRSERVICETD
  const signed = version === 4 ? Buffer.concat([header, body]) : Buffer.concat([header, desc, body]);
  const quoteSig = sign('sha256', signed, await pkcs8(attK.privateKey));

  const qe = Buffer.alloc(384);
  qe.writeUInt32LE(o.qe?.miscSelect ?? INTEL_TD_QE_IDENTITY.miscSelect, 16);
  Buffer.from(o.qe?.attributes ?? INTEL_TD_QE_IDENTITY.attributes, 'hex').copy(qe, 48);
  Buffer.from(o.qe?.mrSigner ?? INTEL_TD_QE_IDENTITY.mrSigner, 'hex').copy(qe, 128);
  qe.writeUInt16LE(o.qe?.isvProdId ?? INTEL_TD_QE_IDENTITY.isvProdId, 256);
  qe.writeUInt16LE(o.qe?.isvSvn ?? 8, 258);
  createHash('sha256').update(attRaw).update(auth).digest().copy(qe, 320);
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

  const crl = async (issuer: 'pck-ca' | 'root', serials: string[] = ['0a']) =>
    new Uint8Array(
      (
        await px509.X509CrlGenerator.create({
          issuer: issuer === 'root' ? root.subject : pca.subject,
          thisUpdate: new Date('2025-12-01T00:00:00Z'),
          nextUpdate: new Date('2026-02-01T00:00:00Z'),
          entries: serials.map((serialNumber) => ({ serialNumber, revocationDate: new Date('2025-12-15T00:00:00Z') })),
          signingKey: issuer === 'root' ? rootK.privateKey : caK.privateKey,
          signingAlgorithm: ALG,
        })
      ).rawData,
    );
  const signJson = async (doc: object) => {
    const body = JSON.stringify(doc);
    return { body, signature: sign('sha256', Buffer.from(body), await pkcs8(tcbK.privateKey)).toString('hex') };
  };
  const window = { issueDate: '2025-12-01T00:00:00Z', nextUpdate: '2026-02-01T00:00:00Z' };
  const svn16 = (v = 0) => Array.from({ length: 16 }, () => ({ svn: v }));
  /** Intel-shaped TCB info for the test FMSPC: one level at the given status, tdxModule with a zero signer. */
  const tcbInfo = (status = 'UpToDate', extra: Record<string, unknown> = {}) =>
    signJson({
      id: 'TDX',
      version: 3,
      ...window,
      fmspc: TEST_FMSPC.toUpperCase(),
      pceId: '0000',
      tcbType: 0,
      tcbEvaluationDataNumber: 17,
      tdxModule: { mrsigner: '00'.repeat(48), attributes: '0000000000000000', attributesMask: 'FFFFFFFFFFFFFFFF' },
      tcbLevels: [{ tcb: { sgxtcbcomponents: svn16(), pcesvn: 0, tdxtcbcomponents: svn16() }, tcbDate: '2025-01-01T00:00:00Z', tcbStatus: status }],
      ...extra,
    });
  const qeIdentity = (status = 'UpToDate') =>
    signJson({
      id: 'TD_QE',
      version: 2,
      ...window,
      tcbEvaluationDataNumber: 17,
      miscselect: '00000000',
      miscselectMask: 'FFFFFFFF',
      attributes: INTEL_TD_QE_IDENTITY.attributes.toUpperCase(),
      attributesMask: INTEL_TD_QE_IDENTITY.attributesMask.toUpperCase(),
      mrsigner: INTEL_TD_QE_IDENTITY.mrSigner.toUpperCase(),
      isvprodid: 2,
      tcbLevels: [{ tcb: { isvsvn: 0 }, tcbDate: '2025-01-01T00:00:00Z', tcbStatus: status }],
    });
  /** Every part Intel's PCS serves for this quote, each at the given status. */
  const fullCollateral = async (o2: { platform?: string; qe?: string } = {}): Promise<TdxCollateral> => ({
    tcbInfo: await tcbInfo(o2.platform),
    qeIdentity: await qeIdentity(o2.qe),
    crls: [await crl('pck-ca'), await crl('root')],
    certificates: parseCertificates(tcbSigner.toString('pem'), 'test TCB signing certificate'),
  });
  return { quote, rootFp, signedLength: signed.length, crl, tcbInfo, qeIdentity, fullCollateral, tcbSignerPem: tcbSigner.toString('pem'), rootPem: root.toString('pem') };
}
