/**
 * `tee-evidence` of the KBS attestation protocol, in the JSON shapes Trustee's clients send, decoded
 * into the bytes our verifiers read (and encoded back for the session side).
 *
 * Followed: confidential-containers/trustee @ 78962cd416dcc8a32f9377e0066a28fe21420f69 (2026-08-21)
 * with kbs-types 0.18 (`CompositeEvidence`), virtee/sev @ d487809 (the serde form of
 * `AttestationReport` and `CertTableEntry`, sev 7.1), confidential-containers/guest-components
 * @ 8246e5e (the attesters that produce these shapes). See docs/ATTESTATION.md, "Trustee's evidence
 * shapes".
 *
 * Pure: no I/O. Every malformed input is an EvidenceFormatError that names the member; stricter than
 * Trustee's serde (unknown members are refused, sizes are bounded), never looser.
 */
import { EvidenceFormatError } from '../errors.js';
import type { TeeType } from '../attestation/types.js';

/** The `tee` names this module decodes: Trustee's (kbs-types `Tee`) and our extensions. */
export type KbsTee = 'snp' | 'tdx' | 'az-snp-vtpm' | 'nitro' | 'simulated';
export const KBS_TEES: readonly KbsTee[] = ['snp', 'tdx', 'az-snp-vtpm', 'nitro', 'simulated'];

/** The verifier each `tee` name feeds. */
export const KBS_TEE_VERIFIER: Readonly<Record<KbsTee, TeeType>> = {
  snp: 'snp',
  tdx: 'tdx',
  'az-snp-vtpm': 'azure-snp',
  nitro: 'nitro',
  simulated: 'simulated',
};

/** Bounds on what a decoder accepts, in bytes after decoding unless said otherwise. */
export const EVIDENCE_LIMITS = {
  /** `additional_evidence`, in UTF-16 code units (a JSON string). */
  additionalEvidenceChars: 1 << 20,
  snpCertificates: 8,
  certificateBytes: 16 * 1024,
  /** A PEM VCEK (az-snp-vtpm v0), in characters. */
  pemChars: 32 * 1024,
  tdxQuoteBytes: 64 * 1024,
  tdxEventLogBytes: 1 << 20,
  hclReportBytes: 8 * 1024,
  tpmQuoteMessageBytes: 2048,
  tpmSignatureBytes: 1024,
  tpmPcrs: 24,
  /** Our extension types' `evidence` (Nitro attestation documents, simulated evidence). */
  extensionEvidenceBytes: 64 * 1024,
} as const;

export interface DecodedEvidence {
  /** The wire name the evidence came under. */
  tee: KbsTee;
  /** The verifier that reads `evidence`. */
  type: TeeType;
  /**
   * What `verifyEvidence(type, evidence)` reads: the 1184-byte SNP report, the TDX quote, our Azure
   * JSON `{report, vcek, quote: {message, signature, pcrs}}`, the Nitro document, the simulated evidence.
   */
  evidence: Uint8Array;
  /** DER certificates that came with the evidence (SNP `cert_chain`: VCEK/VLEK, ASK/ASVK, ARK). */
  certificates?: Uint8Array[];
  /**
   * `additional_evidence` exactly as received ('' when none, or for the bare forms): it is part of
   * the report-data binding, so it is kept as the string, not re-serialized.
   */
  additionalEvidence: string;
  /** TDX `cc_eventlog` (CCEL / AAEL). Carried, not verified: no event-log replay is done. */
  eventLog?: Uint8Array;
  /** Which form was read, e.g. `sev AttestationReport v3`, `az-snp-vtpm v2`; for logs and reports. */
  form: string;
}

// ---------------------------------------------------------------------------------------------
// JSON reading helpers: each names the member path in its error.

type Json = Record<string, unknown>;

function fail(path: string, what: string): never {
  throw new EvidenceFormatError(`${path} ${what}`);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return `a string of ${v.length} characters`;
  if (typeof v === 'number') return Number.isFinite(v) ? `the number ${v}` : 'a non-finite number';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

/** A plain object whose members are all in `required` or `optional`; the required ones present. */
function object(v: unknown, path: string, required: readonly string[], optional: readonly string[] = []): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, `must be a JSON object, got ${describe(v)}`);
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) fail(path, 'must be a plain JSON object');
  const keys = Object.keys(v);
  for (const k of keys) {
    if (!required.includes(k) && !optional.includes(k)) {
      fail(`${path}.${k.length > 64 ? `${k.slice(0, 64)}…` : k}`, `is not a member of this object (expected ${[...required, ...optional].join(', ')})`);
    }
  }
  for (const k of required) if (!Object.hasOwn(v, k)) fail(`${path}.${k}`, 'is missing');
  return v as Json;
}

