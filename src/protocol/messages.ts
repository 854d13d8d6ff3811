/**
 * The KBS attestation protocol's messages (Trustee, protocol version 0.4.0), parsed strictly: the
 * broker parses what sessions send, the session parses what brokers answer, and both refuse
 * anything outside the shapes below with a ProtocolError naming the member. Pure: no I/O.
 */
import { ProtocolError } from '../errors.js';
import { parsePublicJwk, type PublicJwk } from './jwk.js';

export const KBS_PROTOCOL_VERSION = '0.4.0';
export const KBS_PATH_PREFIX = '/kbs/v0';
export const SESSION_COOKIE = 'kbs-session-id';
/** Our data keys live here: /kbs/v0/resource/sealed-tensors/data-key/<key id>. */
export const DATA_KEY_REPOSITORY = 'sealed-tensors';
export const DATA_KEY_TYPE = 'data-key';
/** The challenge nonce: 32 random bytes, base64 (standard alphabet, padded), as Trustee sends. */
export const NONCE_BYTES = 32;

/** Request bodies above this are refused before parsing (evidence with a certificate chain is ~10 KiB; TDX with collateral more). */
export const MAX_REQUEST_BYTES = 1024 * 1024;
/**
 * The longest token either end accepts: each attested GPU adds a submod with its claims (a Hopper
 * report's up to 64 measurement blocks: about 10 KiB of token each), for up to 16 devices.
 */
export const MAX_TOKEN_CHARS = 224 * 1024;
/** Response bodies a session accepts (a token or a JWE). */
export const MAX_RESPONSE_BYTES = 256 * 1024;

export interface AuthRequest {
  version: string;
  tee: string;
  'extra-params': unknown;
}

export interface Challenge {
  nonce: string;
  'extra-params': unknown;
}

export interface RuntimeData {
  nonce: string;
  /** Validated copy (what a broker wraps to). */
  teePubkey: PublicJwk;
  /** The JWK exactly as received: what the evidence binding hashes. */
  teePubkeyRaw: object;
}

export interface AttestRequest {
  runtimeData: RuntimeData;
  /** The primary evidence, in the shape its tee type defines (src/protocol/evidence.ts). */
  primaryEvidence: unknown;
  /** JSON text of {tee: evidence} for additional (device) evidence, or "". */
  additionalEvidence: string;
}

export interface FlattenedJwe {
  protected: string;
  encrypted_key: string;
  iv: string;
  ciphertext: string;
  tag: string;
}

export interface ResourcePath {
  repository: string;
  type: string;
  tag: string;
}

const TEE_NAME = /^[a-z0-9-]{1,32}$/;
const B64URL = /^[A-Za-z0-9_-]*$/;
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;
const RESOURCE_SEGMENT = /^[A-Za-z0-9._-]{1,128}$/;

function object(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError(`${what} must be a JSON object`);
  return value as Record<string, unknown>;
}

function only(obj: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(obj)) {
    // The name is the client's: shown cut short, so a refusal never echoes (or logs) a megabyte.
    if (!allowed.includes(k)) throw new ProtocolError(`${what} has an unknown member ${JSON.stringify(k.length > 64 ? `${k.slice(0, 64)}…` : k)} (expected ${allowed.join(', ')})`);
  }
}

function string(value: unknown, what: string, max = 4096): string {
  if (typeof value !== 'string') throw new ProtocolError(`${what} must be a string`);
  if (value.length > max) throw new ProtocolError(`${what} is longer than ${max} characters`);
  return value;
}

/** Parses JSON text (or bytes) of at most `max` bytes; duplicate keys cannot smuggle a second value past us because only the parsed object is used. */
export function parseJsonBody(body: Uint8Array | string, max: number, what: string): unknown {
  const length = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (length > max) throw new ProtocolError(`${what} is ${length} bytes, more than the ${max} allowed`);
  const text = typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new ProtocolError(`${what} is not valid JSON`, { cause });
  }
  // JSON.parse keeps the last of duplicate names; another parser may keep the first. Refused, so
  // whatever reads this message sees what we checked.
  const dup = duplicateMember(text);
  if (dup !== undefined) throw new ProtocolError(`${what} has a duplicate member ${JSON.stringify(dup.length > 64 ? `${dup.slice(0, 64)}…` : dup)}; each name may appear once per object`);
  return value;
}

