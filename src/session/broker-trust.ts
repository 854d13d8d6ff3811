/**
 * What the session trusts the broker's signed answers with, beyond TLS: an optional pinned set of
 * the broker's public ES256 keys (`brokerKey`: a JWK, or a JWK Set holding the token key and the
 * receipt key, as `broker init` writes DIR/broker.jwks). With it, the attestation token must be
 * signed by a pinned key and carry that broker's issuer and audience, and every release must come
 * with a receipt signed by another pinned key (never the token key: whoever can mint tokens must
 * not be able to mint receipts) that names this key id, this session's key and the same models.
 * Without it, the token is checked against the key in its own header (shape only): TLS to the
 * pinned CA is then the only trust in the broker.
 */
import { BrokerTrustError, InvalidArgumentError, ProtocolError, SealedTensorsError } from '../errors.js';
import type { PublicJwk } from '../protocol/jwk.js';
import type { ModelBinding } from '../protocol/resource.js';
import { defaultIssuer, MAX_RECEIPT_LENGTH, RECEIPT_TYP, TOKEN_ALG, tokenAudience } from '../protocol/token.js';

/** A broker public key as a caller gives it: an EC P-256 JWK (public members; `kid` optional). */
export interface BrokerPublicJwk {
  kty?: string;
  crv?: string;
  x?: string;
  y?: string;
  kid?: string;
  [member: string]: unknown;
}

/** One JWK, or a JWK Set (RFC 7517 section 5). */
export type BrokerKeyInput = BrokerPublicJwk | { keys: readonly BrokerPublicJwk[] };

/** jose's key type, without importing jose eagerly (it loads on first use). */
type VerifyKey = Awaited<ReturnType<typeof import('jose').importJWK>>;

interface PinnedKey {
  /** The JWK's kid, or its RFC 7638 thumbprint when it has none (what a sealed-tensors broker uses as kid). */
  kid: string;
  thumbprint: string;
  key: VerifyKey;
}

export interface PinnedBrokerKeys {
  readonly keys: readonly PinnedKey[];
}

/** A broker's key set has the token key and the receipt key; a few spares (rotation) at most. */
const MAX_PINNED_KEYS = 16;

/** Checks and imports `brokerKey`. InvalidArgumentError for anything but P-256 public JWKs. */
export async function pinBrokerKeys(input: unknown): Promise<PinnedBrokerKeys> {
  const { calculateJwkThumbprint, importJWK } = await import('jose');
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidArgumentError('brokerKey must be the broker\'s public JWK or a JWK Set {"keys": [...]} (broker init writes DIR/broker.jwks)');
  }
  const list: unknown[] = 'keys' in input ? (input as { keys: unknown }).keys as unknown[] : [input];
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_PINNED_KEYS) {
    throw new InvalidArgumentError(`brokerKey's "keys" must list 1 to ${MAX_PINNED_KEYS} JWKs`);
  }
  const keys: PinnedKey[] = [];
  for (const [i, jwk] of list.entries()) {
    const where = list.length > 1 ? `brokerKey.keys[${i}]` : 'brokerKey';
    if (typeof jwk !== 'object' || jwk === null) throw new InvalidArgumentError(`${where} is not a JWK`);
    const j = jwk as Record<string, unknown>;
    if ('d' in j) throw new InvalidArgumentError(`${where} holds a private member "d": pin the broker's PUBLIC key (broker.jwks, *.pub.jwk), and keep the private one on the broker`);
    if (j['kty'] !== 'EC' || j['crv'] !== 'P-256' || typeof j['x'] !== 'string' || typeof j['y'] !== 'string') {
      throw new InvalidArgumentError(`${where} must be an EC P-256 public JWK (the broker signs with ES256)`);
    }
    if (j['alg'] !== undefined && j['alg'] !== TOKEN_ALG) throw new InvalidArgumentError(`${where} is for ${String(j['alg'])}, not ${TOKEN_ALG}`);
    if (j['kid'] !== undefined && (typeof j['kid'] !== 'string' || j['kid'].length === 0)) throw new InvalidArgumentError(`${where}.kid must be a non-empty string`);
    const pub = { kty: 'EC', crv: 'P-256', x: j['x'], y: j['y'] };
    let key: VerifyKey;
    let thumbprint: string;
    try {
      key = await importJWK(pub, TOKEN_ALG);
      thumbprint = await calculateJwkThumbprint(pub, 'sha256');
    } catch (cause) {
      throw new InvalidArgumentError(`${where} is not a valid P-256 public key (${(cause as Error).message})`, { cause });
    }
    const kid = typeof j['kid'] === 'string' ? j['kid'] : thumbprint;
    if (keys.some((k) => k.kid === kid)) throw new InvalidArgumentError(`brokerKey names kid ${JSON.stringify(kid)} twice`);
    // Under two kids one key would pass for the token key and for "another pinned key" (the receipt's).
    if (keys.some((k) => k.thumbprint === thumbprint)) throw new InvalidArgumentError(`${where} pins the same key twice (under another kid): list each broker key once`);
    keys.push({ kid, thumbprint, key });
  }
  return { keys };
}