function uint(v: unknown, path: string, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    fail(path, `must be an integer from 0 to ${max}, got ${describe(v)}`);
  }
  return v;
}

const u8 = (v: unknown, path: string): number => uint(v, path, 0xff);
const u32 = (v: unknown, path: string): number => uint(v, path, 0xffffffff);
/** u64 as a JSON number: only values a JS number holds exactly (up to 2^53 - 1) can be read back exactly. */
function u64(v: unknown, path: string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v > Number.MAX_SAFE_INTEGER) {
    fail(path, `is above 2^53 - 1: a u64 this large does not survive JSON number parsing exactly, so it cannot be checked`);
  }
  return uint(v, path, Number.MAX_SAFE_INTEGER);
}

/** Option<T> in serde: absent or null is None. */
function optional<T>(o: Json, key: string, read: (v: unknown, path: string) => T, path: string): T | undefined {
  const v = o[key];
  return v === undefined || v === null ? undefined : read(v, `${path}.${key}`);
}

function string(v: unknown, path: string, maxChars: number): string {
  if (typeof v !== 'string') fail(path, `must be a string, got ${describe(v)}`);
  if (v.length > maxChars) fail(path, `is ${v.length} characters, over the limit of ${maxChars}`);
  return v;
}

/** A JSON array of numbers 0..255 (serde's Vec<u8> / [u8; N]). */
function byteArray(v: unknown, path: string, size: { exact?: number; max?: number; min?: number }): Uint8Array {
  if (!Array.isArray(v)) fail(path, `must be an array of bytes, got ${describe(v)}`);
  if (size.exact !== undefined && v.length !== size.exact) fail(path, `must hold exactly ${size.exact} bytes, got ${v.length}`);
  if (size.max !== undefined && v.length > size.max) fail(path, `holds ${v.length} bytes, over the limit of ${size.max}`);
  if (size.min !== undefined && v.length < size.min) fail(path, `must hold at least ${size.min} byte(s), got ${v.length}`);
  const out = new Uint8Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const b: unknown = v[i];
    if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b > 255) fail(`${path}[${i}]`, `must be a byte (integer 0 to 255), got ${describe(b)}`);
    out[i] = b;
  }
  return out;
}

const B64_STD = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const B64_URL = /^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$/;

function checkSize(n: number, path: string, maxBytes: number, minBytes: number): void {
  if (n > maxBytes) fail(path, `decodes to ${n} bytes, over the limit of ${maxBytes}`);
  if (n < minBytes) fail(path, minBytes === 1 ? 'is empty' : `must decode to at least ${minBytes} bytes, got ${n}`);
}

/** Standard base64 with padding (Rust base64 STANDARD), canonical: unused bits must be zero. */
function base64Std(v: unknown, path: string, maxBytes: number, minBytes = 1): Uint8Array {
  const s = string(v, path, Math.ceil(maxBytes / 3) * 4);
  if (!B64_STD.test(s)) fail(path, 'must be standard base64 with padding (A-Z a-z 0-9 + /, length a multiple of 4)');
  const bytes = Buffer.from(s, 'base64');
  if (bytes.toString('base64') !== s) fail(path, 'is not canonical base64 (non-zero bits after the last byte)');
  checkSize(bytes.length, path, maxBytes, minBytes);
  return new Uint8Array(bytes);
}

/** URL-safe base64, padded or not (serde_with Base64<UrlSafe>), canonical. */
function base64Url(v: unknown, path: string, maxBytes: number, minBytes = 1): Uint8Array {
  const s = string(v, path, Math.ceil(maxBytes / 3) * 4);
  if (!B64_URL.test(s)) fail(path, 'must be URL-safe base64 (A-Z a-z 0-9 - _, optional = padding)');
  const bytes = Buffer.from(s, 'base64url');
  if (bytes.toString('base64url') !== s.replace(/=+$/, '')) fail(path, 'is not canonical base64 (non-zero bits after the last byte)');
  checkSize(bytes.length, path, maxBytes, minBytes);
  return new Uint8Array(bytes);
}

/** Hex, either case (serde_with Hex). */
function hexBytes(v: unknown, path: string, maxBytes: number, exact?: number): Uint8Array {
  const s = string(v, path, maxBytes * 2);
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(s)) fail(path, 'must be hex with an even number of digits');
  const bytes = new Uint8Array(Buffer.from(s, 'hex'));
  if (exact !== undefined && bytes.length !== exact) fail(path, `must be ${exact} bytes, got ${bytes.length}`);
  if (bytes.length === 0) fail(path, 'is empty');
  return bytes;
}

