/** The kinds of evidence this library gathers and verifies. `simulated` is software only. */
export type TeeType = 'snp' | 'tdx' | 'nitro' | 'azure-snp' | 'nvidia' | 'simulated';

export const TEE_TYPES: readonly TeeType[] = ['snp', 'tdx', 'nitro', 'azure-snp', 'nvidia', 'simulated'];

/** One thing a verifier or a policy looked at, and what it found. */
export interface Check {
  check: string;
  ok: boolean;
  detail: string;
}

/**
 * Claims in one shape for every TEE, so a policy reads them without knowing the format.
 * Byte strings are lower-case hex.
 */
export interface Claims {
  tee: TeeType;
  /** True only for the software TEE; no policy accepts it unless it says so. */
  simulated: boolean;
  /** The primary launch measurement (SNP MEASUREMENT, TDX MRTD, Nitro PCR0, NVIDIA measurement digest). */
  measurement: string;
  /** Every measurement by name (mrTd, rtmr0..3, pcr0..15, ...). */
  measurements: Record<string, string>;
  /** The 64 bytes (Nitro: the nonce/user data) the caller bound into the hardware signature. */
  reportData: string;
  /** True in debug mode, and also whenever the evidence cannot say (then `debugAttested` is false). */
  debug: boolean;
  /**
   * False when the evidence carries no debug state (NVIDIA SPDM reports: CC on vs DevTools mode is not
   * in them). `debug` is then true by assumption; a policy allows such evidence only by pinning every
   * measurement it carries, or by allowDebug. Absent: `debug` was read from the evidence.
   */
  debugAttested?: boolean;
  /** SEV-SNP: the VMPL the report was requested from (0 is the most privileged). */
  vmpl?: number;
  /** Security versions by component name; numbers can be compared with a policy's minimums. */
  tcb: Record<string, number | string>;
  /** Platform identifiers (chip id, FMSPC, module id, ...). */
  platform: Record<string, string>;
  /** When the hardware stamped the evidence, if it does (Nitro); ISO 8601. */
  issuedAt?: string;
}

export interface VerifiedEvidence<Raw = unknown> {
  tee: TeeType;
  claims: Claims;
  /** The parsed structure, field by field, for callers that need more than the claims. */
  raw: Raw;
  /** The checks that passed, in order. A failing check throws instead. */
  checks: Check[];
}

/** Common verifier inputs: time and trust are parameters so old evidence verifies as of its date. */
export interface VerifyOptions {
  /** Verification time; default: now. */
  now?: Date;
  /** Trusted root fingerprints (SHA-256 of DER, hex); default: the pinned set for the TEE. */
  trustedRoots?: readonly string[];
}

/** Intel's TCB statuses (TCB info / QE identity), best first and Revoked worst; plus NotEvaluated when no collateral was given. */
export const TCB_STATUSES_BEST_FIRST = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'Revoked',
] as const;
export type TcbStatus = (typeof TCB_STATUSES_BEST_FIRST)[number] | 'NotEvaluated';
