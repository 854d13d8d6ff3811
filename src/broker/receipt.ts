/**
 * The receipt a release is answered with: a compact JWS (ES256, the broker's kid) over what went
 * where, tied to the audit entry that records the release, so an auditor with the broker's public
 * key checks each release offline.
 *
 * Two ways to record it, one claim set (the field names of broker-store's ReceiptClaims, so one
 * verifier reads both):
 * - the audit sink writes the release and its receipt in one entry (`appendRelease`, as the
 *   file-backed AuditLog does): the receipt is in the log, `auditHash` is the hash of the entry
 *   before it (an entry cannot contain its own hash);
 * - a sink with only `append` (the AuditSink contract): the entry is appended first and the receipt
 *   signed afterwards over its sequence number and `auditHash` = the hash of that entry itself.
 * Either way the receipt exists only once the entry is written: a receipt always names an entry.
 */
import { randomBytes } from 'node:crypto';
import { CompactSign } from 'jose';
import type { ModelBinding } from '../protocol/resource.js';
import type { AuditEntryInput, AuditSink } from './types.js';
import { SIGNING_ALG, type Signer } from './signer.js';

export const RECEIPT_HEADER = 'sealed-tensors-receipt';
export const RECEIPT_TYP = 'sealed-tensors-receipt+jws';

export interface ReleaseFields {
  keyId: string;
  models: ModelBinding[];
  /** RFC 7638 SHA-256 thumbprint (base64url) of the tee-pubkey the key was wrapped to. */
  teePubkey: string;
  /** Hex SHA-256 of the evidence bytes that were appraised. */
  evidenceDigest: string;
  verdict: { allowed: true; reasons: string[] };
  /** Further fields: tee, client, session, policy. */
  [field: string]: unknown;
}

export interface ReceiptClaims extends ReleaseFields {
  receiptId: string;
  auditSeq: number;
  auditHash: string;
  /** Seconds since the epoch. */
  iat: number;
}

export interface RecordedRelease {
  seq: number;
  hash: string;
  receipt: string;
  receiptId: string;
}

/** An audit sink that signs a release's receipt into the release entry itself. */
interface ReleaseRecorder {
  appendRelease(fields: ReleaseFields, signingKey: { alg: 'ES256'; kid: string; privateKey: unknown; publicJwk: unknown }): Promise<RecordedRelease>;
}

function isRecorder(sink: AuditSink): sink is AuditSink & ReleaseRecorder {
  return typeof (sink as Partial<ReleaseRecorder>).appendRelease === 'function';
}

export async function signReceipt(signer: Signer, claims: ReceiptClaims): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: SIGNING_ALG, kid: signer.kid, typ: RECEIPT_TYP })
    .sign(signer.privateKey);
}

/**
 * Writes the release to the audit log and returns its receipt. `entry` is the request's audit
 * record (client, tee, evidence summary, checks); `fields` what the receipt states.
 */
export async function recordRelease(audit: AuditSink, signer: Signer, fields: ReleaseFields, entry: AuditEntryInput, nowMs: number): Promise<RecordedRelease> {
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
