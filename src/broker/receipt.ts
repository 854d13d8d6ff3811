/**
 * Release receipts: the broker's signed statement that it released a key, to whom and why, and at
 * which point of its audit chain. A compact JWS (ES256, kid = the signing key's thumbprint) over a
 * JSON payload; an auditor verifies it offline with signing.pub.jwk alone.
 */
import { CompactSign, compactVerify, importJWK, type CryptoKey, type JWK } from 'jose';
import { AuditLogError, InvalidArgumentError } from '../errors.js';
import type { BrokerSigningKey } from './config.js';
import type { ModelBinding } from './keystore.js';

export const RECEIPT_TYP = 'sealed-tensors-receipt+jws';
/** A receipt lists a key's models; thousands of them still fit. */
export const MAX_RECEIPT_LENGTH = 192 * 1024;

/** What a release entry records and its receipt signs (besides the audit position). */
export interface ReleaseFields {
  keyId: string;
  models: ModelBinding[];
  /** RFC 7638 SHA-256 thumbprint (base64url) of the tee-pubkey the key was wrapped to. */
  teePubkey: string;
  /** Hex SHA-256 of the evidence bytes that were appraised. */
  evidenceDigest: string;
  /** The appraisal's outcome: a release is always allowed; reasons are the checks that passed. */
  verdict: { allowed: true; reasons: string[] };
  /** Further JSON fields the server records (tee type, client address, session id ...). */
  [field: string]: unknown;
}

export interface ReceiptClaims extends ReleaseFields {
  /** Unique per receipt (random). */
  receiptId: string;
  /** Sequence number of the audit entry that records this release. */
  auditSeq: number;
  /** Hex SHA-256 of the audit entry before it: the whole history up to the release. */
  auditHash: string;
  /** The entry's `time` (ISO 8601, milliseconds). */
  auditTime: string;
  /** Seconds since the epoch: auditTime, truncated. */
  iat: number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export async function signReceipt(signingKey: BrokerSigningKey, claims: ReceiptClaims): Promise<string> {
  const payload = new TextEncoder().encode(JSON.stringify(claims));
  return new CompactSign(payload).setProtectedHeader({ alg: 'ES256', kid: signingKey.kid, typ: RECEIPT_TYP }).sign(signingKey.privateKey);
}

/** A public key for verifyReceipt, imported once for many receipts. */
export async function receiptVerificationKey(publicJwk: JWK): Promise<{ key: CryptoKey; kid: string | undefined }> {
  const { kty, crv, x, y } = publicJwk;
  const key = (await importJWK({ kty, crv, x, y }, 'ES256')) as CryptoKey;
  return { key, kid: publicJwk.kid };
}

/**
 * Checks a receipt's signature, header and claim types; returns its claims. Any failure is an
 * AuditLogError saying what was wrong.
 */
export async function verifyReceipt(jws: unknown, verifier: { key: CryptoKey; kid: string | undefined }): Promise<ReceiptClaims> {
  if (typeof jws !== 'string' || jws.length > MAX_RECEIPT_LENGTH || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(jws)) {
    throw new AuditLogError('the receipt is not a compact JWS');
  }
  // One text per receipt: base64url with stray low bits would decode to the same bytes.
  if (!jws.split('.').every((part) => Buffer.from(part, 'base64url').toString('base64url') === part)) {
    throw new AuditLogError('the receipt is not canonical base64url');
  }
  let result;
  try {
    result = await compactVerify(jws, verifier.key, { algorithms: ['ES256'] });
  } catch (cause) {
    throw new AuditLogError(`the receipt's signature does not verify with signing.pub.jwk (${(cause as Error).message})`, { cause });
  }
  const h = result.protectedHeader;
  if (h.typ !== RECEIPT_TYP) throw new AuditLogError(`the receipt's typ is ${JSON.stringify(h.typ)}, not ${RECEIPT_TYP}`);
  if (verifier.kid !== undefined && h.kid !== verifier.kid) throw new AuditLogError(`the receipt names signing key ${JSON.stringify(h.kid)}, not ${verifier.kid}`);
  let claims: unknown;
  try {
    claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(result.payload));
  } catch (cause) {
    throw new AuditLogError('the receipt payload is not JSON', { cause });
  }
  checkReceiptClaims(claims);
  return claims;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** The release fields a receipt signs, checked (the audit position and time aside). */
function releaseProblem(k: Record<string, unknown>): string | undefined {
  if (typeof k.keyId !== 'string' || k.keyId.length === 0) return 'keyId';
  if (!Array.isArray(k.models) || !k.models.every((m) => isObject(m) && typeof m.bundleId === 'string' && typeof m.headerDigest === 'string')) return 'models';
  if (typeof k.teePubkey !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(k.teePubkey)) return 'teePubkey (an RFC 7638 SHA-256 thumbprint)';
  if (typeof k.evidenceDigest !== 'string' || !HEX64.test(k.evidenceDigest)) return 'evidenceDigest (hex SHA-256)';
  const v = k.verdict;
  if (!isObject(v) || v.allowed !== true || !Array.isArray(v.reasons) || !v.reasons.every((r) => typeof r === 'string')) return 'verdict ({allowed: true, reasons: string[]})';
  return undefined;
}

/** Before a release is written: its fields must be what a receipt verifier accepts. */
export function checkReleaseFields(fields: unknown): asserts fields is ReleaseFields {
  if (!isObject(fields)) throw new InvalidArgumentError('release fields must be an object');
  const problem = releaseProblem(fields);
  if (problem) throw new InvalidArgumentError(`release fields: invalid ${problem}`);
}

function checkReceiptClaims(c: unknown): asserts c is ReceiptClaims {
  const bad = (why: string): never => {
    throw new AuditLogError(`the receipt's claims are invalid: ${why}`);
  };
  if (!isObject(c)) bad('not an object');
  const k = c as Record<string, unknown>;
  if (typeof k.receiptId !== 'string' || !/^[A-Za-z0-9_-]{16,64}$/.test(k.receiptId)) bad('receiptId');
  if (typeof k.auditSeq !== 'number' || !Number.isSafeInteger(k.auditSeq) || k.auditSeq < 1) bad('auditSeq');
  if (typeof k.auditHash !== 'string' || !HEX64.test(k.auditHash)) bad('auditHash');
  if (typeof k.auditTime !== 'string' || Number.isNaN(Date.parse(k.auditTime))) bad('auditTime');
  if (typeof k.iat !== 'number' || !Number.isSafeInteger(k.iat) || k.iat < 0) bad('iat');
  const problem = releaseProblem(k);
  if (problem) bad(problem);
}