/**
 * The first member name that appears twice in one object of `text`, which must be valid JSON
 * (JSON.parse accepted it): one linear pass that tracks only object nesting and strings.
 */
export function duplicateMember(text: string): string | undefined {
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      for (let d = text.charCodeAt(j); d !== 0x22; d = text.charCodeAt(j)) {
        if (d === 0x5c) {
          escaped = true;
          j += 2;
        } else j++;
      }
      if (expectKey) {
        const name = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        const keys = stack[stack.length - 1]!;
        if (keys.has(name)) return name;
        keys.add(name);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) {
      stack.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) {
      stack.push(null);
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c) {
      expectKey = stack[stack.length - 1] instanceof Set;
    }
  }
  return undefined;
}

/** Checks a nonce as the broker issued it: base64 of exactly NONCE_BYTES bytes. */
export function checkNonce(nonce: unknown, what = 'nonce'): string {
  const s = string(nonce, what, 128);
  const bytes = B64.test(s) ? Buffer.from(s, 'base64') : undefined;
  if (bytes === undefined || bytes.length !== NONCE_BYTES || bytes.toString('base64') !== s) {
    throw new ProtocolError(`${what} must be canonical base64 of ${NONCE_BYTES} bytes`);
  }
  return s;
}

export function parseAuthRequest(value: unknown): AuthRequest {
  const obj = object(value, 'the auth request');
  only(obj, ['version', 'tee', 'extra-params'], 'the auth request');
  const version = string(obj['version'], 'version', 32);
  if (version !== KBS_PROTOCOL_VERSION) {
    throw new ProtocolError(`KBS protocol version ${JSON.stringify(version)} is not supported: this broker speaks ${KBS_PROTOCOL_VERSION}`);
  }
  const tee = string(obj['tee'], 'tee', 32);
  if (!TEE_NAME.test(tee)) throw new ProtocolError('tee must be a TEE name such as "snp", "tdx", "az-snp-vtpm", "nitro" or "simulated"');
  const extra = obj['extra-params'] ?? '';
  let extraText: string;
  try {
    extraText = JSON.stringify(extra);
  } catch (cause) {
    // Nesting deeper than the stack: the engine's RangeError says nothing to the client.
    throw new ProtocolError('extra-params is nested too deeply', { cause });
  }
  if (extraText.length > 4096) throw new ProtocolError('extra-params is too large');
  return { version, tee, 'extra-params': extra };
}

export function parseChallenge(value: unknown): Challenge {
  const obj = object(value, 'the challenge');
  only(obj, ['nonce', 'extra-params'], 'the challenge');
  return { nonce: checkNonce(obj['nonce']), 'extra-params': obj['extra-params'] ?? '' };
}

/**
 * The attestation message: {runtime-data: {nonce, tee-pubkey}, tee-evidence, init-data?}. Newer
 * clients put {primary_evidence, additional_evidence} under tee-evidence; older ones the evidence
 * itself. Both are accepted; the additional evidence must be a string (JSON text), as Trustee reads it.
 */
