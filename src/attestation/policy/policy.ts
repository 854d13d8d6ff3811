import { PolicyError } from '../../errors.js';
import { TCB_STATUSES_BEST_FIRST, TEE_TYPES, type TeeType } from '../types.js';

/**
 * An attestation policy, as data. It denies by default: a TEE without a section is refused, and a
 * section allows evidence only when it lists the measurements to accept and the caller passes the
 * report data it expects (a fresh nonce) with every call. Debug is refused unless `allowDebug: true`;
 * simulated evidence is refused unless the top level says `allowSimulated: true`. Some checks have
 * defaults a section can tighten or loosen (see DEFAULT_SNP_MIN_TCB, the TDX status, VMPL, ages).
 */
export interface TeePolicy {
  /** Allowed values per measurement name (claims.measurements), lower-case hex. At least one is needed. */
  measurements?: Record<string, string[]>;
  /** Minimum per TCB component (claims.tcb), e.g. { "snp": 23, "microcode": 84 }; SEV-SNP has defaults. */
  minTcb?: Record<string, number>;
  /** Allowed TDX collateral statuses; default ["UpToDate"]; never Revoked. Needs collateral. */
  tcbStatus?: string[];
  /** Allowed values per platform field (claims.platform), e.g. { "product": ["Genoa"] }; SEV-SNP default vmpl ["0"]. */
  platform?: Record<string, string[]>;
  allowDebug?: boolean;
  /** Report data is always required; accepted (as true only) so older policy files still read. */
  requireReportData?: true;
  /** Refuse evidence stamped longer ago than this (evidence with a timestamp: Nitro, simulated); default 300. */
  maxAgeSeconds?: number;
  /** How far in the future an evidence timestamp may lie (clock skew); default 60. */
  clockSkewSeconds?: number;
  /** Devices that must come with evidence of this TEE (added to the top level's list); CPU sections only. */
  requireDevices?: TeeType[];
}

export interface Policy {
  version: 1;
  allowSimulated: boolean;
  tees: Partial<Record<TeeType, TeePolicy>>;
  /**
   * Device evidence every session must present besides its CPU evidence (composite evidence: e.g.
   * ["nvidia"], an attested GPU bound to the same nonce); default none. Each device is judged by
   * its own section under `tees`.
   */
  requireDevices?: TeeType[];
}

/** Evidence kinds that come as additional (device) evidence, never as a session's primary evidence. */
export const DEVICE_TEE_TYPES: readonly TeeType[] = Object.freeze(['nvidia']);

/** Evidence with a timestamp older than this is refused unless the section says otherwise. */
export const DEFAULT_MAX_AGE_SECONDS = 300;
/** Evidence dated further ahead of `now` than this is refused unless the section says otherwise. */
export const DEFAULT_CLOCK_SKEW_SECONDS = 60;
/** TDX collateral statuses accepted when a section does not list its own. */
export const DEFAULT_TDX_TCB_STATUS: readonly string[] = Object.freeze(['UpToDate']);
/**
 * SEV-SNP minimum TCB per product, applied to every component a section's minTcb does not name.
 * SNP firmware SPL: AMD-SB-3019 (CVE-2024-56161, February 2025) asks for 0x18 on Milan, 0x17 on Genoa.
 * Microcode SPL: the level of platforms running that firmware (Milan 0xDB at SEV firmware 1.55.29;
 * Genoa 0x54, the Azure Genoa vector at 1.55.40). Later bulletins raise them; a policy follows with
 * minTcb. Turin has no built-in floor: its sections must state minTcb or Turin evidence is refused.
 */
export const DEFAULT_SNP_MIN_TCB: Readonly<Record<string, Readonly<Record<string, number>>>> = Object.freeze({
  Milan: Object.freeze({ snp: 24, microcode: 219 }),
  Genoa: Object.freeze({ snp: 23, microcode: 84 }),
});

const TOP_KEYS = ['version', 'allowSimulated', 'tees', 'requireDevices'];
/** Upper bounds: beyond them "fresh" and "not in the future" stop meaning anything. */
export const MAX_CLOCK_SKEW_SECONDS = 600;
export const MAX_AGE_SECONDS_LIMIT = 86_400;

const TEE_KEYS = ['measurements', 'minTcb', 'tcbStatus', 'platform', 'allowDebug', 'requireReportData', 'maxAgeSeconds', 'clockSkewSeconds', 'requireDevices'];
// A policy may accept any status but Revoked.
const TCB_STATUSES = new Set<string>(TCB_STATUSES_BEST_FIRST.filter((x) => x !== 'Revoked'));
const HEX = /^([0-9a-fA-F]{2})+$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Own enumerable string-keyed entries only: inherited keys and accessors on a prototype are never read. */
function ownEntries(o: Record<string, unknown>): [string, unknown][] {
  return Object.keys(o).map((k) => [k, Object.getOwnPropertyDescriptor(o, k)?.value]);
}