/** The outer DER SEQUENCE of a certificate must span the bytes exactly; the verifier parses the rest. */
function derCertificate(der: Uint8Array, path: string): Uint8Array {
  let len = -1;
  let header = 0;
  if (der.length >= 2 && der[0] === 0x30) {
    const l0 = der[1]!;
    if (l0 < 0x80) [len, header] = [l0, 2];
    else if (l0 === 0x81 && der.length >= 3) [len, header] = [der[2]!, 3];
    else if (l0 === 0x82 && der.length >= 4) [len, header] = [(der[2]! << 8) | der[3]!, 4];
  }
  if (len < 0 || header + len !== der.length) fail(path, 'is not a DER certificate (one SEQUENCE spanning all its bytes)');
  return der;
}

function pemCertificate(v: unknown, path: string): Uint8Array {
  const s = string(v, path, EVIDENCE_LIMITS.pemChars);
  const m = /^\s*-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)\r?\n?-----END CERTIFICATE-----\s*$/.exec(s);
  if (!m) fail(path, 'must be one PEM CERTIFICATE block');
  return derCertificate(base64Std(m[1]!.replace(/\r?\n/g, ''), path, EVIDENCE_LIMITS.certificateBytes), path);
}

// ---------------------------------------------------------------------------------------------
// SEV-SNP: the sev crate's serde form of AttestationReport, rebuilt into the firmware's bytes.

/** ATTESTATION_REPORT size and signed length (SEV-SNP firmware ABI). */
const SNP_REPORT_SIZE = 1184;
const SNP_SIGNED_LENGTH = 0x2a0;

type SnpGeneration = 'Milan' | 'Genoa' | 'Turin';
type TcbJson = { fmc?: number; bootloader: number; tee: number; snp: number; microcode: number };

/** sev's `Generation::identify_cpu`: family 19h models 0-Fh Milan, 10h-1Fh and A0h-AFh Genoa; 1Ah models 0-11h Turin. */
function generationOf(family: number, model: number): SnpGeneration | undefined {
  if (family === 0x19 && model <= 0x0f) return 'Milan';
  if (family === 0x19 && ((model >= 0x10 && model <= 0x1f) || (model >= 0xa0 && model <= 0xaf))) return 'Genoa';
  if (family === 0x1a && model <= 0x11) return 'Turin';
  return undefined;
}

/**
 * Version 2 reports have no CPUID: sev guesses the TCB layout from CHIP_ID (Turin's is 8 bytes,
 * zero-extended); a masked (all-zero) CHIP_ID leaves it unknown, and sev refuses too.
 */
function generationOfV2(chipId: Uint8Array, path: string): SnpGeneration {
  if (chipId.every((b) => b === 0)) fail(path, 'is a version 2 report with a masked (zero) chip_id: its TCB layout cannot be told, so its bytes cannot be rebuilt');
  return chipId.subarray(8).every((b) => b === 0) ? 'Turin' : 'Genoa';
}

function readTcb(v: unknown, path: string): TcbJson {
  const o = object(v, path, ['bootloader', 'tee', 'snp', 'microcode'], ['fmc']);
  const tcb: TcbJson = { bootloader: u8(o.bootloader, `${path}.bootloader`), tee: u8(o.tee, `${path}.tee`), snp: u8(o.snp, `${path}.snp`), microcode: u8(o.microcode, `${path}.microcode`) };
  const fmc = optional(o, 'fmc', u8, path);
  if (fmc !== undefined) tcb.fmc = fmc;
  return tcb;
}

/** TCB_VERSION bytes: Milan/Genoa [bl, tee, 0, 0, 0, 0, snp, ucode]; Turin [fmc, bl, tee, snp, 0, 0, 0, ucode]. */
function tcbBytes(t: TcbJson, gen: SnpGeneration, path: string): number[] {
  if (gen === 'Turin') {
    if (t.fmc === undefined) fail(`${path}.fmc`, 'must be a number for a Turin report (its TCB has an FMC field)');
    return [t.fmc, t.bootloader, t.tee, t.snp, 0, 0, 0, t.microcode];
  }
  if (t.fmc !== undefined) fail(`${path}.fmc`, `must be null for a ${gen} report (only Turin TCBs have an FMC field)`);
  return [t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode];
}

function tcbJson(b: Uint8Array, gen: SnpGeneration): Omit<TcbJson, 'fmc'> & { fmc: number | null } {
  return gen === 'Turin'
    ? { fmc: b[0]!, bootloader: b[1]!, tee: b[2]!, snp: b[3]!, microcode: b[7]! }
    : { fmc: null, bootloader: b[0]!, tee: b[1]!, snp: b[6]!, microcode: b[7]! };
}

