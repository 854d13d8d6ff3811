import type { X509Certificate } from 'node:crypto';
import { InvalidArgumentError, SealedTensorsError, type ErrorCode } from '../errors.js';
import { validatePolicy, type Policy } from './policy/policy.js';
import { checkNow, evaluatePolicy, type Verdict } from './policy/evaluate.js';
import { TEE_TYPES, type Claims, type TeeType, type VerifiedEvidence, type VerifyOptions } from './types.js';
import { verifyAzureEvidence } from './verifiers/azure.js';
import { verifyNitroDocument } from './verifiers/nitro.js';
import { verifyNvidiaReport } from './verifiers/nvidia.js';
import { verifySimulatedEvidence } from './verifiers/simulated.js';
import { verifySnpReport } from './verifiers/snp.js';
import type { TdxCollateral } from './verifiers/tdx-collateral.js';
import { verifyTdxQuote } from './verifiers/tdx.js';

export interface VerifyEvidenceOptions extends VerifyOptions {
  /** Certificates from the caller: VCEK/VLEK and ASK/ARK for SNP, the GPU chain for NVIDIA, extra issuers. */
  certificates?: readonly X509Certificate[];
  /** Intel PCS collateral for TDX. */
  collateral?: TdxCollateral;
  /** AMD's ARK and ASK CRLs (DER) for snp and azure-snp: without them no revocation is checked. */
  crls?: readonly Uint8Array[];
}

/** Verifies evidence of any supported type; throws a typed error when a signature or chain fails. */
export async function verifyEvidence(type: TeeType, evidence: Uint8Array, opts: VerifyEvidenceOptions = {}): Promise<VerifiedEvidence> {
  const base: VerifyOptions = {};
  if (opts.now !== undefined) base.now = checkNow(opts.now)!;
  if (opts.trustedRoots) base.trustedRoots = opts.trustedRoots;
  const certificates = opts.certificates ?? [];
  switch (type) {
    case 'snp':
      return verifySnpReport(evidence, { ...base, certificates, ...(opts.crls ? { crls: opts.crls } : {}) });
    case 'tdx':
      return verifyTdxQuote(evidence, { ...base, certificates, ...(opts.collateral ? { collateral: opts.collateral } : {}) });
    case 'nitro':
      return verifyNitroDocument(evidence, base);
    case 'azure-snp':
      return verifyAzureEvidence(evidence, { ...base, certificates, ...(opts.crls ? { crls: opts.crls } : {}) });
    case 'nvidia':
      return verifyNvidiaReport(evidence, { ...base, certificates });
    case 'simulated':
      return verifySimulatedEvidence(evidence, base);
    default:
      throw new InvalidArgumentError(`evidence type must be one of ${TEE_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  }
}

export interface AppraiseOptions extends VerifyEvidenceOptions {
  /** Required: there is no default policy. A policy built in code is validated like a policy file. */
  policy: Policy;
  /**
   * The report data this call expects: the fresh nonce sent for this session (or bindReportData(nonce, key)),
   * at least 16 bytes. Required for an allowing verdict; a fixed value is not freshness.
   */
  expectedReportData: Uint8Array;
}

/** One answer for a broker or the CLI: verification and policy together, failures as data. */
export interface Appraisal {
  tee: TeeType;
  verified: boolean;
  claims: Claims | null;
  verdict: Verdict;
  /** The verified evidence when verification passed. */
  evidence?: VerifiedEvidence;
  /** Why verification failed, when it did. */
  error?: { code: ErrorCode; message: string };
}

const EVIDENCE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_CHAIN']);

/**
 * Verifies evidence and evaluates a policy. Evidence that does not verify gives `verified: false`
 * and a denying verdict whose reason is the error; other errors (bad arguments) are thrown.
 * Release a secret only when `verified && verdict.allowed`.
 */
export async function appraiseEvidence(type: TeeType, evidence: Uint8Array, opts: AppraiseOptions): Promise<Appraisal> {
  if (typeof opts !== 'object' || opts === null || opts.policy === undefined || opts.policy === null) {
    throw new InvalidArgumentError('appraiseEvidence needs options with a policy: there is no default policy (see docs/ATTESTATION.md for what one must state)');
  }
  const { policy: policyInput, expectedReportData, ...verifyOpts } = opts;
  checkNow(opts.now);
  // Validated before any evidence is looked at, so a bad policy fails the same way whatever the evidence.
  const policy = validatePolicy(policyInput);
  let verified: VerifiedEvidence;
  try {
    verified = await verifyEvidence(type, evidence, verifyOpts);
  } catch (err) {
    if (!(err instanceof SealedTensorsError) || !EVIDENCE_CODES.has(err.code)) throw err;
    const reason = `${err.code}: ${err.message}`;
    return {
      tee: type,
      verified: false,
      claims: null,
      verdict: { allowed: false, reasons: [reason], checks: [{ check: 'evidence', ok: false, detail: reason }] },
      error: { code: err.code, message: err.message },
    };
  }
  const verdict = evaluatePolicy(policy, verified.claims, { ...(opts.now ? { now: opts.now } : {}), ...(expectedReportData !== undefined ? { expectedReportData } : {}) });
  return { tee: verified.tee, verified: true, claims: verified.claims, verdict: { ...verdict, checks: [...verified.checks, ...verdict.checks] }, evidence: verified };
}
