import { PolicyError } from '../../errors.js';
import { TCB_STATUSES_BEST_FIRST, TEE_TYPES, type TeeType } from '../types.js';

/**
 * An attestation policy, as data. What a TEE section does not mention is not checked, except:
 * debug is refused unless `allowDebug: true`; simulated evidence is refused unless the top level
 * says `allowSimulated: true`; a TEE without a section is refused.
 */
export interface TeePolicy {
  /** Allowed values per measurement name (claims.measurements), lower-case hex. */
  measurements?: Record<string, string[]>;
  /** Minimum per TCB component (claims.tcb), e.g. { "snp": 8, "microcode": 115 }. */
  minTcb?: Record<string, number>;
  /** Allowed values of TDX collateral status, e.g. ["UpToDate"]; needs collateral. */
  tcbStatus?: string[];
  /** Allowed values per platform field (claims.platform), e.g. { "product": ["Genoa"] }. */
  platform?: Record<string, string[]>;
  allowDebug?: boolean;
  /** Hex, at most 64 bytes: report data must start with it and be zero after it. */
  reportData?: string;
  /** Refuse evidence unless report data was compared with an expected value (policy or caller). */
  requireReportData?: boolean;
  /** Refuse evidence stamped longer ago than this (only evidence with a timestamp: Nitro, simulated). */
  maxAgeSeconds?: number;
}

export interface Policy {
  version: 1;
  allowSimulated: boolean;
  tees: Partial<Record<TeeType, TeePolicy>>;
}

/** Accepts any real TEE's verified evidence that is not in debug mode; refuses simulated evidence. */
export const DEFAULT_POLICY: Policy = Object.freeze({
  version: 1,
  allowSimulated: false,
  tees: { snp: {}, tdx: {}, nitro: {}, 'azure-snp': {}, nvidia: {} },
}) as Policy;

const TEE_KEYS = new Set(['measurements', 'minTcb', 'tcbStatus', 'platform', 'allowDebug', 'reportData', 'requireReportData', 'maxAgeSeconds']);
// A policy may accept any status but Revoked.
const TCB_STATUSES = new Set<string>(TCB_STATUSES_BEST_FIRST.filter((x) => x !== 'Revoked'));

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates a parsed policy; every problem is listed in one PolicyError, each with its JSON path. */
export function validatePolicy(input: unknown): Policy {
  const problems: string[] = [];
  const bad = (path: string, why: string): void => void problems.push(`${path}: ${why}`);
  if (!isObject(input)) throw new PolicyError('policy must be a JSON object with "version": 1 and "tees"');
  for (const k of Object.keys(input)) if (!['version', 'allowSimulated', 'tees'].includes(k)) bad(k, 'unknown key (allowed: version, allowSimulated, tees)');
  if (input.version !== 1) bad('version', 'must be 1');
  if (input.allowSimulated !== undefined && typeof input.allowSimulated !== 'boolean') bad('allowSimulated', 'must be true or false');
  const tees: Partial<Record<TeeType, TeePolicy>> = {};
  if (!isObject(input.tees)) bad('tees', 'must be an object keyed by TEE type');
  else {
    for (const [tee, section] of Object.entries(input.tees)) {
      const p = `tees.${tee}`;
      if (!(TEE_TYPES as readonly string[]).includes(tee)) {
        bad(p, `unknown TEE type (one of ${TEE_TYPES.join(', ')})`);
        continue;
      }
      if (!isObject(section)) {
        bad(p, 'must be an object');
        continue;
      }
      if (tee === 'simulated' && input.allowSimulated !== true) {
        bad(p, 'a simulated section needs "allowSimulated": true at the top level, said in so many words');
      }
      for (const k of Object.keys(section)) if (!TEE_KEYS.has(k)) bad(`${p}.${k}`, `unknown key (allowed: ${[...TEE_KEYS].join(', ')})`);
      const out: TeePolicy = {};
      const s = section;
      if (s.measurements !== undefined) {
        if (!isObject(s.measurements)) bad(`${p}.measurements`, 'must map a measurement name to a list of hex values');
        else {
          out.measurements = {};
          for (const [name, list] of Object.entries(s.measurements)) {
            if (!Array.isArray(list) || list.length === 0 || !list.every((h) => typeof h === 'string' && /^([0-9a-fA-F]{2})+$/.test(h))) {
              bad(`${p}.measurements.${name}`, 'must be a non-empty list of hex strings');
            } else out.measurements[name] = list.map((h: string) => h.toLowerCase());
          }
        }
      }
      if (s.minTcb !== undefined) {
        if (!isObject(s.minTcb)) bad(`${p}.minTcb`, 'must map a TCB component name to a minimum number');
        else {
          out.minTcb = {};
          for (const [name, v] of Object.entries(s.minTcb)) {
            if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(`${p}.minTcb.${name}`, 'must be a non-negative integer');
            else out.minTcb[name] = v;
          }
        }
      }
      if (s.tcbStatus !== undefined) {
        if (!Array.isArray(s.tcbStatus) || s.tcbStatus.length === 0 || !s.tcbStatus.every((x) => typeof x === 'string' && TCB_STATUSES.has(x))) {
          bad(`${p}.tcbStatus`, `must be a non-empty list of ${[...TCB_STATUSES].join(', ')}`);
        } else out.tcbStatus = s.tcbStatus as string[];
      }
      if (s.platform !== undefined) {
        if (!isObject(s.platform)) bad(`${p}.platform`, 'must map a platform field to a list of allowed strings');
        else {
          out.platform = {};
          for (const [name, list] of Object.entries(s.platform)) {
            if (!Array.isArray(list) || list.length === 0 || !list.every((x) => typeof x === 'string')) bad(`${p}.platform.${name}`, 'must be a non-empty list of strings');
            else out.platform[name] = list as string[];
          }
        }
      }
      if (s.allowDebug !== undefined) {
        if (typeof s.allowDebug !== 'boolean') bad(`${p}.allowDebug`, 'must be true or false');
        else out.allowDebug = s.allowDebug;
      }
      if (s.reportData !== undefined) {
        if (typeof s.reportData !== 'string' || !/^([0-9a-fA-F]{2}){1,64}$/.test(s.reportData)) bad(`${p}.reportData`, 'must be hex of 1 to 64 bytes');
        else out.reportData = s.reportData.toLowerCase();
      }
      if (s.requireReportData !== undefined) {
        if (typeof s.requireReportData !== 'boolean') bad(`${p}.requireReportData`, 'must be true or false');
        else out.requireReportData = s.requireReportData;
      }
      if (s.maxAgeSeconds !== undefined) {
        if (typeof s.maxAgeSeconds !== 'number' || !Number.isSafeInteger(s.maxAgeSeconds) || s.maxAgeSeconds <= 0) bad(`${p}.maxAgeSeconds`, 'must be a positive integer');
        else out.maxAgeSeconds = s.maxAgeSeconds;
      }
      tees[tee as TeeType] = out;
    }
  }
  if (problems.length) throw new PolicyError(`invalid policy: ${problems.join('; ')}; see docs/ATTESTATION.md for the schema`);
  return { version: 1, allowSimulated: input.allowSimulated === true, tees };
}

/** Parses and validates policy JSON text. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PolicyError(`${source} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  return validatePolicy(json);
}
