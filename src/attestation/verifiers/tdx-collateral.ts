import type { X509Certificate } from 'node:crypto';
import { EvidenceChainError, EvidenceFormatError, EvidenceRevokedError, EvidenceSignatureError } from '../../errors.js';
import { hex } from '../bin.js';
import { checkCrls, commonName, parseCertificates, publicKeyOf, verifyChain, verificationTime } from '../certs.js';
import { TCB_STATUSES_BEST_FIRST, type Check, type TcbStatus } from '../types.js';
import { ecdsaVerifyRaw } from './ecdsa.js';
import type { PckExtensions, TdxQuote } from './tdx.js';

/** A PCS document and its signature, kept as the exact bytes Intel signed. */
export interface SignedJson {
  body: string;
  /** Hex r||s, ECDSA P-256/SHA-256, by the Intel SGX TCB Signing key. */
  signature: string;
}

/** Intel PCS collateral for a TDX quote. Every part is optional; what is given is checked. */
export interface TdxCollateral {
  tcbInfo?: SignedJson;
  qeIdentity?: SignedJson;
  /** DER CRLs: the PCK Platform/Processor CA CRL and the Root CA CRL. */
  crls: Uint8Array[];
  /** Issuer chains that come with the collateral (TCB Signing, PCK CA). */
  certificates: X509Certificate[];
}

export type { TcbStatus } from '../types.js';

/** Known statuses (best first); combineTcbStatus joins platform, QE and module. */
const STATUS_ORDER: readonly TcbStatus[] = TCB_STATUSES_BEST_FIRST;

export interface TdxCollateralResult {
  /**
   * Platform, QE and module status combined (combineTcbStatus), only when the whole collateral was given and
   * checked (TCB info, QE identity, a PCK CA CRL covering the PCK certificate and the root CA CRL);
   * otherwise NotEvaluated, since a status from part of the collateral can hide a revocation.
   */
  status: TcbStatus;
  /** The parts of the collateral that were not given; empty when the status is meaningful. */
  missing: string[];
  platformStatus: TcbStatus;
  qeStatus: TcbStatus;
  moduleStatus?: TcbStatus;
  tcbDate?: string;
  advisoryIds: string[];
  checks: Check[];
}

/** Intel's largest collateral documents (the processor CA CRL, TCB info) are tens of KiB. */
export const MAX_COLLATERAL_FILE = 1024 * 1024;

function fail(msg: string): never {
  throw new EvidenceFormatError(`TDX collateral: ${msg}`);
}

/**
 * Reads collateral files in the forms they are published: a dcap-qvl QuoteCollateralV3 JSON,
 * raw PCS bodies ({"tcbInfo":...,"signature":...} / {"enclaveIdentity":...}), DER CRLs, PEM chains.
 */
