/**
 * `tee-evidence.additional_evidence`: JSON text of `{<tee>: <evidence>}` (kbs-types `Tee` names, as
 * Trustee's KBS reads it into a HashMap<Tee, TeeEvidence>), decoded into the bytes our device
 * verifiers read. Only `nvidia` is known: Trustee's NVIDIA verifier shape
 * (deps/verifier/src/nvidia, trustee @ 78962cd4):
 *   {"device_evidence_list": [{"arch": "HOPPER", "uuid"?: string, "evidence": hex or base64 SPDM
 *     GET_MEASUREMENTS request || response, "certificate": base64 of the PEM chain}]}
 * As Trustee's local verifier, only Hopper GPUs are verified here; other architectures are refused
 * by name. Our extension `simulated-nvidia` (software only, for development and tests; a broker
 * accepts it only with allowSimulated) stands in for an NVIDIA GPU:
 *   {"device_evidence_list": [{"uuid"?: string, "evidence": base64 of simulated evidence (STSIMEV1)
 *     whose report data is the 32-byte device binding followed by 32 zero bytes}]}
 * Pure: no I/O. Malformed input is an EvidenceFormatError naming the member.
 */
import { EvidenceFormatError } from '../errors.js';
import type { TeeType } from '../attestation/types.js';

/** kbs-types names this broker accepts as additional evidence. */
export const DEVICE_KBS_TEES = ['nvidia', 'simulated-nvidia'] as const;
export type DeviceKbsTee = (typeof DEVICE_KBS_TEES)[number];

export const DEVICE_LIMITS = {
  /** Devices in one request: a node's GPUs (8 on an HGX board) with room to spare. */
  devices: 16,
  /** One SPDM request + response with signature (a Hopper report is about 4 KiB). */
  evidenceBytes: 64 * 1024,
  /** One PEM chain, decoded (a Hopper chain is about 5 KiB). */
  chainBytes: 64 * 1024,
  chainCertificates: 8,
  uuidChars: 128,
} as const;

export interface DecodedDeviceEvidence {
  /** The kbs-types name it came under. */
  tee: DeviceKbsTee;
  /** The verifier that reads `evidence` (`simulated` for simulated-nvidia). */
  type: TeeType;
  /** Position in device_evidence_list. */
  index: number;
  arch: 'Hopper' | 'simulated';
  uuid: string;
  evidence: Uint8Array;
  /** DER certificates of the device chain, in the order sent. */
  certificates: Uint8Array[];
  /** Where it was read, for messages: `additional_evidence.nvidia.device_evidence_list[0]`. */
  path: string;
}

type Json = Record<string, unknown>;

function fail(path: string, what: string): never {
  throw new EvidenceFormatError(`${path} ${what}`);
}

function object(v: unknown, path: string, required: readonly string[], optional: readonly string[] = []): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, 'must be a JSON object');
  for (const k of Object.keys(v)) {
    if (!required.includes(k) && !optional.includes(k)) fail(`${path}.${k.length > 64 ? `${k.slice(0, 64)}…` : k}`, `is not a member of this object (expected ${[...required, ...optional].join(', ')})`);
  }
  for (const k of required) if (!Object.hasOwn(v, k)) fail(`${path}.${k}`, 'is missing');
  return v as Json;
}

function string(v: unknown, path: string, maxChars: number): string {
  if (typeof v !== 'string') fail(path, 'must be a string');
  if (v.length === 0) fail(path, 'is empty');
  if (v.length > maxChars) fail(path, `is ${v.length} characters, over the limit of ${maxChars}`);
  return v;
}

const B64_STD = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function base64(s: string, path: string, maxBytes: number): Uint8Array {
  if (!B64_STD.test(s)) fail(path, 'must be standard base64 with padding');
  const bytes = Buffer.from(s, 'base64');
  if (bytes.toString('base64') !== s) fail(path, 'is not canonical base64 (non-zero bits after the last byte)');
  if (bytes.length > maxBytes) fail(path, `decodes to ${bytes.length} bytes, over the limit of ${maxBytes}`);
  return new Uint8Array(bytes);
}

/** Trustee tries hex first, then base64: the same order, so one string means one thing to both. */
function hexOrBase64(v: unknown, path: string, maxBytes: number): Uint8Array {
  const s = string(v, path, Math.max(maxBytes * 2, Math.ceil(maxBytes / 3) * 4));
  if (/^(?:[0-9a-fA-F]{2})+$/.test(s)) {
    if (s.length / 2 > maxBytes) fail(path, `decodes to ${s.length / 2} bytes, over the limit of ${maxBytes}`);
    return new Uint8Array(Buffer.from(s, 'hex'));
  }
  return base64(s, path, maxBytes);
}