const SNP_MEMBERS = [
  'version', 'guest_svn', 'policy', 'family_id', 'image_id', 'vmpl', 'sig_algo', 'current_tcb', 'plat_info', 'key_info',
  'report_data', 'measurement', 'host_data', 'id_key_digest', 'author_key_digest', 'report_id', 'report_id_ma', 'reported_tcb',
  'chip_id', 'committed_tcb', 'current', 'committed', 'launch_tcb', 'signature',
] as const;
const SNP_OPTIONAL = ['cpuid_fam_id', 'cpuid_mod_id', 'cpuid_step', 'launch_mit_vector', 'current_mit_vector'] as const;
const SNP_BYTE_FIELDS: readonly [string, number, number][] = [
  ['family_id', 0x10, 16],
  ['image_id', 0x20, 16],
  ['report_data', 0x50, 64],
  ['measurement', 0x90, 48],
  ['host_data', 0xc0, 32],
  ['id_key_digest', 0xe0, 48],
  ['author_key_digest', 0x110, 48],
  ['report_id', 0x140, 32],
  ['report_id_ma', 0x160, 32],
  ['chip_id', 0x1a0, 64],
];
const SNP_TCB_FIELDS: readonly [string, number][] = [
  ['current_tcb', 0x38],
  ['reported_tcb', 0x180],
  ['committed_tcb', 0x1e0],
  ['launch_tcb', 0x1f0],
];

/**
 * Rebuilds the 1184-byte ATTESTATION_REPORT from sev's serde form, laid out as sev's encoder does
 * for the report's version (2: no CPUID; 3 and 4: CPUID; 5: also the mitigation vectors), with
 * reserved bytes zero. The signature then verifies only if every field came through unchanged.
 */
