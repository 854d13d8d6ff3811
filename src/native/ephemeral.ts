/**
 * The session's ephemeral key pair and the JWE its data keys arrive in, both handled in the addon:
 * the private key is made there and never leaves it, and the JWE is opened there straight into a
 * key handle. JavaScript sees the public JWK, the JWE's public members and the manifest, nothing
 * else. This module checks the JWE's protected header (what the addon is asked to do); the addon
 * does the cryptography and answers every failure to open the JWE with one IntegrityError.
 */
import { InvalidArgumentError, NativeUnavailableError, ReleasedError } from '../errors.js';
import type { PublicJwk } from '../protocol/jwk.js';
import type { FlattenedJwe } from '../protocol/messages.js';
import { callNative, loadAddon, type NativeAddon, type NativeEphemeralKey, type NativeJweInput, type NativeKeyHandle } from './addon.js';

export type EphemeralKeyKind = 'ec-p256' | 'rsa-3072';

/** An ephemeral key pair whose private half lives in the addon (OpenSSL's secure heap). */
export interface EphemeralKey {
  readonly kind: EphemeralKeyKind;
  /** Public members only: what goes into the KBS `tee-pubkey`. */
  readonly publicJwk: PublicJwk;
  /** Frees the private key now (cleansed); true if it was live. */
  release(): boolean;
  readonly released: boolean;
}

export interface UnwrappedDataKey {
  key: NativeKeyHandle;
  /** The manifest's UTF-8 JSON bytes (not secret); parse with protocol/resource.ts `parseManifest`. */
  manifest: Uint8Array;
}

const ALG: Record<EphemeralKeyKind, NativeJweInput['alg']> = { 'ec-p256': 'ECDH-ES+A256KW', 'rsa-3072': 'RSA-OAEP-256' };
const B64URL = /^[A-Za-z0-9_-]*$/;
/** The addon's own limits, checked here too so a bad JWE is refused before anything is decoded. */
const MAX_PROTECTED = 16 * 1024;
const MAX_PARTY_INFO = 1024;
/**
 * Refused: "zip" (the plaintext would need inflating first) and "crit" (extensions we would have to
 * understand). Other members we do not use are ignored, as RFC 7516 section 4 has it.
 */
const REFUSED_MEMBERS = ['zip', 'crit'] as const;

class Ephemeral implements EphemeralKey {
  readonly #native: NativeEphemeralKey;
  readonly kind: EphemeralKeyKind;
  readonly publicJwk: PublicJwk;

  constructor(native: NativeEphemeralKey, kind: EphemeralKeyKind, jwk: PublicJwk) {
    this.#native = native;
    this.kind = kind;
    this.publicJwk = jwk;
  }

  release(): boolean {
    return this.#native.release();
  }

  get released(): boolean {
    return this.#native.released;
  }