function own(o: Record<string, unknown>, k: string): unknown {
  return Object.hasOwn(o, k) ? Object.getOwnPropertyDescriptor(o, k)?.value : undefined;
}

/** A map with no prototype: keys such as "__proto__" and "constructor" are plain entries. */
function dict<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

/** A requireDevices list: non-empty, device kinds only, each once; undefined (with a problem noted) if not. */
function deviceList(v: unknown, path: string, bad: (path: string, why: string) => void): TeeType[] | undefined {
  const ok = Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && DEVICE_TEE_TYPES.includes(x as TeeType)) && new Set(v).size === v.length;
  if (!ok) {
    bad(path, `must be a non-empty list of device kinds, each once (${DEVICE_TEE_TYPES.join(', ')})`);
    return undefined;
  }
  return Object.freeze([...(v as TeeType[])]) as TeeType[];
}

/**
 * Validates a policy, parsed from JSON or built in code, and returns a frozen copy with no prototypes
 * that the evaluator reads instead of the input. Every problem is listed in one PolicyError, each with
 * its JSON path. Only own properties count, so a key named __proto__ or constructor is an ordinary key.
 */
export function validatePolicy(input: unknown): Policy {
  const problems: string[] = [];
  const bad = (path: string, why: string): void => void problems.push(`${path}: ${why}`);
  if (!isObject(input)) throw new PolicyError('policy must be a JSON object with "version": 1 and "tees"');
  for (const k of Object.keys(input)) if (!TOP_KEYS.includes(k)) bad(k, `unknown key (allowed: ${TOP_KEYS.join(', ')})`);
  if (own(input, 'version') !== 1) bad('version', 'must be 1');
  const allowSimulated = own(input, 'allowSimulated');
  if (allowSimulated !== undefined && typeof allowSimulated !== 'boolean') bad('allowSimulated', 'must be true or false');
  const tees = dict<TeePolicy>();
  const teesIn = own(input, 'tees');
  if (!isObject(teesIn)) bad('tees', 'must be an object keyed by TEE type');
  else {
    for (const [tee, section] of ownEntries(teesIn)) {
      const p = `tees.${tee}`;
      if (!(TEE_TYPES as readonly string[]).includes(tee)) {
        bad(p, `unknown TEE type (one of ${TEE_TYPES.join(', ')})`);
        continue;
      }
      if (!isObject(section)) {
        bad(p, 'must be an object');
        continue;
      }
      if (tee === 'simulated' && allowSimulated !== true) {
        bad(p, 'a simulated section needs "allowSimulated": true at the top level, said in so many words');
      }
      for (const k of Object.keys(section)) {
        if (k === 'reportData') {
          bad(`${p}.reportData`, 'a fixed report-data value is not freshness: pass the nonce you sent with each call instead (expectedReportData, attest verify --report-data)');
        } else if (!TEE_KEYS.includes(k)) bad(`${p}.${k}`, `unknown key (allowed: ${TEE_KEYS.join(', ')})`);
      }
      const out: TeePolicy = {};
      const s = section;
      const measurements = own(s, 'measurements');
      if (measurements !== undefined) {
        if (!isObject(measurements)) bad(`${p}.measurements`, 'must map a measurement name to a list of hex values');
        else {
          const m = dict<string[]>();
          for (const [name, list] of ownEntries(measurements)) {
            if (!Array.isArray(list) || list.length === 0 || !list.every((h) => typeof h === 'string' && HEX.test(h))) {
              bad(`${p}.measurements.${name}`, 'must be a non-empty list of hex strings');
            } else m[name] = Object.freeze(list.map((h: string) => h.toLowerCase())) as string[];
          }
          out.measurements = Object.freeze(m);
        }
      }
      const minTcb = own(s, 'minTcb');
      if (minTcb !== undefined) {
        if (!isObject(minTcb)) bad(`${p}.minTcb`, 'must map a TCB component name to a minimum number');
        else {
          const m = dict<number>();
          for (const [name, v] of ownEntries(minTcb)) {
            if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(`${p}.minTcb.${name}`, 'must be a non-negative integer');
            else m[name] = v;
          }
          out.minTcb = Object.freeze(m);
        }
      }
      const tcbStatus = own(s, 'tcbStatus');
      if (tcbStatus !== undefined) {
        if (!Array.isArray(tcbStatus) || tcbStatus.length === 0 || !tcbStatus.every((x) => typeof x === 'string' && TCB_STATUSES.has(x))) {
          bad(`${p}.tcbStatus`, `must be a non-empty list of ${[...TCB_STATUSES].join(', ')} (Revoked is never accepted)`);
        } else out.tcbStatus = Object.freeze([...(tcbStatus as string[])]) as string[];
      }
      const platform = own(s, 'platform');
      if (platform !== undefined) {
        if (!isObject(platform)) bad(`${p}.platform`, 'must map a platform field to a list of allowed strings');
        else {
          const m = dict<string[]>();
          for (const [name, list] of ownEntries(platform)) {
            if (!Array.isArray(list) || list.length === 0 || !list.every((x) => typeof x === 'string')) bad(`${p}.platform.${name}`, 'must be a non-empty list of strings');
            // Azure's paravisor signs the HCL report at VMPL 0; a report from the guest's VMPL could carry
            // runtime data (and a vTPM key) of the guest's choosing, so no policy may widen it.
            else if (tee === 'azure-snp' && name === 'vmpl' && list.some((x) => x !== '0')) bad(`${p}.platform.vmpl`, 'Azure evidence is accepted from VMPL 0 only (the paravisor); drop the key or list only "0"');
            else m[name] = Object.freeze([...(list as string[])]) as string[];
          }
          out.platform = Object.freeze(m);
        }
      }
      const allowDebug = own(s, 'allowDebug');
      if (allowDebug !== undefined) {
        if (typeof allowDebug !== 'boolean') bad(`${p}.allowDebug`, 'must be true or false');
        else out.allowDebug = allowDebug;
      }
      const requireReportData = own(s, 'requireReportData');
      if (requireReportData !== undefined) {
        if (requireReportData !== true) bad(`${p}.requireReportData`, 'report data is always required (a fresh nonce per call); the key may only be true');
        else out.requireReportData = true;
      }
      for (const key of ['maxAgeSeconds', 'clockSkewSeconds'] as const) {
        const v = own(s, key);
        if (v === undefined) continue;
        const min = key === 'maxAgeSeconds' ? 1 : 0;
        const max = key === 'maxAgeSeconds' ? MAX_AGE_SECONDS_LIMIT : MAX_CLOCK_SKEW_SECONDS;
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
          bad(`${p}.${key}`, `must be an integer from ${min} to ${max} (seconds)${key === 'maxAgeSeconds' ? '; evidence older than a day is not fresh, rely on a nonce' : '; a larger skew accepts evidence dated ahead'}`);
        } else out[key] = v;
      }
      const requireDevices = own(s, 'requireDevices');
      if (requireDevices !== undefined) {
        if (DEVICE_TEE_TYPES.includes(tee as TeeType)) bad(`${p}.requireDevices`, 'belongs in a CPU TEE section or at the top level, not in a device\'s own section');
        else {
          const list = deviceList(requireDevices, `${p}.requireDevices`, bad);
          if (list) out.requireDevices = list;
        }
      }
      tees[tee as TeeType] = Object.freeze(out);
    }
  }
  const requireDevicesIn = own(input, 'requireDevices');
  const requireDevices = requireDevicesIn === undefined ? undefined : deviceList(requireDevicesIn, 'requireDevices', bad);
  // A required device is judged by its own section: without one every session would be refused.
  const required = new Set([...(requireDevices ?? []), ...Object.values(tees).flatMap((t) => t?.requireDevices ?? [])]);
  for (const d of required) if (!Object.hasOwn(tees, d)) bad(`tees.${d}`, `is missing: requireDevices names "${d}", and its evidence is judged by this section (measurements to pin)`);
  if (problems.length) throw new PolicyError(`invalid policy: ${problems.join('; ')}; see docs/ATTESTATION.md for the schema`);
  return Object.freeze({ version: 1, allowSimulated: allowSimulated === true, tees: Object.freeze(tees), ...(requireDevices ? { requireDevices } : {}) });
}