export function snpReportFromJson(v: unknown, path = 'attestation_report'): Uint8Array {
  const o = object(v, path, SNP_MEMBERS, SNP_OPTIONAL);
  const version = u32(o.version, `${path}.version`);
  if (version < 2 || version > 5) fail(`${path}.version`, `is ${version}; report versions 2 to 5 are supported`);
  const out = new Uint8Array(SNP_REPORT_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(0x00, version, true);
  view.setUint32(0x04, u32(o.guest_svn, `${path}.guest_svn`), true);
  view.setBigUint64(0x08, BigInt(u64(o.policy, `${path}.policy`)), true);
  view.setUint32(0x30, u32(o.vmpl, `${path}.vmpl`), true);
  view.setUint32(0x34, u32(o.sig_algo, `${path}.sig_algo`), true);
  view.setBigUint64(0x40, BigInt(u64(o.plat_info, `${path}.plat_info`)), true);
  view.setUint32(0x48, u32(o.key_info, `${path}.key_info`), true);
  for (const [name, at, n] of SNP_BYTE_FIELDS) out.set(byteArray(o[name], `${path}.${name}`, { exact: n }), at);

  const fam = optional(o, 'cpuid_fam_id', u8, path);
  const mod = optional(o, 'cpuid_mod_id', u8, path);
  const step = optional(o, 'cpuid_step', u8, path);
  let gen: SnpGeneration;
  if (version === 2) {
    if (fam !== undefined || mod !== undefined || step !== undefined) fail(`${path}.cpuid_fam_id`, 'and the other CPUID members must be null in a version 2 report (it has no CPUID fields)');
    gen = generationOfV2(out.subarray(0x1a0, 0x1e0), `${path}.chip_id`);
  } else {
    if (fam === undefined || mod === undefined || step === undefined) fail(`${path}.cpuid_fam_id`, `and cpuid_mod_id, cpuid_step must be present in a version ${version} report`);
    const g = generationOf(fam, mod);
    if (!g) fail(`${path}.cpuid_fam_id`, `/cpuid_mod_id 0x${fam.toString(16)}/0x${mod.toString(16)} is not a known SEV-SNP processor (Milan, Genoa, Turin)`);
    gen = g;
    out[0x188] = fam;
    out[0x189] = mod;
    out[0x18a] = step;
  }
  for (const [name, at] of SNP_TCB_FIELDS) out.set(tcbBytes(readTcb(o[name], `${path}.${name}`), gen, `${path}.${name}`), at);

  for (const [name, at] of [['current', 0x1e8], ['committed', 0x1ec]] as const) {
    const p = `${path}.${name}`;
    const ver = object(o[name], p, ['major', 'minor', 'build']);
    out.set([u8(ver.build, `${p}.build`), u8(ver.minor, `${p}.minor`), u8(ver.major, `${p}.major`)], at);
  }

  const launchMit = optional(o, 'launch_mit_vector', u64, path);
  const currentMit = optional(o, 'current_mit_vector', u64, path);
  if (version >= 5) {
    if (launchMit === undefined || currentMit === undefined) fail(`${path}.launch_mit_vector`, 'and current_mit_vector must be present in a version 5 report');
    view.setBigUint64(0x1f8, BigInt(launchMit), true);
    view.setBigUint64(0x200, BigInt(currentMit), true);
  } else if (launchMit !== undefined || currentMit !== undefined) {
    fail(`${path}.launch_mit_vector`, `and current_mit_vector must be null in a version ${version} report (they exist from version 5)`);
  }

  const sig = object(o.signature, `${path}.signature`, ['r', 's']);
  out.set(byteArray(sig.r, `${path}.signature.r`, { exact: 72 }), SNP_SIGNED_LENGTH);
  out.set(byteArray(sig.s, `${path}.signature.s`, { exact: 72 }), SNP_SIGNED_LENGTH + 72);
  return out;
}

/** Byte ranges sev writes as zero (reserved in the ABI) for a report version: bytes there cannot be carried in JSON. */
function snpZeroRanges(version: number): [number, number][] {
  return [
    [0x4c, 0x50],
    [version >= 3 ? 0x18b : 0x188, 0x1a0],
    [0x1eb, 0x1ec],
    [0x1ef, 0x1f0],
    [version >= 5 ? 0x208 : 0x1f8, SNP_SIGNED_LENGTH],
    [SNP_SIGNED_LENGTH + 144, SNP_REPORT_SIZE],
  ];
}

/**
 * The sev crate's serde form of a 1184-byte report (what guest-components' SNP attester sends), for
 * a session that talks to a Trustee KBS. Refuses what sev could not carry: unknown versions or
 * processors, non-zero reserved bytes, u64 fields above 2^53 - 1.
 */
export function snpReportToJson(report: Uint8Array): Record<string, unknown> {
  if (!(report instanceof Uint8Array) || report.length !== SNP_REPORT_SIZE) {
    throw new EvidenceFormatError(`SEV-SNP report must be ${SNP_REPORT_SIZE} bytes, got ${report instanceof Uint8Array ? report.length : typeof report}`);
  }
  const view = new DataView(report.buffer, report.byteOffset, report.byteLength);
  const version = view.getUint32(0, true);
  if (version < 2 || version > 5) throw new EvidenceFormatError(`SEV-SNP report version ${version} is not supported (2 to 5 are)`);
  for (const [from, to] of snpZeroRanges(version)) {
    const at = report.subarray(from, to).findIndex((b) => b !== 0);
    if (at >= 0) throw new EvidenceFormatError(`SEV-SNP report has a non-zero reserved byte at offset 0x${(from + at).toString(16)}: the JSON form cannot carry it`);
  }
  const u64At = (at: number, name: string): number => {
    const x = view.getBigUint64(at, true);
    if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new EvidenceFormatError(`SEV-SNP ${name} 0x${x.toString(16)} is above 2^53 - 1 and cannot be written as an exact JSON number here`);
    return Number(x);
  };
  const bytes = (at: number, n: number): number[] => [...report.subarray(at, at + n)];
  let gen: SnpGeneration;
  if (version === 2) {
    gen = generationOfV2(report.subarray(0x1a0, 0x1e0), 'SEV-SNP report chip_id');
  } else {
    const g = generationOf(report[0x188]!, report[0x189]!);
    if (!g) throw new EvidenceFormatError(`SEV-SNP report CPUID family 0x${report[0x188]!.toString(16)} model 0x${report[0x189]!.toString(16)} is not Milan, Genoa or Turin`);
    gen = g;
  }
  const tcb = (at: number) => tcbJson(report.subarray(at, at + 8), gen);
  const ver = (at: number) => ({ major: report[at + 2]!, minor: report[at + 1]!, build: report[at]! });
  return {
    version,
    guest_svn: view.getUint32(0x04, true),
    policy: u64At(0x08, 'POLICY'),
    family_id: bytes(0x10, 16),
    image_id: bytes(0x20, 16),
    vmpl: view.getUint32(0x30, true),
    sig_algo: view.getUint32(0x34, true),
    current_tcb: tcb(0x38),
    plat_info: u64At(0x40, 'PLATFORM_INFO'),
    key_info: view.getUint32(0x48, true),
    report_data: bytes(0x50, 64),
    measurement: bytes(0x90, 48),
    host_data: bytes(0xc0, 32),
    id_key_digest: bytes(0xe0, 48),
    author_key_digest: bytes(0x110, 48),
    report_id: bytes(0x140, 32),
    report_id_ma: bytes(0x160, 32),
    reported_tcb: tcb(0x180),
    cpuid_fam_id: version >= 3 ? report[0x188]! : null,
    cpuid_mod_id: version >= 3 ? report[0x189]! : null,
    cpuid_step: version >= 3 ? report[0x18a]! : null,
    chip_id: bytes(0x1a0, 64),
    committed_tcb: tcb(0x1e0),
    current: ver(0x1e8),
    committed: ver(0x1ec),
    launch_tcb: tcb(0x1f0),
    launch_mit_vector: version >= 5 ? u64At(0x1f8, 'LAUNCH_MIT_VECTOR') : null,
    current_mit_vector: version >= 5 ? u64At(0x200, 'CURRENT_MIT_VECTOR') : null,
    signature: { r: bytes(SNP_SIGNED_LENGTH, 72), s: bytes(SNP_SIGNED_LENGTH + 72, 72) },
  };
}

/** sev's CertType: unit variants as strings, OTHER(uuid) as {"OTHER": uuid}. */
export type SnpCertType = 'VCEK' | 'VLEK' | 'ASK' | 'ARK';
const SNP_CERT_TYPES: readonly string[] = ['VCEK', 'VLEK', 'ASK', 'ARK'];
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

function decodeSnp(primary: unknown, path: string): Pick<DecodedEvidence, 'evidence' | 'certificates' | 'form'> {
  const o = object(primary, path, ['attestation_report'], ['cert_chain']);
  const evidence = snpReportFromJson(o.attestation_report, `${path}.attestation_report`);
  const certificates: Uint8Array[] = [];
  if (o.cert_chain !== undefined && o.cert_chain !== null) {
    const chain = o.cert_chain;
    if (!Array.isArray(chain)) fail(`${path}.cert_chain`, `must be an array or null, got ${describe(chain)}`);
    if (chain.length > EVIDENCE_LIMITS.snpCertificates) fail(`${path}.cert_chain`, `has ${chain.length} entries, over the limit of ${EVIDENCE_LIMITS.snpCertificates}`);
    chain.forEach((entry: unknown, i) => {
      const p = `${path}.cert_chain[${i}]`;
      const e = object(entry, p, ['cert_type', 'data']);
      const t: unknown = e.cert_type;
      let kind: string;
      if (typeof t === 'string' && (SNP_CERT_TYPES.includes(t) || t === 'Empty' || t === 'CRL')) kind = t;
      else if (typeof t === 'object' && t !== null && !Array.isArray(t) && typeof (t as Json).OTHER === 'string') {
        object(t, `${p}.cert_type`, ['OTHER']);
        if (!UUID.test((t as Json).OTHER as string)) fail(`${p}.cert_type.OTHER`, 'must be a UUID');
        kind = 'OTHER';
      } else fail(`${p}.cert_type`, `must be "VCEK", "VLEK", "ASK", "ARK", "CRL", "Empty" or {"OTHER": uuid}, got ${describe(t)}`);
      const data = byteArray(e.data, `${p}.data`, { max: EVIDENCE_LIMITS.certificateBytes });
      // As Trustee: certificates are used, CRL / Empty / OTHER entries are skipped (revocation lists come from the verifier's side).
      if (SNP_CERT_TYPES.includes(kind)) certificates.push(derCertificate(data, `${p}.data`));
    });
  }
  return { evidence, ...(certificates.length ? { certificates } : {}), form: `sev AttestationReport v${new DataView(evidence.buffer).getUint32(0, true)}` };
}

/** Trustee's SnpEvidence: `{attestation_report, cert_chain}`, certificates with their sev CertType. */
export function encodeSnpEvidence(report: Uint8Array, certificates: readonly { type: SnpCertType; der: Uint8Array }[] = []): Record<string, unknown> {
  for (const c of certificates) {
    if (!SNP_CERT_TYPES.includes(c.type)) throw new EvidenceFormatError(`SNP certificate type must be one of ${SNP_CERT_TYPES.join(', ')}, got ${String(c.type)}`);
  }
  return {
    attestation_report: snpReportToJson(report),
    cert_chain: certificates.length ? certificates.map((c) => ({ cert_type: c.type, data: [...c.der] })) : null,
  };
}

// ---------------------------------------------------------------------------------------------
// TDX: {cc_eventlog: base64 | null, quote: base64}

function decodeTdx(primary: unknown, path: string): Pick<DecodedEvidence, 'evidence' | 'eventLog' | 'form'> {
  const o = object(primary, path, ['quote'], ['cc_eventlog']);
  const evidence = base64Std(o.quote, `${path}.quote`, EVIDENCE_LIMITS.tdxQuoteBytes);
  const version = evidence.length >= 2 ? evidence[0]! | (evidence[1]! << 8) : 0;
  // Trustee treats an empty event log like a missing one.
  const log = o.cc_eventlog === '' ? undefined : optional(o, 'cc_eventlog', (v, p) => base64Std(v, p, EVIDENCE_LIMITS.tdxEventLogBytes), path);
  return { evidence, ...(log ? { eventLog: log } : {}), form: `TDX quote v${version}${log ? ' with event log' : ''}` };
}

export function encodeTdxEvidence(quote: Uint8Array, eventLog?: Uint8Array): Record<string, unknown> {
  return { cc_eventlog: eventLog ? Buffer.from(eventLog).toString('base64') : null, quote: Buffer.from(quote).toString('base64') };
}

// ---------------------------------------------------------------------------------------------
// az-snp-vtpm: Trustee's v0 (az-snp-vtpm crate serde), v1 and v2 (hex quote, base64url report/vcek)

function decodeAzure(primary: unknown, path: string): Pick<DecodedEvidence, 'evidence' | 'form'> {
  const probe = typeof primary === 'object' && primary !== null && Object.hasOwn(primary, 'version');
  let report: Uint8Array;
  let vcek: Uint8Array;
  let message: Uint8Array;
  let signature: Uint8Array;
  let pcrs: Uint8Array[];
  let form: string;
  const L = EVIDENCE_LIMITS;
  if (probe) {
    const o = object(primary, path, ['version', 'tpm_quote', 'hcl_report', 'vcek']);
    const version = u32(o.version, `${path}.version`);
    if (version !== 1 && version !== 2) fail(`${path}.version`, `is ${version}; az-snp-vtpm evidence versions 1 and 2 are known (v0 has no version member)`);
    const q = object(o.tpm_quote, `${path}.tpm_quote`, ['signature', 'message', 'pcrs']);
    signature = hexBytes(q.signature, `${path}.tpm_quote.signature`, L.tpmSignatureBytes);
    message = hexBytes(q.message, `${path}.tpm_quote.message`, L.tpmQuoteMessageBytes);
    pcrs = list(q.pcrs, `${path}.tpm_quote.pcrs`, L.tpmPcrs).map((p, i) => hexBytes(p, `${path}.tpm_quote.pcrs[${i}]`, 32, 32));
    report = base64Url(o.hcl_report, `${path}.hcl_report`, L.hclReportBytes);
    vcek = derCertificate(base64Url(o.vcek, `${path}.vcek`, L.certificateBytes), `${path}.vcek`);
    form = `az-snp-vtpm v${version}`;
  } else {
    const o = object(primary, path, ['quote', 'report', 'vcek']);
    const q = object(o.quote, `${path}.quote`, ['signature', 'message', 'pcrs']);
    signature = byteArray(q.signature, `${path}.quote.signature`, { max: L.tpmSignatureBytes, min: 1 });
    message = byteArray(q.message, `${path}.quote.message`, { max: L.tpmQuoteMessageBytes, min: 1 });
    pcrs = list(q.pcrs, `${path}.quote.pcrs`, L.tpmPcrs).map((p, i) => byteArray(p, `${path}.quote.pcrs[${i}]`, { exact: 32 }));
    report = byteArray(o.report, `${path}.report`, { max: L.hclReportBytes, min: 1 });
    vcek = pemCertificate(o.vcek, `${path}.vcek`);
    form = 'az-snp-vtpm v0';
  }
  // Our Azure verifier's input (src/attestation/verifiers/azure.ts): the same parts, bytes as base64url.
  const b = (x: Uint8Array): string => Buffer.from(x).toString('base64url');
  const ours = { report: b(report), vcek: b(vcek), quote: { message: b(message), signature: b(signature), pcrs: pcrs.map(b) } };
  return { evidence: new Uint8Array(Buffer.from(JSON.stringify(ours), 'utf8')), form };
}

function list(v: unknown, path: string, max: number): unknown[] {
  if (!Array.isArray(v)) fail(path, `must be an array, got ${describe(v)}`);
  if (v.length === 0 || v.length > max) fail(path, `must hold 1 to ${max} entries, got ${v.length}`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Our extensions: {"evidence": base64}

function decodeExtension(primary: unknown, path: string): Pick<DecodedEvidence, 'evidence' | 'form'> {
  const o = object(primary, path, ['evidence']);
  return { evidence: base64Std(o.evidence, `${path}.evidence`, EVIDENCE_LIMITS.extensionEvidenceBytes), form: 'sealed-tensors {evidence}' };
}

// ---------------------------------------------------------------------------------------------

function kbsTee(tee: unknown): KbsTee {
  if (typeof tee !== 'string' || !(KBS_TEES as readonly string[]).includes(tee)) {
    throw new EvidenceFormatError(`tee ${typeof tee === 'string' ? JSON.stringify(tee.slice(0, 40)) : describe(tee)} is not supported; supported: ${KBS_TEES.join(', ')}`);
  }
  return tee as KbsTee;
}

/**
 * Decodes the primary evidence alone, in the shape Trustee's verifier crate for `tee` reads (what
 * its test data files and the attesters' `get_evidence` hold), without the `tee-evidence` wrapper.
 */
export function decodePrimaryEvidence(tee: string, primary: unknown, additionalEvidence = '', path = 'primary_evidence'): DecodedEvidence {
  const t = kbsTee(tee);
  const base = { tee: t, type: KBS_TEE_VERIFIER[t], additionalEvidence };
  switch (t) {
    case 'snp':
      return { ...base, ...decodeSnp(primary, path) };
    case 'tdx':
      return { ...base, ...decodeTdx(primary, path) };
    case 'az-snp-vtpm':
      return { ...base, ...decodeAzure(primary, path) };
    case 'nitro':
    case 'simulated':
      return { ...base, ...decodeExtension(primary, path) };
  }
}

/**
 * Decodes the `tee-evidence` member of an attest request for `tee`. Trustee (kbs-types 0.18) sends
 * `{"primary_evidence": <per tee>, "additional_evidence": "<JSON text or empty>"}` and accepts
 * nothing else, so neither does this for snp, tdx and az-snp-vtpm. For our extensions (nitro,
 * simulated) the bare `{"evidence": base64}` is accepted too, with no additional evidence.
 */
export function decodeTeeEvidence(tee: string, teeEvidence: unknown): DecodedEvidence {
  const t = kbsTee(tee);
  const isExtension = t === 'nitro' || t === 'simulated';
  if (isExtension && typeof teeEvidence === 'object' && teeEvidence !== null && Object.hasOwn(teeEvidence, 'evidence')) {
    return decodePrimaryEvidence(t, teeEvidence, '', 'tee-evidence');
  }
  const o = object(teeEvidence, 'tee-evidence', ['primary_evidence', 'additional_evidence']);
  const additional = string(o.additional_evidence, 'tee-evidence.additional_evidence', EVIDENCE_LIMITS.additionalEvidenceChars);
  return decodePrimaryEvidence(t, o.primary_evidence, additional, 'tee-evidence.primary_evidence');
}

export interface EncodeTeeEvidenceOptions {
  /** SNP: certificates to send in `cert_chain` (e.g. the host's VCEK/ASK/ARK). */
  snpCertificates?: readonly { type: SnpCertType; der: Uint8Array }[];
  /** TDX: the CC event log. */
  eventLog?: Uint8Array;
  /** The `additional_evidence` string (JSON text of tee -> evidence), '' when none. */
  additionalEvidence?: string;
}

/**
 * `tee-evidence` for an attest request, as Trustee's KBS reads it, from the bytes our providers
 * give: snp (1184-byte report), tdx (quote), nitro and simulated (`{"evidence": base64}`). Azure
 * evidence is not encoded here: this library has no Azure provider.
 */
export function encodeTeeEvidence(
  type: Extract<TeeType, 'snp' | 'tdx' | 'nitro' | 'simulated'>,
  evidence: Uint8Array,
  opts: EncodeTeeEvidenceOptions = {},
): { primary_evidence: Record<string, unknown>; additional_evidence: string } {
  if (!(evidence instanceof Uint8Array)) throw new EvidenceFormatError('evidence must be a Uint8Array');
  let primary: Record<string, unknown>;
  switch (type) {
    case 'snp':
      primary = encodeSnpEvidence(evidence, opts.snpCertificates);
      break;
    case 'tdx':
      primary = encodeTdxEvidence(evidence, opts.eventLog);
      break;
    case 'nitro':
    case 'simulated':
      if (evidence.length > EVIDENCE_LIMITS.extensionEvidenceBytes) throw new EvidenceFormatError(`${type} evidence is ${evidence.length} bytes, over the limit of ${EVIDENCE_LIMITS.extensionEvidenceBytes}`);
      primary = { evidence: Buffer.from(evidence).toString('base64') };
      break;
    default:
      throw new EvidenceFormatError(`evidence of type ${JSON.stringify(type)} has no tee-evidence encoding here (snp, tdx, nitro, simulated do)`);
  }
  return { primary_evidence: primary, additional_evidence: opts.additionalEvidence ?? '' };
}
