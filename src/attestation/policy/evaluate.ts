import { constantTimeEqual } from '../../bytes.js';
import { InvalidArgumentError } from '../../errors.js';
import type { Check, Claims, TeeType } from '../types.js';
import { DEFAULT_CLOCK_SKEW_SECONDS, DEFAULT_MAX_AGE_SECONDS, DEFAULT_SNP_MIN_TCB, DEFAULT_TDX_TCB_STATUS, validatePolicy, type Policy } from './policy.js';

/** One piece of device (additional) evidence that verified, and the binding its report data must hold. */
export interface DeviceEvidenceInput {
  /** How reasons name it, e.g. `nvidia[0]`. */
  label: string;
  claims: Claims;
  /** The device binding (KBS: the 32-byte SPDM nonce), checked like expectedReportData. */
  expectedReportData: Uint8Array;
}

const DEVICE_NAMES: Partial<Record<TeeType, string>> = { nvidia: 'NVIDIA GPU' };

/** The devices a policy requires besides CPU evidence of `cpuTee`: the top level's and that section's. */
export function requiredDevices(policyInput: Policy, cpuTee: TeeType): TeeType[] {
  const policy = validatePolicy(policyInput);
  const section = Object.hasOwn(policy.tees, cpuTee) ? policy.tees[cpuTee] : undefined;
  return [...new Set([...(policy.requireDevices ?? []), ...(section?.requireDevices ?? [])])];
}

/**
 * Composite evidence: the devices a policy requires must each be present, and every device the
 * session presented is judged by its own section (measurements, debug, report data), like CPU
 * evidence. A device without a section is refused, as any TEE the policy does not list.
 */
export function evaluateDevices(policyInput: Policy, cpuTee: TeeType, devices: readonly DeviceEvidenceInput[], opts: { now?: Date } = {}): Verdict {
  const policy = validatePolicy(policyInput);
  const checks: Check[] = [];
  for (const t of requiredDevices(policy, cpuTee)) {
    const n = devices.filter((d) => d.claims.tee === t).length;
    const name = DEVICE_NAMES[t] ?? t;
    checks.push({
      check: `policy.requireDevices.${t}`,
      ok: n > 0,
      detail: n > 0
        ? `${n} ${name} evidence(s) presented, as the policy requires`
        : `the policy requires ${name} evidence (additional evidence bound to the same nonce) and the session presented none: the key goes only to a session with an attested ${name}`,
    });
  }
  for (const d of devices) {
    const v = evaluatePolicy(policy, d.claims, { expectedReportData: d.expectedReportData, ...(opts.now ? { now: opts.now } : {}) });
    for (const c of v.checks) checks.push({ ...c, check: `${d.label}.${c.check}` });
  }
  const reasons = checks.filter((c) => !c.ok).map((c) => `${c.check}: ${c.detail}`);
  return { allowed: reasons.length === 0, reasons, checks };
}

export interface Verdict {
  allowed: boolean;
  /** Why it was refused, one line per failed check; empty when allowed. */
  reasons: string[];
  /** Every check made, passed or failed. */
  checks: Check[];
}

export interface EvaluateOptions {
  /**
   * The report data this call expects: the fresh nonce the verifier sent (or bindReportData(nonce, key)),
   * at least 16 bytes. The evidence must hold it followed by zeros. Without it every verdict denies.
   */
  expectedReportData?: Uint8Array;
  /** Time to judge evidence age against; default now. */
  now?: Date;
}

/** Shorter than this, a nonce can be guessed or collected ahead of time. */
export const MIN_NONCE_BYTES = 16;

/** True when the evidence's report data is `expected` followed by zeros; compared in constant time. */
export function reportDataMatches(actualHex: string, expected: Uint8Array): boolean {
  const actual = new Uint8Array(Buffer.from(actualHex, 'hex'));
  if (expected.length === 0 || expected.length > actual.length) return false;
  const padded = new Uint8Array(actual.length);
  padded.set(expected);
  // Report data carries nonces and key hashes: compare in constant time.
  return constantTimeEqual(actual, padded);
}

/**
 * `now` must be a Date holding a time: an Invalid Date compares false with every bound, so it would
 * pass validity windows and ages by accident, and it makes verifiers throw a raw RangeError.
 */