export function parseAttestRequest(value: unknown): AttestRequest {
  const obj = object(value, 'the attestation request');
  only(obj, ['runtime-data', 'tee-evidence', 'init-data'], 'the attestation request');
  const rd = object(obj['runtime-data'], 'runtime-data');
  only(rd, ['nonce', 'tee-pubkey'], 'runtime-data');
  const nonce = checkNonce(rd['nonce'], 'runtime-data.nonce');
  const teePubkeyRaw = object(rd['tee-pubkey'], 'runtime-data.tee-pubkey');
  const teePubkey = parsePublicJwk(teePubkeyRaw);
  if (obj['tee-evidence'] === undefined || obj['tee-evidence'] === null) throw new ProtocolError('tee-evidence is missing');
  let primaryEvidence: unknown = obj['tee-evidence'];
  let additionalEvidence = '';
  const te = obj['tee-evidence'];
  if (typeof te === 'object' && te !== null && !Array.isArray(te) && Object.hasOwn(te, 'primary_evidence')) {
    const wrapped = te as Record<string, unknown>;
    only(wrapped, ['primary_evidence', 'additional_evidence'], 'tee-evidence');
    primaryEvidence = wrapped['primary_evidence'];
    additionalEvidence = string(wrapped['additional_evidence'] ?? '', 'tee-evidence.additional_evidence', MAX_REQUEST_BYTES);
  }
  const request: AttestRequest = { runtimeData: { nonce, teePubkey, teePubkeyRaw }, primaryEvidence, additionalEvidence };
  // Trustee checks init-data against the evidence's init-data measurement (HOSTDATA, MRCONFIGID);
  // we do not yet, and accepting it unchecked would let a client believe it was bound.
  if (obj['init-data'] !== undefined && obj['init-data'] !== null) {
    throw new ProtocolError('init-data is not supported yet by this broker: send the request without it (or with null)');
  }
  return request;
}

export function parseTokenResponse(value: unknown): string {
  const obj = object(value, 'the attestation response');
  only(obj, ['token'], 'the attestation response');
  const token = string(obj['token'], 'token', MAX_TOKEN_CHARS);
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw new ProtocolError('token must be a compact JWS (header.payload.signature)');
  return token;
}

/** A flattened JWE as KBS returns resources: exactly these five members, base64url, no aad/header/unprotected. */
export function parseFlattenedJwe(value: unknown): FlattenedJwe {
  const obj = object(value, 'the resource response');
  only(obj, ['protected', 'encrypted_key', 'iv', 'ciphertext', 'tag'], 'the resource response (a flattened JWE)');
  const out = {} as Record<keyof FlattenedJwe, string>;
  for (const k of ['protected', 'encrypted_key', 'iv', 'ciphertext', 'tag'] as const) {
    const s = string(obj[k], `JWE member ${k}`, MAX_RESPONSE_BYTES);
    if (!B64URL.test(s)) throw new ProtocolError(`JWE member ${k} must be base64url without padding`);
    out[k] = s;
  }
  return out;
}

/** `<repository>/<type>/<tag>` after /kbs/v0/resource/: three plain segments, no dots-only, no encoding tricks. */
export function parseResourcePath(rest: string): ResourcePath {
  const parts = rest.split('/');
  if (parts.length !== 3) throw new ProtocolError('a resource path is <repository>/<type>/<tag>');
  for (const p of parts) {
    if (!RESOURCE_SEGMENT.test(p) || /^\.+$/.test(p)) throw new ProtocolError(`resource path segment ${JSON.stringify(p)} is not allowed (letters, digits, . _ -)`);
  }
  return { repository: parts[0]!, type: parts[1]!, tag: parts[2]! };
}

/** RFC 7807-style error body both ends agree on; `reasons` lists the failed checks. */
export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  reasons?: string[];
}

export function problemType(code: string): string {
  return `https://sealed-tensors.dev/errors/${code}`;
}

/** Reads a broker's error body leniently (it is only shown to people), bounded. */
export function parseProblem(value: unknown): { detail: string; reasons: string[] } {
  if (typeof value !== 'object' || value === null) return { detail: '', reasons: [] };
  const obj = value as Record<string, unknown>;
  const detail = typeof obj['detail'] === 'string' ? obj['detail'].slice(0, 2000) : '';
  const reasons = Array.isArray(obj['reasons']) ? obj['reasons'].filter((r): r is string => typeof r === 'string').slice(0, 64).map((r) => r.slice(0, 1000)) : [];
  return { detail, reasons };
}
