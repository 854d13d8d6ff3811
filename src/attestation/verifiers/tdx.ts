import { createHash, type X509Certificate } from 'node:crypto';
import { EvidenceChainError, EvidenceFormatError, EvidenceSignatureError } from '../../errors.js';
import { ByteReader, hex, isAllZero } from '../bin.js';
import { commonName, extensionValue, parseCertificates, publicKeyOf, verifyChain, verificationTime } from '../certs.js';
import { derInteger, derOid, readChildren, readTlv } from '../der.js';
import { DEFAULT_ROOTS, rootSet, type PinnedRoot } from '../roots.js';
import type { Check, Claims, VerifiedEvidence, VerifyOptions } from '../types.js';
import { ecdsaVerifyRaw, p256RawKey } from './ecdsa.js';
import { evaluateTdxCollateral, type TdxCollateral, type TdxCollateralResult } from './tdx-collateral.js';

/** Intel's QE vendor id; quotes from any other QE are not Intel DCAP quotes. */
export const INTEL_QE_VENDOR_ID = '939a7233f79c4ca9940a0db3957f0607';
export const TDX_TEE_TYPE = 0x81;
const ATT_KEY_ECDSA_P256 = 2;
const HEADER_SIZE = 48;
const TD10_BODY_SIZE = 584;
const TD15_BODY_SIZE = 648;
const QE_REPORT_SIZE = 384;
/** Real quotes are about 5 KiB (a PEM PCK chain inside); anything far larger is not a quote. */
export const MAX_TDX_QUOTE = 64 * 1024;

/**
 * Intel's TD quoting enclave as Intel's PCS QE identity (id TD_QE) describes it; the same values in
 * the 2023 and 2025 identities among the test vectors. Checked when no signed QE identity is given,
 * so that without collateral the QE report is still known to come from Intel's production QE.
 */
export const INTEL_TD_QE_IDENTITY = {
  mrSigner: 'dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5',
  isvProdId: 2,
  miscSelect: 0,
  miscSelectMask: 0xffffffff,
  /** INIT and MODE64BIT set; DEBUG (bit 1) must be clear. */
  attributes: '11000000000000000000000000000000',
  attributesMask: 'fbffffffffffffff0000000000000000',
} as const;

function checkPinnedQe(qe: QeReport): void {
  const id = INTEL_TD_QE_IDENTITY;
  const problems: string[] = [];
  if (hex(qe.mrSigner) !== id.mrSigner) problems.push(`MRSIGNER ${hex(qe.mrSigner)} is not Intel's ${id.mrSigner}`);
  if (qe.isvProdId !== id.isvProdId) problems.push(`ISVPRODID ${qe.isvProdId} is not ${id.isvProdId}`);
  if (((qe.miscSelect ^ id.miscSelect) & id.miscSelectMask) !== 0) problems.push(`MISCSELECT 0x${qe.miscSelect.toString(16)} is not 0x${id.miscSelect.toString(16)}`);
  if (qe.attributes[0]! & 0x02) problems.push('the QE runs in debug mode (ATTRIBUTES.DEBUG set)');
  const want = Buffer.from(id.attributes, 'hex');
  const mask = Buffer.from(id.attributesMask, 'hex');
  if (qe.attributes.some((b, i) => (b & mask[i]!) !== (want[i]! & mask[i]!))) problems.push(`ATTRIBUTES ${hex(qe.attributes)} are not ${id.attributes} under mask ${id.attributesMask}`);
  if (problems.length) throw new EvidenceChainError(`TDX quoting enclave is not Intel's production TD QE: ${problems.join('; ')}`);
}