/** The CERTIFICATE blocks of a PEM text, as DER. Anything else in the text is refused. */
function pemChain(text: string, path: string): Uint8Array[] {
  const re = /-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)\r?\n?-----END CERTIFICATE-----/g;
  const out: Uint8Array[] = [];
  let rest = text;
  for (const m of text.matchAll(re)) {
    if (out.length >= DEVICE_LIMITS.chainCertificates) fail(path, `holds more than ${DEVICE_LIMITS.chainCertificates} certificates`);
    out.push(base64(m[1]!.replace(/\r?\n/g, ''), `${path} certificate ${out.length}`, DEVICE_LIMITS.chainBytes));
    rest = rest.replace(m[0], '');
  }
  if (out.length === 0) fail(path, 'must be base64 of a PEM certificate chain (no CERTIFICATE block found)');
  if (rest.trim() !== '') fail(path, 'holds text outside its PEM CERTIFICATE blocks');
  return out;
}

/** The `device_evidence_list` both NVIDIA shapes carry: 1 to DEVICE_LIMITS.devices entries. */
function deviceList(v: unknown, path: string): { list: unknown[]; lp: string } {
  const o = object(v, path, ['device_evidence_list']);
  const list = o.device_evidence_list;
  const lp = `${path}.device_evidence_list`;
  if (!Array.isArray(list)) fail(lp, 'must be an array');
  if (list.length === 0 || list.length > DEVICE_LIMITS.devices) fail(lp, `must hold 1 to ${DEVICE_LIMITS.devices} devices, got ${list.length}`);
  return { list, lp };
}

function decodeNvidia(v: unknown, path: string): DecodedDeviceEvidence[] {
  const { list, lp } = deviceList(v, path);
  return list.map((entry: unknown, index) => {
    const p = `${lp}[${index}]`;
    const e = object(entry, p, ['arch', 'evidence', 'certificate'], ['uuid']);
    // serde's names and aliases for kbs-types' Architecture; only Hopper is verified locally (as Trustee).
    if (e.arch !== 'Hopper' && e.arch !== 'HOPPER') {
      if (['Blackwell', 'BLACKWELL', 'LS10'].includes(e.arch as string)) fail(`${p}.arch`, `is ${String(e.arch)}: only Hopper GPUs are verified by this broker`);
      fail(`${p}.arch`, 'must be "HOPPER" (or "Hopper")');
    }
    const uuid = e.uuid === undefined ? 'unknown' : string(e.uuid, `${p}.uuid`, DEVICE_LIMITS.uuidChars);
    const evidence = hexOrBase64(e.evidence, `${p}.evidence`, DEVICE_LIMITS.evidenceBytes);
    const pem = base64(string(e.certificate, `${p}.certificate`, Math.ceil(DEVICE_LIMITS.chainBytes * 2)), `${p}.certificate`, DEVICE_LIMITS.chainBytes * 2);
    const certificates = pemChain(Buffer.from(pem).toString('latin1'), `${p}.certificate`);
    return { tee: 'nvidia', type: 'nvidia', index, arch: 'Hopper', uuid, evidence, certificates, path: p } satisfies DecodedDeviceEvidence;
  });
}

function decodeSimulatedNvidia(v: unknown, path: string): DecodedDeviceEvidence[] {
  const { list, lp } = deviceList(v, path);
  return list.map((entry: unknown, index) => {
    const p = `${lp}[${index}]`;
    const e = object(entry, p, ['evidence'], ['uuid']);
    const uuid = e.uuid === undefined ? 'unknown' : string(e.uuid, `${p}.uuid`, DEVICE_LIMITS.uuidChars);
    const evidence = base64(string(e.evidence, `${p}.evidence`, Math.ceil(DEVICE_LIMITS.evidenceBytes / 3) * 4), `${p}.evidence`, DEVICE_LIMITS.evidenceBytes);
    return { tee: 'simulated-nvidia', type: 'simulated', index, arch: 'simulated', uuid, evidence, certificates: [], path: p } satisfies DecodedDeviceEvidence;
  });
}

/**
 * Decodes `additional_evidence` ('' means none). The text is the one hashed into the primary
 * evidence's binding; what it holds is verified device by device.
 */