export function checkNow(now: unknown): Date | undefined {
  if (now === undefined) return undefined;
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
    throw new InvalidArgumentError(`now must be a valid Date (or left out for the current time), got ${now instanceof Date ? 'an Invalid Date' : now === null ? 'null' : typeof now}`);
  }
  return now;
}

/**
 * The measurements that say which software runs, per TEE; a section must pin one of them to non-zero
 * values. Others (SNP hostData, TDX mrConfigId/RTMRs, Nitro pcr3) are zero or shared in any rented TEE,
 * and an all-zero value is what an unset field reads (no ID block, an unsigned enclave image).
 */
const IDENTITY: Readonly<Record<TeeType, (pinned: ReadonlySet<string>) => boolean>> = {
  snp: (p) => p.has('measurement') || p.has('idKeyDigest'),
  // The SNP measurement is Microsoft's paravisor, the same in every Azure CVM: the guest is in the vTPM PCRs.
  'azure-snp': (p) => [...p].some((n) => /^pcr[0-9]+$/.test(n)),
  // MRTD is the firmware (a cloud's TDVF is the same for every tenant); the kernel and its command line are in RTMR1/2.
  tdx: (p) => p.has('mrTd') && (p.has('rtmr1') || p.has('rtmr2')),
  nitro: (p) => p.has('pcr0') || p.has('pcr8'),
  nvidia: (p) => [...p].some((n) => /^m[1-9][0-9]*$/.test(n)),
  simulated: (p) => p.has('measurement'),
};
const IDENTITY_HINT: Readonly<Record<TeeType, string>> = {
  snp: 'measurement, or idKeyDigest for ID-block launches',
  'azure-snp': 'a vTPM PCR of your boot chain, e.g. pcr4',
  tdx: 'mrTd and rtmr1 or rtmr2',
  nitro: 'pcr0, or pcr8 for a signed image',
  nvidia: 'a measurement block m1..m64',
  simulated: 'measurement',
};
function pinsIdentity(tee: TeeType, measurements: [string, readonly string[]][]): boolean {
  const pinned = new Set(measurements.filter(([, allowed]) => allowed.every((h) => !/^(00)+$/.test(h))).map(([name]) => name));
  return Object.hasOwn(IDENTITY, tee) && IDENTITY[tee](pinned);
}

/** Claims come from a verifier; built in code they must still have the shape the checks read. */
function checkClaims(c: unknown): asserts c is Claims {
  const obj = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!obj(c)) throw new InvalidArgumentError('claims must be the object a verifier returns (VerifiedEvidence.claims)');
  const k = c as Record<string, unknown>;
  const bad = ['measurements', 'tcb', 'platform'].filter((f) => !obj(k[f]));
  if (typeof k.tee !== 'string' || typeof k.reportData !== 'string' || bad.length) {
    throw new InvalidArgumentError(`claims must be the object a verifier returns: ${[typeof k.tee !== 'string' ? 'tee' : '', typeof k.reportData !== 'string' ? 'reportData' : '', ...bad].filter(Boolean).join(', ')} missing or of the wrong type`);
  }
}

/** Own properties only: a policy naming "constructor" must not find Object.prototype.constructor. */
function ownValue<T>(o: Record<string, T>, k: string): T | undefined {
  return Object.hasOwn(o, k) ? o[k] : undefined;
}

/**
 * Judges verified claims against a policy; lists every check, never stops at the first failure.
 * The policy is validated here too (a policy built in code is held to the file rules), and the
 * validated copy is what is read.
 */