function untrusted(what: string, cause?: unknown): BrokerTrustError {
  return new BrokerTrustError(
    `${what}: this is not the broker whose key was pinned (brokerKey / --broker-key), or something between is answering for it; check the broker URL and the pinned key (broker init writes DIR/broker.jwks)`,
    cause === undefined ? undefined : { cause },
  );
}

function pinnedFor(pinned: PinnedBrokerKeys, kid: unknown, what: string): PinnedKey {
  if (typeof kid !== 'string') {
    // One pinned key and no kid: the signature decides.
    if (kid === undefined && pinned.keys.length === 1) return pinned.keys[0]!;
    throw untrusted(`${what} names no key id (kid) among the pinned ones`);
  }
  const key = pinned.keys.find((k) => k.kid === kid);
  if (!key) throw untrusted(`${what} is signed by key ${JSON.stringify(kid)}, which is not pinned`);
  return key;
}

export interface CheckedToken {
  payload: Record<string, unknown>;
  /** The pinned key that verified it (undefined when nothing is pinned). */
  signer?: PinnedKey;
}

/**
 * Verifies the attestation token's ES256 signature and expiry: with a pinned key set, by a pinned
 * key only, with `iss` the broker's (`issuer`, else the default issuer of the key that signed it)
 * and `aud` exactly tokenAudience(iss); without, by the key in its own header (shape only).
 */
export async function verifyBrokerToken(token: string, pinned: PinnedBrokerKeys | undefined, issuer: string | undefined): Promise<CheckedToken> {
  const { decodeProtectedHeader, EmbeddedJWK, errors: joseErrors, jwtVerify } = await import('jose');
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch (cause) {
    throw new ProtocolError(`the broker's attestation token does not parse (${(cause as Error).message})`, { cause });
  }
  if (header.alg !== TOKEN_ALG) throw new ProtocolError(`the attestation token must be ${TOKEN_ALG}, not ${String(header.alg)}`);
  const signer = pinned ? pinnedFor(pinned, header.kid, "the broker's attestation token") : undefined;
  if (!signer && typeof header.jwk !== 'object') throw new ProtocolError(`the attestation token must be ${TOKEN_ALG} with its key in the header (jwk)`);
  const iss = signer ? (issuer ?? defaultIssuer(signer.thumbprint)) : undefined;
  try {
    const r = signer
      ? await jwtVerify(token, signer.key, { algorithms: [TOKEN_ALG], requiredClaims: ['exp', 'iss', 'aud'], issuer: iss!, audience: tokenAudience(iss!) })
      : await jwtVerify(token, EmbeddedJWK, { algorithms: [TOKEN_ALG], requiredClaims: ['exp'] });
    // jose takes an aud array that merely contains ours; a broker issues exactly one.
    if (signer && r.payload.aud !== tokenAudience(iss!)) throw untrusted(`the broker's attestation token is for the audience ${JSON.stringify(r.payload.aud)}, not exactly ${tokenAudience(iss!)}`);
    return { payload: r.payload as Record<string, unknown>, ...(signer ? { signer } : {}) };
  } catch (cause) {
    if (cause instanceof SealedTensorsError) throw cause;
    if (cause instanceof joseErrors.JWTExpired) {
      throw new ProtocolError("the broker sent an attestation token that has already expired: check this machine's clock and the broker's", { cause });
    }
    if (signer && cause instanceof joseErrors.JWSSignatureVerificationFailed) throw untrusted("the broker's attestation token does not verify with the pinned key it names", cause);
    if (signer && cause instanceof joseErrors.JWTClaimValidationFailed && (cause.claim === 'iss' || cause.claim === 'aud')) {
      throw untrusted(`the broker's attestation token has another ${cause.claim} than the pinned broker's (${cause.claim === 'iss' ? iss : tokenAudience(iss!)})`, cause);
    }
    throw new ProtocolError(`the broker's attestation token does not verify (${(cause as Error).message})`, { cause });
  }
}