/**
 * The path of the first key that appears twice in one object of (already valid) JSON text, or undefined.
 * JSON.parse keeps the last of duplicates, so a file could show a reviewer one section and enforce another.
 */
function duplicateKey(text: string): string | undefined {
  // One frame per open object (the keys seen so far) or array (keys null), with its path.
  const stack: { keys: Set<string> | null; path: string }[] = [];
  let lastKey: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      // Decoded, so "a" and "\u0061" are the same key.
      const str = JSON.parse(text.slice(i, j + 1)) as string;
      i = j;
      let k = j + 1;
      while (k < text.length && ' \t\r\n'.includes(text[k]!)) k++;
      const top = stack[stack.length - 1];
      if (text[k] === ':' && top?.keys) {
        const path = top.path ? `${top.path}.${str}` : str;
        if (top.keys.has(str)) return path;
        top.keys.add(str);
        lastKey = path;
      }
    } else if (ch === '{' || ch === '[') {
      stack.push({ keys: ch === '{' ? new Set() : null, path: lastKey ?? stack[stack.length - 1]?.path ?? '' });
      lastKey = undefined;
    } else if (ch === '}' || ch === ']' || ch === ',') {
      if (ch !== ',') stack.pop();
      lastKey = undefined;
    }
  }
  return undefined;
}

/** Parses and validates policy JSON text; a key given twice in one object is an error. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PolicyError(`${source} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const dup = duplicateKey(text);
  if (dup !== undefined) throw new PolicyError(`${source}: duplicate key "${dup}": JSON keeps only the last one, so the file does not say one thing; remove one`);
  return validatePolicy(json);
}
