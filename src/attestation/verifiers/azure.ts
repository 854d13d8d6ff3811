import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject, type X509Certificate } from 'node:crypto';
import { EvidenceFormatError, EvidenceSignatureError } from '../../errors.js';
import { ByteReader, hex, isAllZero } from '../bin.js';
import { parseCertificates, verificationTime } from '../certs.js';
import type { Check, Claims, VerifiedEvidence, VerifyOptions } from '../types.js';
import { SNP_REPORT_SIZE, verifySnpReport, type SnpReport } from './snp.js';

/**
 * Azure confidential VMs (SEV-SNP with a paravisor vTPM). The evidence is JSON:
 *   { "report": HCL report, "vcek": PEM or DER, "quote": { "message": TPMS_ATTEST, "signature": RSA, "pcrs": [24 x 32 bytes] } }
 * with byte strings as number arrays or (unpadded) base64url.
 * Chain of checks: SNP report (VCEK chain) -> report data = hash(HCL runtime data)
 * -> attestation key HCLAkPub in that runtime data -> TPM quote signature -> PCR digest.
 */

const HCL_MAGIC = 'HCLA';
const HCL_HEADER = 32;
const IGVM_HEADER = 20;
const TPM_GENERATED = 0xff544347;
const TPM_ST_ATTEST_QUOTE = 0x8018;
const TPM_ALG_SHA256 = 0x000b;
const MAX_EVIDENCE = 1 << 20;

export interface HclReport {
  version: number;
  reportSize: number;
  reportType: number;
  snpReport: Uint8Array;
  hashType: number;
  runtimeData: Uint8Array;
  runtimeJson: Record<string, unknown>;
}

export interface TpmQuote {
  qualifiedSigner: Uint8Array;
  extraData: Uint8Array;
  clock: bigint;
  firmwareVersion: bigint;
  pcrSelection: { hash: number; pcrs: number[] }[];
  pcrDigest: Uint8Array;
}

export interface AzureEvidence {
  hcl: HclReport;
  quote: TpmQuote;
  quoteMessage: Uint8Array;
  quoteSignature: Uint8Array;
  pcrs: Uint8Array[];
  vcek: X509Certificate[];
}

function bytesField(v: unknown, field: string): Uint8Array {
  if (Array.isArray(v)) {
    if (v.length > MAX_EVIDENCE || !v.every((x) => Number.isInteger(x) && x >= 0 && x <= 255)) {
      throw new EvidenceFormatError(`Azure evidence ${field} must be an array of bytes`);
    }
    return new Uint8Array(v as number[]);
  }
  if (typeof v === 'string' && /^[A-Za-z0-9_\-+/]*={0,2}$/.test(v)) return new Uint8Array(Buffer.from(v, 'base64url'));
  throw new EvidenceFormatError(`Azure evidence ${field} must be a byte array or base64url string`);
}

export function parseHclReport(bytes: Uint8Array): HclReport {
  const r = new ByteReader(bytes, 'Azure HCL report');
  if (Buffer.from(r.bytesOf(4, 'signature')).toString('latin1') !== HCL_MAGIC) {
    throw new EvidenceFormatError('Azure HCL report must start with "HCLA"; this is not an Azure vTPM attestation report');
  }
  const version = r.u32('version');
  const reportSize = r.u32('report_size');
  const reportType = r.u32('report_type');
  if (reportType !== 2) throw new EvidenceFormatError(`Azure HCL report type ${reportType} is not 2 (SEV-SNP); TDX HCL reports are not supported`);
  r.seek(HCL_HEADER);
  const snpReport = r.bytesOf(SNP_REPORT_SIZE, 'SNP report');
  const dataSize = r.u32('IGVM data size');
  r.u32('IGVM version');
  r.u32('IGVM report type');
  const hashType = r.u32('IGVM hash type');
  const varSize = r.u32('IGVM variable data size');
  if (dataSize !== varSize + IGVM_HEADER) throw new EvidenceFormatError(`Azure HCL runtime data sizes disagree (${dataSize} vs ${varSize} + ${IGVM_HEADER})`);
  const runtimeData = r.bytesOf(varSize, 'runtime data');
  let runtimeJson: Record<string, unknown>;
  try {
    runtimeJson = JSON.parse(Buffer.from(runtimeData).toString('utf8').replace(/\0+$/, '')) as Record<string, unknown>;
  } catch (err) {
    throw new EvidenceFormatError('Azure HCL runtime data is not JSON', { cause: err });
  }
  if (typeof runtimeJson !== 'object' || runtimeJson === null) throw new EvidenceFormatError('Azure HCL runtime data must be a JSON object');
  return { version, reportSize, reportType, snpReport, hashType, runtimeData, runtimeJson };
}