export function decodeAdditionalEvidence(text: string, path = 'tee-evidence.additional_evidence'): DecodedDeviceEvidence[] {
  if (typeof text !== 'string') fail(path, 'must be a string (JSON text or empty)');
  if (text === '') return [];
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new EvidenceFormatError(`${path} is not JSON text: ${(cause as Error).message}`, { cause });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail(path, 'must be JSON text of an object {<tee>: <evidence>}');
  const keys = Object.keys(json);
  if (keys.length === 0) fail(path, 'is an empty object: send "" for no additional evidence');
  const out: DecodedDeviceEvidence[] = [];
  for (const k of keys) {
    if (!(DEVICE_KBS_TEES as readonly string[]).includes(k)) {
      fail(`${path}.${k.length > 40 ? `${k.slice(0, 40)}…` : k}`, `is not a device this broker verifies (supported: ${DEVICE_KBS_TEES.join(', ')})`);
    }
    const v = (json as Json)[k];
    out.push(...(k === 'nvidia' ? decodeNvidia(v, `${path}.${k}`) : decodeSimulatedNvidia(v, `${path}.${k}`)));
  }
  if (out.length > DEVICE_LIMITS.devices) fail(path, `holds ${out.length} devices, over the limit of ${DEVICE_LIMITS.devices}`);
  return out;
}

/** One device's evidence as a session sends it; `certificatesPem` is required for `nvidia`. */
export interface DeviceEvidenceEntry {
  tee: DeviceKbsTee;
  evidence: Uint8Array;
  certificatesPem?: string;
  uuid?: string;
}

/**
 * `additional_evidence` for devices of one or more kinds (the session side): JSON text of
 * `{<tee>: {"device_evidence_list": [...]}}`, each device in the order given; '' for none.
 * The text is hashed into the primary evidence's binding as it is.
 */
export function encodeAdditionalEvidence(devices: readonly DeviceEvidenceEntry[]): string {
  if (devices.length === 0) return '';
  if (devices.length > DEVICE_LIMITS.devices) throw new EvidenceFormatError(`${devices.length} devices are more than the ${DEVICE_LIMITS.devices} a broker accepts`);
  const out: Record<string, { device_evidence_list: unknown[] }> = {};
  for (const d of devices) {
    if (!(d.evidence instanceof Uint8Array) || d.evidence.length === 0) throw new EvidenceFormatError(`${d.tee} device evidence must be a non-empty Uint8Array`);
    if (d.evidence.length > DEVICE_LIMITS.evidenceBytes) throw new EvidenceFormatError(`${d.tee} device evidence is ${d.evidence.length} bytes, over the limit of ${DEVICE_LIMITS.evidenceBytes}`);
    let entry: Record<string, unknown>;
    if (d.tee === 'nvidia') {
      if (typeof d.certificatesPem !== 'string' || !d.certificatesPem.includes('-----BEGIN CERTIFICATE-----')) throw new EvidenceFormatError('nvidia device evidence needs the GPU\'s PEM certificate chain');
      entry = nvidiaEntry({ evidence: d.evidence, certificatesPem: d.certificatesPem, ...(d.uuid !== undefined ? { uuid: d.uuid } : {}) });
    } else if (d.tee === 'simulated-nvidia') {
      entry = { ...(d.uuid !== undefined ? { uuid: d.uuid } : {}), evidence: Buffer.from(d.evidence).toString('base64') };
    } else {
      throw new EvidenceFormatError(`device kind ${JSON.stringify(d.tee)} is not one a broker verifies (supported: ${DEVICE_KBS_TEES.join(', ')})`);
    }
    (out[d.tee] ??= { device_evidence_list: [] }).device_evidence_list.push(entry);
  }
  return JSON.stringify(out);
}

function nvidiaEntry(d: { evidence: Uint8Array; certificatesPem: string; uuid?: string }): Record<string, unknown> {
  return {
    arch: 'HOPPER',
    ...(d.uuid !== undefined ? { uuid: d.uuid } : {}),
    evidence: Buffer.from(d.evidence).toString('hex'),
    certificate: Buffer.from(d.certificatesPem, 'utf8').toString('base64'),
  };
}

/** Trustee's NVIDIA additional evidence for one or more Hopper GPUs (the session side, and tests). */
export function encodeNvidiaAdditionalEvidence(devices: readonly { evidence: Uint8Array; certificatesPem: string; uuid?: string }[]): string {
  return JSON.stringify({ nvidia: { device_evidence_list: devices.map(nvidiaEntry) } });
}
