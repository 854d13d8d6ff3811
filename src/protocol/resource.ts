/**
 * The plaintext of a released data key (inside the JWE): "STK1" || 32-byte key || UTF-8 JSON
 * manifest. The key sits at a fixed offset so the session's addon moves it into a key handle
 * without parsing JSON; the manifest (no secrets) names the sealed models this release may open.
 */
import { assertBytes } from '../bytes.js';
import { ProtocolError } from '../errors.js';

export const RESOURCE_MAGIC = 'STK1';
export const RESOURCE_KEY_OFFSET = 4;
export const RESOURCE_KEY_BYTES = 32;
export const MAX_MANIFEST_BYTES = 64 * 1024;
export const MAX_MANIFEST_MODELS = 1024;

/** A sealed model a key may open: its top-level file (model file or sealed index) pinned by bundle id and header digest. */
export interface ModelBinding {
  /** 16-byte bundle id, lower-case hex. */
  bundleId: string;
  /** SHA-256 of the public header, lower-case hex. */
  headerDigest: string;
  label?: string;
}

export interface DataKeyManifest {
  v: 1;
  keyId: string;
  models: ModelBinding[];
  /** The release is void after this (the broker token's expiry); ISO 8601. */
  notAfter: string;
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** Broker side. The result holds the key: the caller wipes it once encrypted. */
export function encodeDataKeyResource(key: Uint8Array, manifest: DataKeyManifest): Uint8Array {
  assertBytes(key, 'key', RESOURCE_KEY_BYTES);
  const json = Buffer.from(JSON.stringify(checkManifest(manifest)), 'utf8');
  if (json.length > MAX_MANIFEST_BYTES) throw new ProtocolError(`the manifest is ${json.length} bytes, more than ${MAX_MANIFEST_BYTES}`);
  const out = new Uint8Array(new ArrayBuffer(RESOURCE_KEY_OFFSET + RESOURCE_KEY_BYTES + json.length));
  out.set(Buffer.from(RESOURCE_MAGIC, 'latin1'), 0);
  out.set(key, RESOURCE_KEY_OFFSET);
  out.set(json, RESOURCE_KEY_OFFSET + RESOURCE_KEY_BYTES);
  return out;
}

/** Session side: the manifest bytes the addon returned after moving the key out. */
export function parseManifest(bytes: Uint8Array): DataKeyManifest {
  assertBytes(bytes, 'manifest');
  if (bytes.length > MAX_MANIFEST_BYTES) throw new ProtocolError(`the released manifest is ${bytes.length} bytes, more than ${MAX_MANIFEST_BYTES}`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new ProtocolError('the released manifest is not UTF-8 JSON', { cause });
  }
  return checkManifest(value);
}

export function checkManifest(value: unknown): DataKeyManifest {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('the manifest must be a JSON object');
  const m = value as Record<string, unknown>;
  for (const k of Object.keys(m)) if (!['v', 'keyId', 'models', 'notAfter'].includes(k)) throw new ProtocolError(`the manifest has an unknown member "${k}"`);
  if (m['v'] !== 1) throw new ProtocolError('the manifest version must be 1');
  if (typeof m['keyId'] !== 'string' || m['keyId'].length === 0 || m['keyId'].length > 128) throw new ProtocolError('the manifest keyId must be a non-empty string');
  if (typeof m['notAfter'] !== 'string' || Number.isNaN(Date.parse(m['notAfter']))) throw new ProtocolError('the manifest notAfter must be an ISO 8601 time');
  if (!Array.isArray(m['models']) || m['models'].length > MAX_MANIFEST_MODELS) throw new ProtocolError(`the manifest models must be a list of at most ${MAX_MANIFEST_MODELS}`);
  const models = m['models'].map((x, i): ModelBinding => {
    if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new ProtocolError(`manifest model ${i} must be an object`);
    const o = x as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['bundleId', 'headerDigest', 'label'].includes(k)) throw new ProtocolError(`manifest model ${i} has an unknown member "${k}"`);
    if (typeof o['bundleId'] !== 'string' || !HEX32.test(o['bundleId'])) throw new ProtocolError(`manifest model ${i}: bundleId must be 32 lower-case hex digits`);
    if (typeof o['headerDigest'] !== 'string' || !HEX64.test(o['headerDigest'])) throw new ProtocolError(`manifest model ${i}: headerDigest must be 64 lower-case hex digits`);
    if (o['label'] !== undefined && (typeof o['label'] !== 'string' || o['label'].length > 256)) throw new ProtocolError(`manifest model ${i}: label must be a short string`);
    return { bundleId: o['bundleId'], headerDigest: o['headerDigest'], ...(o['label'] !== undefined ? { label: o['label'] as string } : {}) };
  });
  return { v: 1, keyId: m['keyId'], models, notAfter: m['notAfter'] };
}

/** Whether the manifest lists this exact model version (bundle id and header digest together). */
export function manifestAllows(manifest: DataKeyManifest, model: { bundleId: string; headerDigest: string }): boolean {
  return manifest.models.some((m) => m.bundleId === model.bundleId && m.headerDigest === model.headerDigest);
}