export function parseTdxCollateral(files: readonly { name: string; bytes: Uint8Array }[]): TdxCollateral {
  const out: TdxCollateral = { crls: [], certificates: [] };
  for (const { name, bytes } of files) {
    if (!(bytes instanceof Uint8Array)) fail(`${name} must be bytes`);
    if (bytes.length > MAX_COLLATERAL_FILE) fail(`${name} is ${bytes.length} bytes, over the ${MAX_COLLATERAL_FILE}-byte limit for one collateral file`);
    const text = Buffer.from(bytes).toString('utf8');
    const trimmed = text.trim();
    if (trimmed.startsWith('{')) {
      // PCS bodies: the signature covers the exact bytes of the inner value, so cut it out textually.
      const pcs = /^\{\s*"(tcbInfo|enclaveIdentity)"\s*:\s*([\s\S]*)\s*,\s*"signature"\s*:\s*"([0-9a-fA-F]+)"\s*\}$/.exec(trimmed);
      if (pcs) {
        const doc = { body: pcs[2]!, signature: pcs[3]! };
        if (pcs[1] === 'tcbInfo') out.tcbInfo = doc;
        else out.qeIdentity = doc;
        continue;
      }
      let j: Record<string, unknown>;
      try {
        j = JSON.parse(trimmed) as Record<string, unknown>;
      } catch (err) {
        throw new EvidenceFormatError(`TDX collateral ${name} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
      const str = (k: string): string | undefined => (typeof j[k] === 'string' ? (j[k] as string) : undefined);
      if (str('tcb_info') || str('qe_identity')) {
        const ti = str('tcb_info');
        const ts = str('tcb_info_signature');
        const qi = str('qe_identity');
        const qs = str('qe_identity_signature');
        if (ti && ts) out.tcbInfo = { body: ti, signature: ts };
        if (qi && qs) out.qeIdentity = { body: qi, signature: qs };
        for (const k of ['pck_crl', 'root_ca_crl']) {
          const v = str(k);
          if (v) out.crls.push(new Uint8Array(Buffer.from(v, /^[0-9a-fA-F]+$/.test(v) ? 'hex' : 'base64')));
        }
        for (const k of ['tcb_info_issuer_chain', 'qe_identity_issuer_chain', 'pck_crl_issuer_chain']) {
          const v = str(k);
          if (v) out.certificates.push(...parseCertificates(v, `${name} ${k}`));
        }
        continue;
      }
      fail(`${name} is JSON but neither a PCS tcbInfo/enclaveIdentity body nor a QuoteCollateralV3 object`);
    }
    if (text.includes('-----BEGIN CERTIFICATE-----')) {
      out.certificates.push(...parseCertificates(text, name));
      continue;
    }
    if (text.includes('-----BEGIN X509 CRL-----')) {
      const b64 = text.replace(/-----(BEGIN|END) X509 CRL-----|\s/g, '');
      out.crls.push(new Uint8Array(Buffer.from(b64, 'base64')));
      continue;
    }
    if (bytes[0] === 0x30) {
      out.crls.push(bytes);
      continue;
    }
    fail(`${name} is not a PCS JSON document, a PEM chain or a DER CRL`);
  }
  return out;
}

interface Ctx {
  quote: TdxQuote;
  pck: PckExtensions;
  pckPath: X509Certificate[];
  now: Date;
  /** Roots the collateral's TCB Signing certificate may chain to (not the PCK roots). */
  tcbSigningRoots: ReadonlySet<string>;
  extraCertificates: readonly X509Certificate[];
}

/**
 * Combines platform, QE and module statuses as Intel's QVL does: each status is a set of findings
 * (out of date, configuration needed, SW hardening needed), the result reports all of them, and
 * Revoked dominates. Out of date subsumes SW hardening (Intel has no status naming both). Picking the
 * "worst" by list position would turn ConfigurationNeeded + OutOfDate into OutOfDate, which a policy
 * allowing OutOfDate but not OutOfDateConfigurationNeeded would accept. NotEvaluated adds nothing.
 */
export function combineTcbStatus(...s: TcbStatus[]): TcbStatus {
  let outOfDate = false;
  let config = false;
  let hardening = false;
  for (const x of s) {
    if (x === 'Revoked') return 'Revoked';
    if (x === 'OutOfDate' || x === 'OutOfDateConfigurationNeeded') outOfDate = true;
    if (x === 'ConfigurationNeeded' || x === 'ConfigurationAndSWHardeningNeeded' || x === 'OutOfDateConfigurationNeeded') config = true;
    if (x === 'SWHardeningNeeded' || x === 'ConfigurationAndSWHardeningNeeded') hardening = true;
  }
  if (outOfDate) return config ? 'OutOfDateConfigurationNeeded' : 'OutOfDate';
  if (config) return hardening ? 'ConfigurationAndSWHardeningNeeded' : 'ConfigurationNeeded';
  return hardening ? 'SWHardeningNeeded' : 'UpToDate';
}

function asStatus(v: unknown, where: string): TcbStatus {
  if (typeof v === 'string' && (STATUS_ORDER as readonly string[]).includes(v)) return v as TcbStatus;
  return fail(`${where} has unknown tcbStatus ${JSON.stringify(v)}`);
}

function checkWindow(doc: Record<string, unknown>, what: string, now: Date): void {
  verificationTime(now);
  const issue = new Date(String(doc.issueDate));
  const next = new Date(String(doc.nextUpdate));
  if (Number.isNaN(issue.getTime()) || Number.isNaN(next.getTime())) fail(`${what} lacks issueDate/nextUpdate`);
  if (now < issue || now > next) {
    throw new EvidenceChainError(
      `TDX ${what} is valid ${issue.toISOString()} to ${next.toISOString()}, not at ${now.toISOString()}; fetch current collateral from Intel PCS or verify as of a time inside that window`,
    );
  }
}

function verifySigned(doc: SignedJson, what: string, ctx: Ctx, pool: X509Certificate[]): Record<string, unknown> {
  const candidates = pool.filter((c) => commonName(c) === 'Intel SGX TCB Signing');
  if (candidates.length === 0) throw new EvidenceChainError(`TDX ${what}: no "Intel SGX TCB Signing" certificate given; pass the issuer chain from the PCS response`);
  if (!/^[0-9a-fA-F]{128}$/.test(doc.signature)) fail(`${what} signature must be 64 bytes hex (r||s)`);
  const sig = Buffer.from(doc.signature, 'hex');
  // The signer is the candidate whose key verifies; its chain then decides whether it is trusted.
  const signer = candidates.find((c) => ecdsaVerifyRaw('sha256', publicKeyOf(c, 'TCB Signing'), Buffer.from(doc.body, 'utf8'), sig));
  if (!signer) {
    throw new EvidenceSignatureError(`TDX ${what} signature does not verify with the Intel SGX TCB Signing key: the collateral was modified`);
  }
  verifyChain(signer, pool, { now: ctx.now, trustedRoots: ctx.tcbSigningRoots, what: `TDX ${what} signer`, hint: 'the TCB Signing chain must lead to the Intel SGX Root CA' });
  try {
    const parsed = JSON.parse(doc.body) as unknown;
    if (typeof parsed !== 'object' || parsed === null) fail(`${what} is not a JSON object`);
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new EvidenceFormatError(`TDX ${what} is not valid JSON`, { cause: err });
  }
}

function svns(list: unknown, where: string): number[] {
  if (!Array.isArray(list) || list.length !== 16) fail(`${where} must list 16 components`);
  return list.map((c: unknown) => {
    const svn = (c as { svn?: unknown }).svn;
    if (typeof svn !== 'number') fail(`${where} component without a numeric svn`);
    return svn;
  });
}

function maskedEqual(a: Uint8Array, b: Uint8Array, mask: Uint8Array): boolean {
  if (a.length !== b.length || a.length !== mask.length) return false;
  for (let i = 0; i < a.length; i++) if ((a[i]! & mask[i]!) !== (b[i]! & mask[i]!)) return false;
  return true;
}

/** Strict hex: Buffer.from(..., 'hex') would silently drop a bad tail. */
function hexBytes(v: unknown, bytes: number, where: string): Uint8Array {
  if (typeof v !== 'string' || v.length !== bytes * 2 || !/^[0-9a-fA-F]*$/.test(v)) fail(`${where} must be ${bytes} bytes of hex`);
  return new Uint8Array(Buffer.from(v, 'hex'));
}

function checkModule(m: Record<string, unknown>, id: string, quote: TdxQuote): void {
  const mrSigner = hexBytes(m.mrsigner, 48, `TCB info ${id}.mrsigner`);
  if (Buffer.compare(mrSigner, quote.body.mrSignerSeam) !== 0) {
    throw new EvidenceChainError(`TDX module MRSIGNERSEAM ${hex(quote.body.mrSignerSeam)} is not ${id}'s ${hex(mrSigner)}: the TDX module is not Intel's`);
  }
  const attrs = hexBytes(m.attributes, 8, `TCB info ${id}.attributes`);
  const mask = hexBytes(m.attributesMask, 8, `TCB info ${id}.attributesMask`);
  if (!maskedEqual(quote.body.seamAttributes, attrs, mask)) {
    throw new EvidenceChainError(`TDX module SEAMATTRIBUTES ${hex(quote.body.seamAttributes)} do not match ${id}`);
  }
}

function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

/** Checks the collateral against the quote: signatures, windows, FMSPC, TCB levels, QE identity, CRLs. */
export async function evaluateTdxCollateral(c: TdxCollateral, ctx: Ctx): Promise<TdxCollateralResult> {
  const checks: Check[] = [];
  const pool = [...c.certificates, ...ctx.pckPath, ...ctx.extraCertificates];
  const result: TdxCollateralResult = { status: 'NotEvaluated', missing: [], platformStatus: 'NotEvaluated', qeStatus: 'NotEvaluated', advisoryIds: [], checks };

  if (c.tcbInfo) {
    const t = verifySigned(c.tcbInfo, 'TCB info', ctx, pool);
    checkWindow(t, 'TCB info', ctx.now);
    if (t.id !== 'TDX' || t.version !== 3) fail(`TCB info id ${String(t.id)} version ${String(t.version)} is not TDX version 3`);
    if (String(t.fmspc).toLowerCase() !== ctx.pck.fmspc) {
      throw new EvidenceChainError(`TDX TCB info is for FMSPC ${String(t.fmspc)}, the PCK certificate says ${ctx.pck.fmspc}; fetch the TCB info for this FMSPC`);
    }
    if (String(t.pceId).toLowerCase() !== ctx.pck.pceId) {
      throw new EvidenceChainError(`TDX TCB info is for PCEID ${String(t.pceId)}, the PCK certificate says ${ctx.pck.pceId}`);
    }
    checks.push({ check: 'tdx.tcb_info', ok: true, detail: `TCB info signed by Intel, valid at ${ctx.now.toISOString()}, FMSPC ${ctx.pck.fmspc}` });

    const tee = ctx.quote.body.teeTcbSvn;
    const moduleMajor = tee[1]!;
    // With a TDX module version (byte 1) > 0, bytes 0-1 are judged by the module identity instead.
    const from = moduleMajor > 0 && Array.isArray(t.tdxModuleIdentities) ? 2 : 0;
    const levels = Array.isArray(t.tcbLevels) ? (t.tcbLevels as Record<string, unknown>[]) : fail('TCB info has no tcbLevels');
    let platform: TcbStatus | undefined;
    for (const [i, level] of levels.entries()) {
      const tcb = (level.tcb ?? {}) as Record<string, unknown>;
      const sgx = svns(tcb.sgxtcbcomponents, `tcbLevels[${i}].sgxtcbcomponents`);
      const tdx = svns(tcb.tdxtcbcomponents, `tcbLevels[${i}].tdxtcbcomponents`);
      if (typeof tcb.pcesvn !== 'number') fail(`tcbLevels[${i}] lacks pcesvn`);
      const sgxOk = sgx.every((v, k) => ctx.pck.sgxComponents[k]! >= v) && ctx.pck.pceSvn >= tcb.pcesvn;
      if (!sgxOk) continue;
      if (!tdx.every((v, k) => k < from || tee[k]! >= v)) continue;
      platform = asStatus(level.tcbStatus, `tcbLevels[${i}]`);
      result.tcbDate = String(level.tcbDate);
      if (Array.isArray(level.advisoryIDs)) result.advisoryIds.push(...level.advisoryIDs.map(String));
      break;
    }
    if (!platform) {
      throw new EvidenceChainError('TDX platform TCB is below every level in the TCB info (TCB unrecognized); the platform needs a firmware update');
    }
    result.platformStatus = platform;
    checks.push({ check: 'tdx.tcb_level', ok: true, detail: `platform TCB level ${result.tcbDate}: ${platform}` });

    // The SEAM module's signer and attributes are pinned by tdxModule for every module version,
    // not only for the versions that also have a tdxModuleIdentities entry.
    const mod = t.tdxModule as Record<string, unknown> | undefined;
    if (typeof mod !== 'object' || mod === null) fail('TCB info lacks tdxModule (the TDX module signer and attributes)');
    checkModule(mod, 'tdxModule', ctx.quote);
    checks.push({ check: 'tdx.module', ok: true, detail: 'MRSIGNERSEAM and SEAMATTRIBUTES match the TCB info tdxModule' });

    if (from === 2) {
      const id = `TDX_${moduleMajor.toString(16).padStart(2, '0').toUpperCase()}`;
      const ident = (t.tdxModuleIdentities as Record<string, unknown>[]).find((m) => String(m.id).toUpperCase() === id);
      if (!ident) throw new EvidenceChainError(`TDX TCB info has no module identity ${id} for this TDX module`);
      checkModule(ident, id, ctx.quote);
      const mLevels = Array.isArray(ident.tcbLevels) ? (ident.tcbLevels as Record<string, unknown>[]) : [];
      const lvl = mLevels.find((l) => tee[0]! >= Number((l.tcb as Record<string, unknown> | undefined)?.isvsvn));
      if (!lvl) throw new EvidenceChainError(`TDX module SVN ${tee[0]} is below every ${id} level`);
      result.moduleStatus = asStatus(lvl.tcbStatus, `${id} tcbLevels`);
      checks.push({ check: 'tdx.module_identity', ok: true, detail: `${id} SVN ${tee[0]}: ${result.moduleStatus}` });
    }
  }

  if (c.qeIdentity) {
    const q = verifySigned(c.qeIdentity, 'QE identity', ctx, pool);
    checkWindow(q, 'QE identity', ctx.now);
    if (q.id !== 'TD_QE') fail(`QE identity id ${String(q.id)} is not TD_QE`);
    const qe = ctx.quote.qeReport;
    const problems: string[] = [];
    if (String(q.mrsigner).toLowerCase() !== hex(qe.mrSigner)) problems.push(`MRSIGNER ${hex(qe.mrSigner)} is not ${String(q.mrsigner)}`);
    if (q.isvprodid !== qe.isvProdId) problems.push(`ISVPRODID ${qe.isvProdId} is not ${String(q.isvprodid)}`);
    if (!maskedEqual(u32le(qe.miscSelect), Buffer.from(String(q.miscselect), 'hex').reverse(), Buffer.from(String(q.miscselectMask), 'hex').reverse())) {
      problems.push('MISCSELECT does not match');
    }
    if (!maskedEqual(qe.attributes, Buffer.from(String(q.attributes), 'hex'), Buffer.from(String(q.attributesMask), 'hex'))) {
      problems.push('ATTRIBUTES do not match');
    }
    if (problems.length) throw new EvidenceChainError(`TDX quoting enclave is not Intel's TD QE: ${problems.join('; ')}`);
    const levels = Array.isArray(q.tcbLevels) ? (q.tcbLevels as Record<string, unknown>[]) : [];
    const lvl = levels.find((l) => qe.isvSvn >= Number((l.tcb as Record<string, unknown> | undefined)?.isvsvn));
    if (!lvl) throw new EvidenceChainError(`TDX QE ISVSVN ${qe.isvSvn} is below every QE identity level`);
    result.qeStatus = asStatus(lvl.tcbStatus, 'QE identity tcbLevels');
    checks.push({ check: 'tdx.qe_identity', ok: true, detail: `QE identity signed by Intel; ISVSVN ${qe.isvSvn}: ${result.qeStatus}` });
  }

  // Each CRL must come from a CA of the verified PCK path (so it is anchored where the PCK is) and
  // covers the certificate that CA issued there: PCK CA CRL -> PCK leaf, root CA CRL -> PCK CA.
  const crls = checkCrls(c.crls, ctx.pckPath, { now: ctx.now, what: 'TDX PCK chain' });
  const coveredAt = crls.covered;
  for (const k of crls.checks) {
    checks.push({ check: 'tdx.crl', ok: true, detail: `CRL from ${k.issuer} valid and signed; ${k.covered} certificate(s) of the PCK chain checked, none revoked` });
  }

  // Revoked is never acceptable, whatever the policy or the rest of the collateral says.
  for (const [what, st] of [['platform TCB', result.platformStatus], ['quoting enclave', result.qeStatus], ['TDX module', result.moduleStatus]] as const) {
    if (st === 'Revoked') throw new EvidenceRevokedError(`TDX ${what} status is Revoked in Intel's collateral; this platform must not be trusted`);
  }
  if (!c.tcbInfo) result.missing.push('TCB info');
  if (!c.qeIdentity) result.missing.push('QE identity');
  if (!coveredAt.has(0)) result.missing.push('a PCK CA CRL covering the PCK certificate');
  // Every CA below the root is covered by its issuer's CRL (for Intel: the root CA CRL).
  for (let k = 1; k < ctx.pckPath.length - 1; k++) if (!coveredAt.has(k)) result.missing.push(`a CRL covering "${commonName(ctx.pckPath[k]!)}"`);
  result.status = result.missing.length === 0 ? combineTcbStatus(result.platformStatus, result.qeStatus, result.moduleStatus ?? 'UpToDate') : 'NotEvaluated';
  return result;
}