export function evaluatePolicy(policyInput: Policy, claims: Claims, opts: EvaluateOptions = {}): Verdict {
  const policy = validatePolicy(policyInput);
  if (typeof opts !== 'object' || opts === null) throw new InvalidArgumentError('evaluatePolicy options must be an object ({ expectedReportData, now })');
  checkClaims(claims);
  const checks: Check[] = [];
  const add = (check: string, ok: boolean, detail: string): void => void checks.push({ check, ok, detail });
  const now = checkNow(opts.now) ?? new Date();

  if (claims.simulated || claims.tee === 'simulated') {
    add('policy.simulated', policy.allowSimulated, policy.allowSimulated ? 'simulated evidence allowed by allowSimulated' : 'evidence is SIMULATED (software only) and the policy does not set allowSimulated');
  }
  const section = Object.hasOwn(policy.tees, claims.tee) ? policy.tees[claims.tee] : undefined;
  if (!section) {
    add('policy.tee', false, `policy has no section for "${claims.tee}" evidence; TEEs not listed are refused`);
  } else {
    add('policy.tee', true, `policy has a section for "${claims.tee}"`);
    const allowDebug = section.allowDebug === true;
    if (claims.debugAttested === false) {
      // The evidence cannot say whether it is in debug mode (NVIDIA: CC on vs DevTools). An unknown is not
      // "not debug": only a policy pinning every measurement it carries (to production values) settles it.
      const names = Object.keys(claims.measurements);
      const unpinned = names.filter((k) => !Object.hasOwn(section.measurements ?? {}, k));
      const pinned = names.length > 0 && unpinned.length === 0;
      const list = `${unpinned.slice(0, 8).join(', ')}${unpinned.length > 8 ? `, ... (${unpinned.length} in all)` : ''}`;
      add('policy.debug', pinned || allowDebug, pinned
        ? `"${claims.tee}" evidence does not attest its debug state; all ${names.length} measurements it carries are pinned, and those values must be production ones (NVIDIA: the RIMs for CC mode, not DevTools)`
        : allowDebug
          ? `"${claims.tee}" evidence does not attest its debug state; allowed by allowDebug`
          : `"${claims.tee}" evidence does not attest its debug state (NVIDIA: CC on vs DevTools mode); pin every measurement it carries to production values (unpinned: ${list || 'the evidence has none'}), or set allowDebug only for development`);
    } else {
      add('policy.debug', !claims.debug || allowDebug, claims.debug ? (allowDebug ? 'debug mode allowed by allowDebug' : 'evidence is from a debug-mode TEE (its memory is open to the host); set allowDebug only for development') : 'not in debug mode');
    }

    const measurements = Object.entries(section.measurements ?? {});
    if (measurements.length === 0) {
      add('policy.measurements', false, `the policy lists no measurements for "${claims.tee}": any software in such a TEE would pass; list the expected values (docs/ATTESTATION.md)`);
    } else if (!pinsIdentity(claims.tee, measurements)) {
      add('policy.measurements', false, `the policy pins no measurement that identifies the software for "${claims.tee}" (${IDENTITY_HINT[claims.tee]}, not all zeros): fields such as host data or config ids read the same in any rented TEE`);
    }
    for (const [name, allowed] of measurements) {
      const v = ownValue(claims.measurements, name);
      if (typeof v !== 'string') add(`policy.measurements.${name}`, false, `evidence has no measurement "${name}" (it has ${Object.keys(claims.measurements).join(', ') || 'none'})`);
      else add(`policy.measurements.${name}`, allowed.includes(v.toLowerCase()), allowed.includes(v.toLowerCase()) ? `${name} ${v} is allowed` : `${name} ${v} is not among the ${allowed.length} allowed value(s)`);
    }

    const snpLike = claims.tee === 'snp' || claims.tee === 'azure-snp';
    const minTcb: Record<string, number> = Object.create(null) as Record<string, number>;
    if (snpLike) {
      const product = ownValue(claims.platform, 'product') ?? '';
      const floor = ownValue(DEFAULT_SNP_MIN_TCB, product);
      if (floor) Object.assign(minTcb, floor);
      else if (!section.minTcb || Object.keys(section.minTcb).length === 0) {
        add('policy.minTcb', false, `no built-in minimum TCB for SEV-SNP product "${product}": state minTcb in the policy`);
      }
    }
    const builtIn: Record<string, number> = { ...minTcb };
    Object.assign(minTcb, section.minTcb ?? {});
    // minTcb names no product: numbers meant to lower one product's floor would lower every product's.
    const product = ownValue(claims.platform, 'product');
    const pinned = section.platform !== undefined && Object.hasOwn(section.platform, 'product') && section.platform.product!.every((p) => p === product);
    for (const [name, min] of Object.entries(minTcb)) {
      const v = ownValue(claims.tcb, name);
      const stated = section.minTcb !== undefined && Object.hasOwn(section.minTcb, name);
      const src = stated ? '' : ' (built-in floor; set minTcb to change it)';
      const floor = Object.hasOwn(builtIn, name) ? builtIn[name]! : undefined;
      if (typeof v !== 'number') add(`policy.minTcb.${name}`, false, `evidence has no numeric TCB component "${name}"`);
      else if (stated && floor !== undefined && v < floor && !pinned) {
        add(`policy.minTcb.${name}`, false, `${name} ${v} is below the built-in floor ${floor} for ${product}; a stated minTcb lowers it only in a section whose platform.product lists ${product} alone`);
      } else add(`policy.minTcb.${name}`, v >= min, v >= min ? `${name} ${v} >= ${min}${src}` : `${name} ${v} is below the minimum ${min}${src}; the platform needs a firmware update`);
    }

    if (claims.tee === 'tdx' || section.tcbStatus) {
      const allowed = section.tcbStatus ?? DEFAULT_TDX_TCB_STATUS;
      const src = section.tcbStatus ? '' : ' (default; set tcbStatus to change it)';
      const st = ownValue(claims.tcb, 'tcbStatus');
      if (typeof st !== 'string' || st === 'NotEvaluated') add('policy.tcbStatus', false, `the policy requires TCB status ${allowed.join(' or ')}${src} but no collateral was evaluated (pass collateral, CLI --collateral)`);
      // Revoked is refused whatever the list says: a revoked platform's keys may be in anyone's hands.
      else if (st === 'Revoked') add('policy.tcbStatus', false, 'TCB status is Revoked: never accepted');
      else add('policy.tcbStatus', allowed.includes(st), allowed.includes(st) ? `TCB status ${st} is allowed${src}` : `TCB status ${st} is not among ${allowed.join(', ')}${src}`);
    }

    const platform: Record<string, readonly string[]> = Object.create(null) as Record<string, readonly string[]>;
    // SEV-SNP: only VMPL 0 is the guest's most privileged level (Azure: the paravisor that signs the HCL report).
    if (snpLike) platform.vmpl = ['0'];
    Object.assign(platform, section.platform ?? {});
    for (const [name, allowed] of Object.entries(platform)) {
      const v = ownValue(claims.platform, name);
      const src = section.platform !== undefined && Object.hasOwn(section.platform, name) ? '' : ' (default; set platform.' + name + ' to change it)';
      add(`policy.platform.${name}`, v !== undefined && allowed.includes(v), v === undefined ? `evidence has no platform field "${name}"` : allowed.includes(v) ? `${name} ${v} is allowed${src}` : `${name} "${v}" is not among ${allowed.join(', ')}${src}`);
    }

    const expected = opts.expectedReportData;
    if (expected === undefined || expected === null) {
      add('policy.expectedReportData', false, 'no expected report data was given: pass the fresh nonce (or bindReportData value) with every call (CLI --report-data); without it old evidence replays');
    } else if (!(expected instanceof Uint8Array) || expected.length < MIN_NONCE_BYTES || expected.every((b) => b === 0)) {
      add('policy.expectedReportData', false, `the expected report data must be a fresh nonce of at least ${MIN_NONCE_BYTES} random bytes (not all zero); got ${expected instanceof Uint8Array ? `${expected.length} bytes` : typeof expected}`);
    } else {
      const ok = reportDataMatches(claims.reportData, expected);
      add('policy.expectedReportData', ok, ok ? 'report data equals the expected binding' : 'report data does not equal the expected binding (nonce/key): stale or replayed evidence');
    }

    if (claims.issuedAt !== undefined) {
      const skew = section.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS;
      const maxAge = section.maxAgeSeconds ?? DEFAULT_MAX_AGE_SECONDS;
      const at = Date.parse(claims.issuedAt);
      const age = (now.getTime() - at) / 1000;
      if (Number.isNaN(age)) add('policy.maxAge', false, `evidence timestamp "${claims.issuedAt}" is not a time`);
      else if (age < -skew) add('policy.maxAge', false, `evidence is dated ${claims.issuedAt}, ${Math.round(-age)} s in the future (clock skew allowed: ${skew} s)`);
      else add('policy.maxAge', age <= maxAge, age <= maxAge ? `evidence is ${Math.round(age)} s old (limit ${maxAge} s)` : `evidence is ${Math.round(age)} s old, over the ${maxAge} s limit`);
    } else if (section.maxAgeSeconds !== undefined) {
      add('policy.maxAge', false, `"${claims.tee}" evidence carries no timestamp; its freshness comes from the nonce in report data, so drop maxAgeSeconds`);
    }
  }
  const reasons = checks.filter((c) => !c.ok).map((c) => `${c.check}: ${c.detail}`);
  return { allowed: reasons.length === 0, reasons, checks };
}
