/**
 * The session's ephemeral public key as the KBS protocol carries it (`tee-pubkey`): a JWK with
 * public members only. A private member (d, p, q, ...) or an unknown curve is refused, so a broker
 * never wraps a data key to something that is not a plain EC P-256 or RSA public key.
 */
import type { KeyObject } from 'node:crypto';
import { nodeCrypto } from '../crypto-builtin.js';
import { ProtocolError } from '../errors.js';

export interface EcPublicJwk {
  kty: 'EC';
  crv: 'P-256';
  alg: 'ECDH-ES+A256KW';
  x: string;
  y: string;
}

export interface RsaPublicJwk {
  kty: 'RSA';
  alg: 'RSA-OAEP-256';
  n: string;
  e: string;
}

export type PublicJwk = EcPublicJwk | RsaPublicJwk;

/** The JWE key-management algorithm a broker uses for each kind of tee-pubkey. */
export type KeyWrapAlg = PublicJwk['alg'];

const B64URL = /^[A-Za-z0-9_-]+$/;
/** RSA moduli below this are refused (NIST SP 800-131A); above 8192 bits is not a session key. */
export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 8192;
/** A key id names a key; it is not a place to carry data (it is hashed, signed into tokens and kept per session). */
export const MAX_KID_CHARS = 256;

function b64url(value: unknown, name: string, bytes?: number): string {
  if (typeof value !== 'string' || !B64URL.test(value)) {
    throw new ProtocolError(`tee-pubkey member "${name}" must be base64url without padding`);
  }
  const decoded = Buffer.from(value, 'base64url');
  if (bytes !== undefined && decoded.length !== bytes) {
    throw new ProtocolError(`tee-pubkey member "${name}" must encode ${bytes} bytes`);
  }
  // Unused low bits of the last character must be zero: otherwise several strings name one key,
  // and the binding (which hashes the JWK as sent) differs for the same key.
  if (decoded.toString('base64url') !== value) throw new ProtocolError(`tee-pubkey member "${name}" is not canonical base64url (nonzero padding bits or a stray length)`);
  return value;
}

/** A value from the request, as an error message shows it: short, and never a whole object. */
function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

function onlyMembers(obj: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) {
      throw new ProtocolError(`tee-pubkey has member ${show(k)}, which a public ${String(obj['kty'])} key must not have (allowed: ${allowed.join(', ')})`);
    }
  }
  // The binding hashes the JWK as received (RFC 8785), and the token and the session carry it: the
  // optional members must be what RFC 7517 says they are, short, and hashable (no lone surrogates).
  const kid = obj['kid'];
  if (kid !== undefined && (typeof kid !== 'string' || kid.length > MAX_KID_CHARS || /\p{Cs}/u.test(kid))) {
    throw new ProtocolError(`tee-pubkey member "kid" must be a string of at most ${MAX_KID_CHARS} characters (well-formed UTF-16), got ${show(kid)}`);
  }
  if (obj['use'] !== undefined && obj['use'] !== 'enc') throw new ProtocolError(`tee-pubkey member "use" must be "enc" when present, got ${show(obj['use'])}`);
}

/** Key objects of the JWKs parsePublicJwk returned (frozen), by identity. */
const parsedKeys = new WeakMap<PublicJwk, KeyObject>();

/**
 * Validates a tee-pubkey: EC P-256 (alg ECDH-ES+A256KW, or absent) or RSA 2048..8192 bits with
 * e = 65537 (alg RSA-OAEP-256, or absent). Returns a fresh object with `alg` filled in and no other
 * members, and checks the point or modulus really parses as a public key.
 */
export function parsePublicJwk(value: unknown): PublicJwk {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('tee-pubkey must be a JWK object');
  }
  const obj = value as Record<string, unknown>;
  let jwk: PublicJwk;
  if (obj['kty'] === 'EC') {
    onlyMembers(obj, ['kty', 'crv', 'alg', 'x', 'y', 'use', 'kid']);
    if (obj['crv'] !== 'P-256') throw new ProtocolError(`tee-pubkey curve must be P-256, got ${show(obj['crv'])}`);
    if (obj['alg'] !== undefined && obj['alg'] !== 'ECDH-ES+A256KW') {
      throw new ProtocolError(`an EC tee-pubkey's alg must be ECDH-ES+A256KW, got ${show(obj['alg'])}`);
    }
    jwk = { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: b64url(obj['x'], 'x', 32), y: b64url(obj['y'], 'y', 32) };
  } else if (obj['kty'] === 'RSA') {
    onlyMembers(obj, ['kty', 'alg', 'n', 'e', 'use', 'kid']);
    if (obj['alg'] !== undefined && obj['alg'] !== 'RSA-OAEP-256') {
      throw new ProtocolError(`an RSA tee-pubkey's alg must be RSA-OAEP-256 (RSA1_5 is not accepted), got ${show(obj['alg'])}`);
    }
    const n = b64url(obj['n'], 'n');
    const e = b64url(obj['e'], 'e');
    const modulus = Buffer.from(n, 'base64url');
    if (modulus[0] === 0) throw new ProtocolError('tee-pubkey member "n" has a leading zero byte');
    const bits = modulus.length * 8 - Math.clz32(modulus[0]!) + 24;
    if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS) {
      throw new ProtocolError(`an RSA tee-pubkey must have ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits, got ${bits}`);
    }
    if (e !== 'AQAB') throw new ProtocolError('an RSA tee-pubkey must have e = 65537 ("AQAB")');
    jwk = { kty: 'RSA', alg: 'RSA-OAEP-256', n, e };
  } else {
    throw new ProtocolError(`tee-pubkey kty must be "EC" or "RSA", got ${show(obj['kty'])}`);
  }
  // The point must be on the curve, the modulus must parse; the key object is kept for the JWE to
  // this key (parsing a JWK into OpenSSL is a tenth of a release's CPU), so the JWK is frozen.
  Object.freeze(jwk);
  parsedKeys.set(jwk, publicKeyFromJwk(jwk));
  return jwk;
}

/** A node:crypto public key for a validated JWK (a point off the curve is refused here). */
export function publicKeyFromJwk(jwk: PublicJwk): KeyObject {
  const parsed = parsedKeys.get(jwk);
  if (parsed) return parsed;
  try {
    const { alg: _alg, ...members } = jwk;
    return nodeCrypto().createPublicKey({ key: members, format: 'jwk' });
  } catch (cause) {
    throw new ProtocolError(`tee-pubkey is not a valid ${jwk.kty} public key (${(cause as Error).message})`, { cause });
  }
}