export function parseTpmsAttest(bytes: Uint8Array): TpmQuote {
  const r = new ByteReader(bytes, 'TPM quote (TPMS_ATTEST)');
  if (r.u32be('magic') !== TPM_GENERATED) throw new EvidenceFormatError('TPM quote magic is not TPM_GENERATED_VALUE; not a TPM-generated structure');
  if (r.u16be('type') !== TPM_ST_ATTEST_QUOTE) throw new EvidenceFormatError('TPM attestation is not a quote (TPM_ST_ATTEST_QUOTE)');
  const qualifiedSigner = r.bytesOf(r.u16be('qualifiedSigner.size'), 'qualifiedSigner');
  const extraData = r.bytesOf(r.u16be('extraData.size'), 'extraData');
  const clock = r.u64be('clock');
  r.u32be('resetCount');
  r.u32be('restartCount');
  r.u8('safe');
  const firmwareVersion = r.u64be('firmwareVersion');
  const count = r.u32be('pcrSelect.count');
  if (count > 16) throw new EvidenceFormatError(`TPM quote selects ${count} PCR banks; at most 16 make sense`);
  const pcrSelection: { hash: number; pcrs: number[] }[] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.u16be('pcrSelect.hash');
    const size = r.u8('pcrSelect.sizeofSelect');
    const bits = r.bytesOf(size, 'pcrSelect.bitmap');
    const pcrs: number[] = [];
    bits.forEach((b, byte) => {
      for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) pcrs.push(byte * 8 + bit);
    });
    pcrSelection.push({ hash, pcrs });
  }
  const pcrDigest = r.bytesOf(r.u16be('pcrDigest.size'), 'pcrDigest');
  if (r.remaining !== 0) throw new EvidenceFormatError(`TPM quote has ${r.remaining} trailing bytes`);
  return { qualifiedSigner, extraData, clock, firmwareVersion, pcrSelection, pcrDigest };
}

function akFromRuntime(json: Record<string, unknown>): KeyObject {
  const keys = Array.isArray(json.keys) ? (json.keys as Record<string, unknown>[]) : [];
  const jwk = keys.find((k) => typeof k === 'object' && k !== null && k.kid === 'HCLAkPub');
  if (!jwk) throw new EvidenceFormatError('Azure HCL runtime data has no HCLAkPub key; cannot check the TPM quote');
  try {
    return createPublicKey({ key: { kty: String(jwk.kty), n: String(jwk.n), e: String(jwk.e) }, format: 'jwk' });
  } catch (err) {
    throw new EvidenceFormatError('Azure HCLAkPub is not a readable RSA JWK', { cause: err });
  }
}

export interface AzureVerifyOptions extends VerifyOptions {
  /** ASK/ARK (and a VCEK if the evidence lacks one). */
  certificates?: readonly X509Certificate[];
  /** AMD CRLs (DER) for the SNP chain, as for verifySnpReport. */
  crls?: readonly Uint8Array[];
}

export function parseAzureEvidence(bytes: Uint8Array): AzureEvidence {
  if (bytes.length > MAX_EVIDENCE) throw new EvidenceFormatError('Azure evidence is over 1 MiB');
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new EvidenceFormatError('Azure evidence must be JSON { report, vcek, quote }', { cause: err });
  }
  if (typeof j !== 'object' || j === null) throw new EvidenceFormatError('Azure evidence must be a JSON object');
  const hcl = parseHclReport(bytesField(j.report, 'report'));
  const q = j.quote as Record<string, unknown> | undefined;
  if (!q || typeof q !== 'object') throw new EvidenceFormatError('Azure evidence lacks the TPM quote');
  const quoteMessage = bytesField(q.message, 'quote.message');
  const quoteSignature = bytesField(q.signature, 'quote.signature');
  if (!Array.isArray(q.pcrs)) throw new EvidenceFormatError('Azure evidence quote.pcrs must be a list');
  const pcrs = (q.pcrs as unknown[]).map((p, i) => bytesField(p, `quote.pcrs[${i}]`));
  let vcek: X509Certificate[] = [];
  if (typeof j.vcek === 'string') vcek = parseCertificates(j.vcek.includes('BEGIN') ? j.vcek : bytesField(j.vcek, 'vcek'), 'Azure evidence vcek');
  return { hcl, quote: parseTpmsAttest(quoteMessage), quoteMessage, quoteSignature, pcrs, vcek };
}