export interface ExpectedRelease {
  keyId: string;
  /** RFC 7638 SHA-256 thumbprint of this session's tee-pubkey. */
  teePubkey: string;
  /** The models the released manifest lists. */
  models: readonly ModelBinding[];
}

/**
 * Verifies a release's receipt against the pinned keys: ES256, typ, a pinned key that is not the
 * token's, and claims naming this key id, this session's key and exactly the manifest's models.
 */
export async function verifyReleaseReceipt(receipt: string | undefined, pinned: PinnedBrokerKeys, tokenSigner: PinnedKey, expected: ExpectedRelease): Promise<void> {
  const what = `the broker's receipt for key "${expected.keyId}"`;
  if (receipt === undefined) throw untrusted(`the release of key "${expected.keyId}" came without a receipt; a pinned broker signs one for every release`);
  if (receipt.length > MAX_RECEIPT_LENGTH) throw untrusted(`${what} is longer than ${MAX_RECEIPT_LENGTH} characters`);
  const { compactVerify, decodeProtectedHeader } = await import('jose');
  let header;
  try {
    header = decodeProtectedHeader(receipt);
  } catch (cause) {
    throw untrusted(`${what} does not parse`, cause);
  }
  const signer = pinnedFor(pinned, header.kid, what);
  // By key, not by entry: the token key under another kid is still the token key.
  if (signer === tokenSigner || signer.thumbprint === tokenSigner.thumbprint) throw untrusted(`${what} is signed by the token key; a broker signs receipts with a key of their own`);
  let payload: Uint8Array;
  try {
    const r = await compactVerify(receipt, signer.key, { algorithms: [TOKEN_ALG] });
    if (r.protectedHeader.typ !== RECEIPT_TYP) throw new Error(`typ ${JSON.stringify(r.protectedHeader.typ)} is not ${RECEIPT_TYP}`);
    payload = r.payload;
  } catch (cause) {
    throw untrusted(`${what} does not verify with the pinned key it names (${(cause as Error).message})`, cause);
  }
  let claims: Record<string, unknown>;
  try {
    claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload)) as Record<string, unknown>;
    if (typeof claims !== 'object' || claims === null) throw new Error('not an object');
  } catch (cause) {
    throw untrusted(`${what} has a payload that is not a JSON object`, cause);
  }
  if (claims['keyId'] !== expected.keyId) throw untrusted(`${what} is for key ${JSON.stringify(claims['keyId'])}`);
  if (claims['teePubkey'] !== expected.teePubkey) throw untrusted(`${what} records a release to another session key`);
  if (!sameModels(claims['models'], expected.models)) throw untrusted(`${what} lists other models than the release it came with`);
}

function sameModels(signed: unknown, released: readonly ModelBinding[]): boolean {
  if (!Array.isArray(signed)) return false;
  const id = (m: unknown): string | null => {
    if (typeof m !== 'object' || m === null) return null;
    const { bundleId, headerDigest } = m as Record<string, unknown>;
    return typeof bundleId === 'string' && typeof headerDigest === 'string' ? `${bundleId}/${headerDigest}` : null;
  };
  const a = signed.map(id);
  if (a.includes(null)) return false;
  const b = released.map(id);
  const sa = new Set(a);
  return sa.size === new Set(b).size && b.every((x) => sa.has(x));
}

/** RFC 7638 thumbprint of the session's public JWK (what receipts record as teePubkey). */
export async function jwkThumbprint(jwk: PublicJwk): Promise<string> {
  const { calculateJwkThumbprint } = await import('jose');
  return calculateJwkThumbprint(jwk as unknown as Parameters<typeof calculateJwkThumbprint>[0], 'sha256');
}
