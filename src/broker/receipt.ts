/**
 * The receipt a release is answered with: a compact JWS (ES256, the broker's kid) over what went
 * where, tied to the audit entry that records the release, so an auditor with the broker's public
 * key checks each release offline.
 *
 * Two ways to record it, one claim set:
 * - the audit sink writes the release and its receipt in one entry (`appendRelease`, as the
 *   file-backed AuditLog does): the receipt is in the log, `auditHash` is the hash of the entry
 *   before it (an entry cannot contain its own hash) and `auditTime` the entry's time;
 * - a sink with only `append` (the AuditSink contract): the entry is appended first and the receipt
 *   signed afterwards over its sequence number and `auditHash` = the hash of that entry itself.
 * Either way the receipt exists only once the entry is written: a receipt always names an entry.
 */
import { randomBytes } from 'node:crypto';
import { calculateJwkThumbprint, CompactSign, compactVerify, importJWK, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { AuditLogError, InvalidArgumentError } from '../errors.js';
import type { ModelBinding } from '../protocol/resource.js';
import type { AuditEntryInput, AuditSink } from './types.js';
import { SIGNING_ALG } from './signer.js';

import { MAX_RECEIPT_LENGTH, RECEIPT_HEADER, RECEIPT_TYP } from '../protocol/token.js';

export { MAX_RECEIPT_LENGTH, RECEIPT_HEADER, RECEIPT_TYP };

/** What a release entry records and its receipt signs (besides the audit position). */
export interface ReleaseFields {
  keyId: string;
  models: ModelBinding[];
  /** RFC 7638 SHA-256 thumbprint (base64url) of the tee-pubkey the key was wrapped to. */
  teePubkey: string;
  /** Hex SHA-256 of the evidence bytes that were appraised. */
  evidenceDigest: string;
  /** The appraisal's outcome: a release is always allowed; reasons are what the server adds. */
  verdict: { allowed: true; reasons: string[] };
  /** Further JSON fields the server records (tee, client, session, policy, notAfter ...). */
  [field: string]: unknown;
}

export interface ReceiptClaims extends ReleaseFields {
  /** Unique per receipt (random). */
  receiptId: string;
  /** Sequence number of the audit entry that records this release. */
  auditSeq: number;
  /** Hex SHA-256: of the entry before it (receipt inside the entry), or of the entry itself (signed after it). */
  auditHash: string;
  /** The entry's `time` (ISO 8601, milliseconds), when the receipt is inside the entry. */
  auditTime?: string;
  /** Seconds since the epoch. */
  iat: number;
}

export interface RecordedRelease {
  seq: number;
  hash: string;
  receipt: string;
  receiptId: string;
}

/** What signs receipts: the broker's receipt key (config.ts receiptKey, signer.ts Signer.receipt), never the token key. */
export interface ReceiptSigner {
  kid: string;
  privateKey: CryptoKey | KeyObject | Uint8Array;
}

/** An audit sink that signs a release's receipt into the release entry itself. */
interface ReleaseRecorder {
  appendRelease(fields: ReleaseFields, signingKey: { alg: 'ES256'; kid: string; privateKey: unknown; publicJwk: unknown }): Promise<RecordedRelease>;
}

function isRecorder(sink: AuditSink): sink is AuditSink & ReleaseRecorder {
  return typeof (sink as Partial<ReleaseRecorder>).appendRelease === 'function';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export async function signReceipt(signer: ReceiptSigner, claims: ReceiptClaims): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: SIGNING_ALG, kid: signer.kid, typ: RECEIPT_TYP })
    .sign(signer.privateKey);
}

/**
 * Writes the release to the audit log and returns its receipt. `entry` is the request's audit
 * record (client, tee, evidence summary, checks); `fields` what the receipt states.
 */
export async function recordRelease(audit: AuditSink, keys: { receipt: ReceiptSigner & { publicJwk: JWK } }, fields: ReleaseFields, entry: AuditEntryInput, nowMs: number): Promise<RecordedRelease> {
  const signer = keys.receipt;
  if (isRecorder(audit)) {
    return audit.appendRelease({ ...fields, tee: entry.tee, client: entry.client, detail: entry.detail }, { alg: SIGNING_ALG, kid: signer.kid, privateKey: signer.privateKey, publicJwk: { ...signer.publicJwk, kid: signer.kid } });
  }
  const receiptId = randomBytes(16).toString('base64url');
  const at = await audit.append({
    ...entry,
    event: 'release',
    verdict: 'allow',
    reasons: [],
    keyIds: [fields.keyId],
    models: fields.models,
    teePubkeyThumbprint: fields.teePubkey,
    evidenceDigest: fields.evidenceDigest,
    detail: { ...entry.detail, receiptId },
  });
  const receipt = await signReceipt(signer, { ...fields, receiptId, auditSeq: at.seq, auditHash: at.hash, iat: Math.floor(nowMs / 1000) });
  return { seq: at.seq, hash: at.hash, receipt, receiptId };
}

/** What verifyReceipt checks a receipt with: the key, and the kid a receipt signed by it must name. */
export interface ReceiptVerifier {
  key: CryptoKey;
  kid: string;
}

/**
 * A public key for verifyReceipt, imported once for many receipts. A JWK without `kid` is known by
 * its RFC 7638 thumbprint (what `broker init` makes every kid), so a receipt's kid is always checked.
 */
export async function receiptVerificationKey(publicJwk: JWK): Promise<ReceiptVerifier> {
  const { kty, crv, x, y } = publicJwk;
  const key = (await importJWK({ kty, crv, x, y }, 'ES256')) as CryptoKey;
  const kid = typeof publicJwk.kid === 'string' ? publicJwk.kid : await calculateJwkThumbprint({ kty: kty!, crv: crv!, x: x!, y: y! }, 'sha256');
  return { key, kid };
}

/**
 * Checks a receipt's signature, header and claim types; returns its claims. Any failure is an
 * AuditLogError saying what was wrong.
 */
export async function verifyReceipt(jws: unknown, verifier: ReceiptVerifier): Promise<ReceiptClaims> {
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
    throw new AuditLogError(`the receipt's signature does not verify with the receipt key (${(cause as Error).message})`, { cause });
  }
  const h = result.protectedHeader;
  if (h.typ !== RECEIPT_TYP) throw new AuditLogError(`the receipt's typ is ${JSON.stringify(h.typ)}, not ${RECEIPT_TYP}`);
  if (typeof verifier.kid !== 'string' || h.kid !== verifier.kid) throw new AuditLogError(`the receipt names key ${JSON.stringify(h.kid)}, not ${String(verifier.kid)}`);
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
  if (k.auditTime !== undefined && (typeof k.auditTime !== 'string' || Number.isNaN(Date.parse(k.auditTime)))) bad('auditTime');
  if (typeof k.iat !== 'number' || !Number.isSafeInteger(k.iat) || k.iat < 0) bad('iat');
  const problem = releaseProblem(k);
  if (problem) bad(problem);
}