  static native(key: unknown): NativeEphemeralKey {
    if (typeof key !== 'object' || key === null || !(#native in key)) {
      throw new InvalidArgumentError('expected an EphemeralKey from generateEphemeralKey()');
    }
    return (key as Ephemeral).#native;
  }
}

function addonWithJwe(): NativeAddon {
  const addon = loadAddon();
  if (typeof addon.ephemeralKeyGenerate !== 'function' || typeof addon.jweUnwrapDataKey !== 'function') {
    throw new NativeUnavailableError('the native addon predates ephemeral keys (a stale build): run `npm run build:native`');
  }
  return addon;
}

/** Tests only (not exported from the package): the addon's handle behind an EphemeralKey, for the addon's `_testing` hooks. */
export function _nativeEphemeral(key: EphemeralKey): NativeEphemeralKey {
  return Ephemeral.native(key);
}

/** Generates the session's key pair in the addon. RSA-3072 takes up to seconds, on the calling thread. */
export function generateEphemeralKey(kind: EphemeralKeyKind = 'ec-p256'): EphemeralKey {
  if (kind !== 'ec-p256' && kind !== 'rsa-3072') {
    throw new InvalidArgumentError(`ephemeral key kind must be 'ec-p256' or 'rsa-3072', got ${JSON.stringify(kind)}`);
  }
  const addon = addonWithJwe();
  const { handle, jwk } = callNative(() => addon.ephemeralKeyGenerate(kind));
  return new Ephemeral(handle, kind, Object.freeze(JSON.parse(jwk)) as PublicJwk);
}

function decode(value: unknown, name: string): Uint8Array {
  if (typeof value !== 'string' || !B64URL.test(value) || value.length % 4 === 1) {
    throw new InvalidArgumentError(`JWE ${name} must be base64url without padding`);
  }
  const bytes = Buffer.from(value, 'base64url');
  // Only the canonical spelling: no stray bits in the last character.
  if (bytes.toString('base64url') !== value) throw new InvalidArgumentError(`JWE ${name} is not canonical base64url`);
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

function header(protectedB64: string): Record<string, unknown> {
  if (protectedB64.length > MAX_PROTECTED) throw new InvalidArgumentError(`JWE protected header is longer than ${MAX_PROTECTED} characters`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(decode(protectedB64, 'protected')));
  } catch (cause) {
    if (cause instanceof InvalidArgumentError) throw cause;
    throw new InvalidArgumentError('JWE protected header is not UTF-8 JSON', { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidArgumentError('JWE protected header must be a JSON object');
  return value as Record<string, unknown>;
}

/**
 * Checks the JWE's protected header against what the key can open, and turns it into the addon's input.
 * Every refusal here is an InvalidArgumentError naming the member; nothing secret exists yet.
 */
function nativeInput(kind: EphemeralKeyKind, jwe: FlattenedJwe): NativeJweInput {
  if (typeof jwe !== 'object' || jwe === null) throw new InvalidArgumentError('expected a flattened JWE {protected, encrypted_key, iv, ciphertext, tag}');
  // KBS sends exactly the five members (parseFlattenedJwe enforces it); these three would change the
  // AAD or carry header parameters outside the authenticated header.
  for (const m of ['aad', 'header', 'unprotected']) {
    if (m in jwe) throw new InvalidArgumentError(`a JWE member "${m}" is not accepted (the KBS resource JWE has protected, encrypted_key, iv, ciphertext, tag)`);
  }
  const protectedB64 = jwe.protected;
  if (typeof protectedB64 !== 'string') throw new InvalidArgumentError('JWE protected must be a string');
  const h = header(protectedB64);
  const alg = ALG[kind];
  if (h['alg'] !== alg) {
    throw new InvalidArgumentError(`JWE alg must be ${alg} for this ${kind} key, got ${JSON.stringify(h['alg'])}`);
  }
  if (h['enc'] !== 'A256GCM') throw new InvalidArgumentError(`JWE enc must be A256GCM, got ${JSON.stringify(h['enc'])}`);
  for (const m of REFUSED_MEMBERS) {
    if (m in h) throw new InvalidArgumentError(`JWE protected header member "${m}" is not accepted`);
  }
  const input: NativeJweInput = {
    protectedB64,
    alg,
    encryptedKey: decode(jwe.encrypted_key, 'encrypted_key'),
    iv: decode(jwe.iv, 'iv'),
    ciphertext: decode(jwe.ciphertext, 'ciphertext'),
    tag: decode(jwe.tag, 'tag'),
  };
  if (alg === 'ECDH-ES+A256KW') {
    const epk = h['epk'];
    if (typeof epk !== 'object' || epk === null || Array.isArray(epk)) throw new InvalidArgumentError('JWE epk must be a JWK object');
    const e = epk as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!['kty', 'crv', 'x', 'y'].includes(k)) throw new InvalidArgumentError(`JWE epk has member "${k}": only kty, crv, x, y are accepted`);
    }
    if (e['kty'] !== 'EC' || e['crv'] !== 'P-256') throw new InvalidArgumentError('JWE epk must be an EC P-256 public key');
    const x = decode(e['x'], 'epk.x');
    const y = decode(e['y'], 'epk.y');
    if (x.length !== 32 || y.length !== 32) throw new InvalidArgumentError('JWE epk x and y must be 32 bytes each');
    input.epk = { x, y };
    for (const m of ['apu', 'apv'] as const) {
      if (h[m] === undefined) continue;
      const v = decode(h[m], m);
      if (v.length > MAX_PARTY_INFO) throw new InvalidArgumentError(`JWE ${m} is longer than ${MAX_PARTY_INFO} bytes`);
      input[m] = v;
    }
  } else {
    for (const m of ['epk', 'apu', 'apv']) {
      if (m in h) throw new InvalidArgumentError(`JWE protected header member "${m}" does not belong with ${alg}`);
    }
  }
  return input;
}

/**
 * Opens a data-key JWE (KBS resource) with the session's ephemeral key: the data key goes into a
 * new native key handle, and the manifest bytes come back. A JWE that does not open (made for
 * another key, or altered anywhere) is an IntegrityError; a malformed one an InvalidArgumentError.
 * Nothing is kept on failure.
 */
export function unwrapDataKey(eph: EphemeralKey, jwe: FlattenedJwe): UnwrappedDataKey {
  const native = Ephemeral.native(eph);
  if (native.released) throw new ReleasedError('the ephemeral key was released');
  const input = nativeInput(native.kind, jwe);
  const addon = addonWithJwe();
  return callNative(() => addon.jweUnwrapDataKey(native, input));
}