export function verifyAzureEvidence(bytes: Uint8Array, opts: AzureVerifyOptions = {}): VerifiedEvidence<AzureEvidence & { snp: SnpReport }> {
  const now = verificationTime(opts.now);
  const ev = parseAzureEvidence(bytes);
  const snp = verifySnpReport(ev.hcl.snpReport, { ...opts, now, certificates: [...ev.vcek, ...(opts.certificates ?? [])] });
  const checks: Check[] = [...snp.checks];

  const alg = ev.hcl.hashType === 1 ? 'sha256' : ev.hcl.hashType === 2 ? 'sha384' : ev.hcl.hashType === 3 ? 'sha512' : undefined;
  if (!alg) throw new EvidenceFormatError(`Azure HCL hash type ${ev.hcl.hashType} is not SHA-256/384/512`);
  const digest = createHash(alg).update(ev.hcl.runtimeData).digest();
  const rd = snp.raw.reportData;
  if (Buffer.compare(digest, Buffer.from(rd.subarray(0, digest.length))) !== 0 || !isAllZero(rd.subarray(digest.length))) {
    throw new EvidenceSignatureError('Azure SNP report data is not the hash of the HCL runtime data: the runtime data (and its keys) were replaced');
  }
  checks.push({ check: 'azure.runtime_data', ok: true, detail: `SNP report data = ${alg.toUpperCase()}(HCL runtime data)` });

  const ak = akFromRuntime(ev.hcl.runtimeJson);
  let quoteOk = false;
  try {
    quoteOk = cryptoVerify('sha256', ev.quoteMessage, ak, ev.quoteSignature);
  } catch {
    quoteOk = false; // a key OpenSSL refuses for RSA-SHA256 verifies nothing
  }
  if (!quoteOk) {
    throw new EvidenceSignatureError('Azure TPM quote signature does not verify with HCLAkPub: the quote was modified or comes from another VM');
  }
  checks.push({ check: 'azure.tpm_quote_signature', ok: true, detail: 'TPM quote RSASSA-PKCS1-v1_5/SHA-256 verifies with HCLAkPub from the SNP-bound runtime data' });

  const sel = ev.quote.pcrSelection;
  if (sel.length !== 1 || sel[0]!.hash !== TPM_ALG_SHA256) throw new EvidenceFormatError('Azure TPM quote must select one SHA-256 PCR bank');
  const selected = sel[0]!.pcrs;
  if (selected.some((i) => i >= ev.pcrs.length || ev.pcrs[i]!.length !== 32)) {
    throw new EvidenceFormatError('Azure evidence lacks a 32-byte value for a PCR the quote selects');
  }
  const pcrDigest = createHash('sha256');
  for (const i of selected) pcrDigest.update(ev.pcrs[i]!);
  if (Buffer.compare(pcrDigest.digest(), Buffer.from(ev.quote.pcrDigest)) !== 0) {
    throw new EvidenceSignatureError('Azure PCR values do not hash to the quoted PCR digest: the PCR list was modified');
  }
  checks.push({ check: 'azure.pcr_digest', ok: true, detail: `PCRs ${selected[0]}..${selected[selected.length - 1]} hash to the quoted digest` });

  const base = snp.claims;
  const measurements: Record<string, string> = { ...base.measurements };
  for (const i of selected) measurements[`pcr${i}`] = hex(ev.pcrs[i]!);
  const vm = (ev.hcl.runtimeJson['vm-configuration'] ?? {}) as Record<string, unknown>;
  const platform: Record<string, string> = { ...base.platform };
  for (const [k, v] of Object.entries(vm)) platform[`vm.${k}`] = String(v);
  if (typeof ev.hcl.runtimeJson['user-data'] === 'string') platform.userData = ev.hcl.runtimeJson['user-data'];
  platform.snpReportData = base.reportData;
  const claims: Claims = {
    ...base,
    tee: 'azure-snp',
    measurements,
    // The caller's nonce lives in the TPM quote's extraData; the SNP report data only binds the runtime data.
    reportData: hex(ev.quote.extraData),
    platform,
  };
  return { tee: 'azure-snp', claims, raw: { ...ev, snp: snp.raw }, checks };
}
