import { constantTimeEqual } from '../../bytes.js';
import type { Check, Claims } from '../types.js';
import type { Policy } from './policy.js';

export interface Verdict {
  allowed: boolean;
  /** Why it was refused, one line per failed check; empty when allowed. */
  reasons: string[];
  /** Every check made, passed or failed. */
  checks: Check[];
}

export interface EvaluateOptions {
  /** Time to judge evidence age against; default now. */
  now?: Date;
  /** The report data the caller expects (e.g. nonce || key hash), compared like policy reportData. */
  expectedReportData?: Uint8Array;
}

function reportDataMatches(actualHex: string, expected: Uint8Array): boolean {
  const actual = new Uint8Array(Buffer.from(actualHex, 'hex'));
  if (expected.length === 0 || expected.length > actual.length) return false;
  const padded = new Uint8Array(actual.length);
  padded.set(expected);
  // Report data carries nonces and key hashes: compare in constant time.
  return constantTimeEqual(actual, padded);
}

/** Judges verified claims against a policy; lists every check, never stops at the first failure. */
export function evaluatePolicy(policy: Policy, claims: Claims, opts: EvaluateOptions = {}): Verdict {
  const checks: Check[] = [];
  const add = (check: string, ok: boolean, detail: string): void => void checks.push({ check, ok, detail });
  const now = opts.now ?? new Date();

  if (claims.simulated || claims.tee === 'simulated') {
    add('policy.simulated', policy.allowSimulated, policy.allowSimulated ? 'simulated evidence allowed by allowSimulated' : 'evidence is SIMULATED (software only) and the policy does not set allowSimulated');
  }
  const section = policy.tees[claims.tee];
  if (!section) {
    add('policy.tee', false, `policy has no section for "${claims.tee}" evidence; TEEs not listed are refused`);
  } else {
    add('policy.tee', true, `policy has a section for "${claims.tee}"`);
    const allowDebug = section.allowDebug === true;
    add('policy.debug', !claims.debug || allowDebug, claims.debug ? (allowDebug ? 'debug mode allowed by allowDebug' : 'evidence is from a debug-mode TEE (its memory is open to the host); set allowDebug only for development') : 'not in debug mode');

    for (const [name, allowed] of Object.entries(section.measurements ?? {})) {
      const v = claims.measurements[name];
      if (v === undefined) add(`policy.measurements.${name}`, false, `evidence has no measurement "${name}" (it has ${Object.keys(claims.measurements).join(', ') || 'none'})`);
      else add(`policy.measurements.${name}`, allowed.includes(v.toLowerCase()), allowed.includes(v.toLowerCase()) ? `${name} ${v} is allowed` : `${name} ${v} is not among the ${allowed.length} allowed value(s)`);
    }
    for (const [name, min] of Object.entries(section.minTcb ?? {})) {
      const v = claims.tcb[name];
      if (typeof v !== 'number') add(`policy.minTcb.${name}`, false, `evidence has no numeric TCB component "${name}"`);
      else add(`policy.minTcb.${name}`, v >= min, v >= min ? `${name} ${v} >= ${min}` : `${name} ${v} is below the minimum ${min}; the platform needs a firmware update`);
    }
    if (section.tcbStatus) {
      const st = claims.tcb.tcbStatus;
      if (typeof st !== 'string' || st === 'NotEvaluated') add('policy.tcbStatus', false, 'policy requires a TCB status but no collateral was evaluated (pass --collateral)');
      else add('policy.tcbStatus', section.tcbStatus.includes(st), section.tcbStatus.includes(st) ? `TCB status ${st} is allowed` : `TCB status ${st} is not among ${section.tcbStatus.join(', ')}`);
    }
    for (const [name, allowed] of Object.entries(section.platform ?? {})) {
      const v = claims.platform[name];
      add(`policy.platform.${name}`, v !== undefined && allowed.includes(v), v === undefined ? `evidence has no platform field "${name}"` : allowed.includes(v) ? `${name} ${v} is allowed` : `${name} "${v}" is not among ${allowed.join(', ')}`);
    }
    let compared = false;
    if (section.reportData !== undefined) {
      compared = true;
      const ok = reportDataMatches(claims.reportData, new Uint8Array(Buffer.from(section.reportData, 'hex')));
      add('policy.reportData', ok, ok ? 'report data equals the policy value' : 'report data does not equal the policy value: the evidence is not bound to the expected nonce/key');
    }
    if (opts.expectedReportData !== undefined) {
      compared = true;
      const ok = reportDataMatches(claims.reportData, opts.expectedReportData);
      add('policy.expectedReportData', ok, ok ? 'report data equals the expected binding' : 'report data does not equal the expected binding (nonce/key): stale or replayed evidence');
    }
    if (section.requireReportData && !compared) {
      add('policy.requireReportData', false, 'policy requires a report-data binding but no expected value was given (policy reportData or the caller\'s expected report data)');
    }
    if (section.maxAgeSeconds !== undefined) {
      if (!claims.issuedAt) add('policy.maxAge', false, `"${claims.tee}" evidence carries no timestamp; bind freshness through report data instead of maxAgeSeconds`);
      else {
        const age = (now.getTime() - Date.parse(claims.issuedAt)) / 1000;
        const ok = age <= section.maxAgeSeconds && age >= -60;
        add('policy.maxAge', ok, ok ? `evidence is ${Math.round(age)} s old` : age < -60 ? `evidence is dated ${claims.issuedAt}, in the future` : `evidence is ${Math.round(age)} s old, over the ${section.maxAgeSeconds} s limit`);
      }
    }
  }
  const reasons = checks.filter((c) => !c.ok).map((c) => `${c.check}: ${c.detail}`);
  return { allowed: reasons.length === 0, reasons, checks };
}