export interface TdReportBody {
  teeTcbSvn: Uint8Array;
  mrSeam: Uint8Array;
  mrSignerSeam: Uint8Array;
  seamAttributes: Uint8Array;
  tdAttributes: Uint8Array;
  xfam: Uint8Array;
  mrTd: Uint8Array;
  mrConfigId: Uint8Array;
  mrOwner: Uint8Array;
  mrOwnerConfig: Uint8Array;
  rtmr: [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  reportData: Uint8Array;
  /** TDX 1.5 bodies (quote v5, body type 3) only. */
  teeTcbSvn2?: Uint8Array;
  mrServiceTd?: Uint8Array;
}

export interface QeReport {
  cpuSvn: Uint8Array;
  miscSelect: number;
  attributes: Uint8Array;
  mrEnclave: Uint8Array;
  mrSigner: Uint8Array;
  isvProdId: number;
  isvSvn: number;
  reportData: Uint8Array;
  raw: Uint8Array;
}

export interface TdxQuote {
  version: number;
  attestationKeyType: number;
  teeType: number;
  qeVendorId: Uint8Array;
  userData: Uint8Array;
  /** v5 body type: 2 = TDX 1.0, 3 = TDX 1.5; v4 quotes are TDX 1.0. */
  bodyType: number;
  body: TdReportBody;
  signature: Uint8Array;
  attestationKey: Uint8Array;
  qeReport: QeReport;
  qeReportSignature: Uint8Array;
  qeAuthData: Uint8Array;
  /** PEM text of the PCK chain (certification data type 5). */
  pckChainPem: string;
  /** Header and body: the bytes the attestation key signs. */
  signed: Uint8Array;
  /** Bytes after the signature data (some sources pad with zeros); must be zero. */
  trailing: number;
}

function parseBody(r: ByteReader, td15: boolean): TdReportBody {
  const body: TdReportBody = {
    teeTcbSvn: r.bytesOf(16, 'TEE_TCB_SVN'),
    mrSeam: r.bytesOf(48, 'MRSEAM'),
    mrSignerSeam: r.bytesOf(48, 'MRSIGNERSEAM'),
    seamAttributes: r.bytesOf(8, 'SEAMATTRIBUTES'),
    tdAttributes: r.bytesOf(8, 'TDATTRIBUTES'),
    xfam: r.bytesOf(8, 'XFAM'),
    mrTd: r.bytesOf(48, 'MRTD'),
    mrConfigId: r.bytesOf(48, 'MRCONFIGID'),
    mrOwner: r.bytesOf(48, 'MROWNER'),
    mrOwnerConfig: r.bytesOf(48, 'MROWNERCONFIG'),
    rtmr: [r.bytesOf(48, 'RTMR0'), r.bytesOf(48, 'RTMR1'), r.bytesOf(48, 'RTMR2'), r.bytesOf(48, 'RTMR3')],
    reportData: r.bytesOf(64, 'REPORTDATA'),
  };
  if (td15) {
    body.teeTcbSvn2 = r.bytesOf(16, 'TEE_TCB_SVN_2');
    body.mrServiceTd = r.bytesOf(48, 'MRSERVICETD');
  }
  return body;
}

function parseQeReport(bytes: Uint8Array): QeReport {
  const r = new ByteReader(bytes, 'TDX QE report');
  const cpuSvn = r.bytesOf(16, 'CPUSVN');
  const miscSelect = r.u32('MISCSELECT');
  r.skip(28, 'reserved');
  const attributes = r.bytesOf(16, 'ATTRIBUTES');
  const mrEnclave = r.bytesOf(32, 'MRENCLAVE');
  r.skip(32, 'reserved');
  const mrSigner = r.bytesOf(32, 'MRSIGNER');
  r.skip(96, 'reserved');
  const isvProdId = r.u16('ISVPRODID');
  const isvSvn = r.u16('ISVSVN');
  r.skip(60, 'reserved');
  const reportData = r.bytesOf(64, 'REPORTDATA');
  return { cpuSvn, miscSelect, attributes, mrEnclave, mrSigner, isvProdId, isvSvn, reportData, raw: bytes };
}

/** Parses a TDX DCAP quote, version 4 or 5, with ECDSA P-256 attestation key and QE certification data. */
export function parseTdxQuote(bytes: Uint8Array): TdxQuote {
  if (!(bytes instanceof Uint8Array)) throw new EvidenceFormatError('TDX quote must be a Uint8Array');
  if (bytes.length > MAX_TDX_QUOTE) throw new EvidenceFormatError(`TDX quote is ${bytes.length} bytes, over the ${MAX_TDX_QUOTE}-byte limit; pass the quote alone`);
  const r = new ByteReader(bytes, 'TDX quote');
  const version = r.u16('header.version');
  if (version !== 4 && version !== 5) {
    throw new EvidenceFormatError(`TDX quote version ${version} is not supported (4 and 5 are); the input may be an SGX quote or not a quote`);
  }
  const attestationKeyType = r.u16('header.att_key_type');
  if (attestationKeyType !== ATT_KEY_ECDSA_P256) {
    throw new EvidenceFormatError(`TDX quote attestation key type ${attestationKeyType} is not 2 (ECDSA P-256)`);
  }
  const teeType = r.u32('header.tee_type');
  if (teeType !== TDX_TEE_TYPE) throw new EvidenceFormatError(`quote TEE type 0x${teeType.toString(16)} is not TDX (0x81)`);
  r.skip(4, 'header.reserved');
  const qeVendorId = r.bytesOf(16, 'header.qe_vendor_id');
  const userData = r.bytesOf(20, 'header.user_data');
  let bodyType = 2;
  if (version === 5) {
    bodyType = r.u16('body.type');
    const size = r.u32('body.size');
    const expected = bodyType === 2 ? TD10_BODY_SIZE : bodyType === 3 ? TD15_BODY_SIZE : -1;
    if (expected < 0) throw new EvidenceFormatError(`TDX quote v5 body type ${bodyType} is not a TD report (2 or 3)`);
    if (size !== expected) throw new EvidenceFormatError(`TDX quote v5 body type ${bodyType} must be ${expected} bytes, header says ${size}`);
  }
  const body = parseBody(r, bodyType === 3);
  const signed = bytes.slice(0, r.offset);
  const sigDataLen = r.u32('signature_data_len');
  if (sigDataLen > r.remaining) {
    throw new EvidenceFormatError(`TDX quote signature data length ${sigDataLen} exceeds the ${r.remaining} bytes left; the quote is truncated`);
  }
  const sigEnd = r.offset + sigDataLen;
  const s = new ByteReader(bytes.subarray(r.offset, sigEnd), 'TDX quote signature data');
  const signature = s.bytesOf(64, 'quote signature');
  const attestationKey = s.bytesOf(64, 'attestation key');
  const certType = s.u16('certification_data.type');
  const certSize = s.u32('certification_data.size');
  if (certType !== 6) throw new EvidenceFormatError(`TDX quote certification data type ${certType} is not 6 (QE report certification data)`);
  if (certSize !== s.remaining) {
    throw new EvidenceFormatError(`TDX quote certification data says ${certSize} bytes but ${s.remaining} remain in the signature data`);
  }
  const qeReport = parseQeReport(s.bytesOf(QE_REPORT_SIZE, 'QE report'));
  const qeReportSignature = s.bytesOf(64, 'QE report signature');
  const authLen = s.u16('QE auth data size');
  const qeAuthData = s.bytesOf(authLen, 'QE auth data');
  const innerType = s.u16('PCK certification data.type');
  const innerSize = s.u32('PCK certification data.size');
  if (innerType !== 5) {
    throw new EvidenceFormatError(`TDX quote PCK certification data type ${innerType} is not 5 (PEM PCK chain); fetch the PCK chain from Intel PCS`);
  }
  if (innerSize !== s.remaining) {
    throw new EvidenceFormatError(`TDX quote PCK chain says ${innerSize} bytes but ${s.remaining} remain`);
  }
  const pckChainPem = Buffer.from(s.bytesOf(innerSize, 'PCK chain')).toString('latin1').replace(/\0+$/, '');
  const tail = bytes.subarray(sigEnd);
  if (!isAllZero(tail)) throw new EvidenceFormatError(`TDX quote has ${tail.length} non-zero bytes after its signature data`);
  return {
    version,
    attestationKeyType,
    teeType,
    qeVendorId,
    userData,
    bodyType,
    body,
    signature,
    attestationKey,
    qeReport,
    qeReportSignature,
    qeAuthData,
    pckChainPem,
    signed,
    trailing: tail.length,
  };
}

/** What the PCK certificate's SGX extension (1.2.840.113741.1.13.1) says about the platform. */
export interface PckExtensions {
  fmspc: string;
  pceId: string;
  pceSvn: number;
  /** SGX TCB components 1..16. */
  sgxComponents: number[];
  cpuSvn: string;
}

const OID_SGX_EXT = '1.2.840.113741.1.13.1';

export function pckExtensions(cert: X509Certificate): PckExtensions {
  const v = extensionValue(cert, OID_SGX_EXT);
  if (!v) throw new EvidenceChainError('TDX PCK certificate lacks the SGX extension (1.2.840.113741.1.13.1); it is not a PCK certificate');
  const what = 'PCK SGX extension';
  const out: PckExtensions = { fmspc: '', pceId: '', pceSvn: -1, sgxComponents: new Array(16).fill(-1), cpuSvn: '' };
  for (const entry of readChildren(readTlv(v, 0, what), what)) {
    const [oidTlv, valueTlv] = readChildren(entry, what);
    if (!oidTlv || !valueTlv) continue;
    const oid = derOid(oidTlv, what);
    if (oid === `${OID_SGX_EXT}.4`) out.fmspc = hex(valueTlv.value);
    else if (oid === `${OID_SGX_EXT}.3`) out.pceId = hex(valueTlv.value);
    else if (oid === `${OID_SGX_EXT}.2`) {
      for (const comp of readChildren(valueTlv, what)) {
        const [o, val] = readChildren(comp, what);
        if (!o || !val) continue;
        const n = Number(derOid(o, what).split('.').pop());
        if (n >= 1 && n <= 16) out.sgxComponents[n - 1] = derInteger(val, what);
        else if (n === 17) out.pceSvn = derInteger(val, what);
        else if (n === 18) out.cpuSvn = hex(val.value);
      }
    }
  }
  if (out.fmspc.length !== 12 || out.pceSvn < 0 || out.sgxComponents.some((c) => c < 0)) {
    throw new EvidenceChainError('TDX PCK certificate SGX extension lacks FMSPC, PCESVN or TCB components');
  }
  return out;
}

/**
 * Roots per chain kind, so that trusting a root for one purpose (say a test PCK root) does not let it
 * sign another kind of document. CRLs need no anchor of their own: each must be issued by a CA of
 * the verified PCK chain.
 */
export interface TdxTrustAnchors {
  /** Roots the quote's PCK chain may end at; default Intel SGX Root CA. `trustedRoots` sets this too. */
  pck?: readonly (PinnedRoot | string)[];
  /** Roots the collateral's "Intel SGX TCB Signing" certificate may chain to; default Intel SGX Root CA. */
  tcbSigning?: readonly (PinnedRoot | string)[];
}

export interface TdxVerifyOptions extends VerifyOptions {
  /** Separate roots per chain kind; `trustedRoots` alone sets only the PCK roots. */
  trustAnchors?: TdxTrustAnchors;
  /** Extra certificates (e.g. collateral issuer chains); the PCK chain itself comes from the quote. */
  certificates?: readonly X509Certificate[];
  /** Intel PCS collateral; when given, TCB info, QE identity and CRLs are checked too. */
  collateral?: TdxCollateral;
}

export interface TdxVerified {
  quote: TdxQuote;
  pck: PckExtensions;
  collateral?: TdxCollateralResult;
}

/**
 * Verifies a TDX quote: the attestation key's ECDSA P-256 signature over header and TD report,
 * the QE report's signature by the PCK, the QE report data binding the attestation key,
 * and the PCK chain to Intel's SGX root CA at `now`; then collateral when given.
 */
export async function verifyTdxQuote(bytes: Uint8Array, opts: TdxVerifyOptions = {}): Promise<VerifiedEvidence<TdxVerified>> {
  const now = verificationTime(opts.now);
  const quote = parseTdxQuote(bytes);
  const checks: Check[] = [];
  if (hex(quote.qeVendorId) !== INTEL_QE_VENDOR_ID) {
    throw new EvidenceFormatError(`TDX quote QE vendor id ${hex(quote.qeVendorId)} is not Intel's (${INTEL_QE_VENDOR_ID})`);
  }

  const attKey = p256RawKey(quote.attestationKey, 'TDX attestation key');
  if (!ecdsaVerifyRaw('sha256', attKey, quote.signed, quote.signature)) {
    throw new EvidenceSignatureError('TDX quote signature does not verify with its attestation key: the header or TD report was modified');
  }
  checks.push({ check: 'tdx.quote_signature', ok: true, detail: 'ECDSA P-256 signature over header and TD report verifies with the attestation key' });

  const binding = createHash('sha256').update(quote.attestationKey).update(quote.qeAuthData).digest();
  const qrd = quote.qeReport.reportData;
  if (Buffer.compare(binding, Buffer.from(qrd.subarray(0, 32))) !== 0 || !isAllZero(qrd.subarray(32))) {
    throw new EvidenceSignatureError('TDX QE report data is not SHA-256(attestation key || QE auth data): the attestation key is not the one the QE certified');
  }
  checks.push({ check: 'tdx.attestation_key_binding', ok: true, detail: 'QE report data = SHA-256(attestation key || QE auth data)' });

  const chain = parseCertificates(quote.pckChainPem, 'TDX quote PCK certificate chain');
  // The PCK is the end-entity certificate whose key signed the QE report, wherever it sits in the PEM.
  const leaf = chain.find((c) => !c.ca && ecdsaVerifyRaw('sha256', publicKeyOf(c, 'TDX PCK certificate'), quote.qeReport.raw, quote.qeReportSignature));
  if (!leaf) {
    throw new EvidenceSignatureError('TDX QE report signature does not verify with the PCK certificate: the QE report or PCK chain was modified');
  }
  checks.push({ check: 'tdx.qe_report_signature', ok: true, detail: 'QE report signed by the PCK key' });
  if (!opts.collateral?.qeIdentity) {
    checkPinnedQe(quote.qeReport);
    checks.push({ check: 'tdx.qe_pinned', ok: true, detail: "QE is Intel's production TD QE (pinned MRSIGNER, ISVPRODID, MISCSELECT, non-debug ATTRIBUTES)" });
  }

  const pool = [...chain, ...(opts.certificates ?? [])];
  const trusted = rootSet(opts.trustAnchors?.pck ?? opts.trustedRoots ?? DEFAULT_ROOTS.tdx);
  const path = verifyChain(leaf, pool, {
    now,
    trustedRoots: trusted,
    what: 'TDX PCK chain',
    hint: "the quote's PCK chain must lead to Intel's SGX Root CA",
  });
  checks.push({ check: 'tdx.pck_chain', ok: true, detail: `${path.map(commonName).join(' -> ')} valid at ${now.toISOString()}, root pinned` });
  const pck = pckExtensions(leaf);

  let collateral: TdxCollateralResult | undefined;
  if (opts.collateral) {
    const tcbSigningRoots = rootSet(opts.trustAnchors?.tcbSigning ?? DEFAULT_ROOTS.tdx);
    collateral = await evaluateTdxCollateral(opts.collateral, { quote, pck, pckPath: path, now, tcbSigningRoots, extraCertificates: opts.certificates ?? [] });
    checks.push(...collateral.checks);
  }
  return { tee: 'tdx', claims: tdxClaims(quote, pck, collateral), raw: { quote, pck, ...(collateral ? { collateral } : {}) }, checks };
}

export function tdxClaims(quote: TdxQuote, pck: PckExtensions, collateral?: TdxCollateralResult): Claims {
  const b = quote.body;
  const tcb: Record<string, number | string> = {
    teeTcbSvn: hex(b.teeTcbSvn),
    tdxModuleSvn: b.teeTcbSvn[0]!,
    tdxModuleMajor: b.teeTcbSvn[1]!,
    pceSvn: pck.pceSvn,
    qeSvn: quote.qeReport.isvSvn,
    sgxTcbComponents: pck.sgxComponents.join(','),
  };
  b.teeTcbSvn.forEach((v, i) => (tcb[`teeTcbSvn${i}`] = v));
  if (collateral) {
    // NotEvaluated unless the whole collateral was checked; a policy on tcbStatus then denies.
    tcb.tcbStatus = collateral.status;
    if (collateral.missing.length) tcb.collateralMissing = collateral.missing.join('; ');
    tcb.platformTcbStatus = collateral.platformStatus;
    tcb.qeTcbStatus = collateral.qeStatus;
    if (collateral.moduleStatus) tcb.tdxModuleTcbStatus = collateral.moduleStatus;
    if (collateral.advisoryIds.length) tcb.advisoryIds = collateral.advisoryIds.join(',');
  }
  const measurements: Record<string, string> = {
    mrTd: hex(b.mrTd),
    rtmr0: hex(b.rtmr[0]),
    rtmr1: hex(b.rtmr[1]),
    rtmr2: hex(b.rtmr[2]),
    rtmr3: hex(b.rtmr[3]),
    mrSeam: hex(b.mrSeam),
    mrSignerSeam: hex(b.mrSignerSeam),
    mrConfigId: hex(b.mrConfigId),
    mrOwner: hex(b.mrOwner),
    mrOwnerConfig: hex(b.mrOwnerConfig),
  };
  if (b.mrServiceTd) measurements.mrServiceTd = hex(b.mrServiceTd);
  return {
    tee: 'tdx',
    simulated: false,
    measurement: hex(b.mrTd),
    measurements,
    reportData: hex(b.reportData),
    // TDATTRIBUTES bit 0 is TUD.DEBUG.
    debug: (b.tdAttributes[0]! & 1) === 1,
    tcb,
    platform: {
      fmspc: pck.fmspc,
      pceId: pck.pceId,
      tdAttributes: hex(b.tdAttributes),
      xfam: hex(b.xfam),
      seamAttributes: hex(b.seamAttributes),
      qeVendorId: hex(quote.qeVendorId),
      quoteVersion: String(quote.version),
      qeMrSigner: hex(quote.qeReport.mrSigner),
      qeMrEnclave: hex(quote.qeReport.mrEnclave),
    },
  };
}
