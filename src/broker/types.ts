/**
 * The interfaces the broker's parts meet at: the HTTP front (server.ts) uses a keystore, a policy
 * lookup and an audit sink through these, so a PKCS#11 keystore or a database-backed audit log can
 * replace the file-backed ones without touching the protocol handling.
 */
import type { ModelBinding } from '../protocol/resource.js';
import type { Policy } from '../attestation/policy/policy.js';

export type { ModelBinding } from '../protocol/resource.js';

export interface KeyRecord {
  keyId: string;
  state: 'active' | 'revoked';
  /** The sealed models (top-level file: model file or sealed index) this key may open. */
  models: ModelBinding[];
  /** Name of the key's policy under the broker folder's policies/. */
  policy: string;
  createdAt: string;
  revokedAt?: string;
  revocationReason?: string;
}

export interface Keystore {
  list(): Promise<KeyRecord[]>;
  get(keyId: string): Promise<KeyRecord | undefined>;
  /**
   * Runs `fn` with the key's 32 bytes and wipes them afterwards, whatever `fn` does. Refuses
   * (ERR_DENIED / ERR_NOT_FOUND) a revoked or unknown key: a revoked key is never handed out again.
   */
  withDataKey<T>(keyId: string, fn: (key: Uint8Array) => Promise<T>): Promise<T>;
  add(key: Uint8Array, opts: { keyId: string; models: ModelBinding[]; policy: string }): Promise<KeyRecord>;
  revoke(keyId: string, reason: string): Promise<void>;
  setPolicy(keyId: string, policyName: string): Promise<void>;
  setModels(keyId: string, models: ModelBinding[]): Promise<void>;
}

export interface PolicyStore {
  /** The validated policy by name, or undefined. */
  get(name: string): Promise<Policy | undefined>;
}

export type AuditEvent = 'init' | 'key-add' | 'key-rotate' | 'key-revoke' | 'policy-set' | 'auth' | 'attest' | 'release' | 'deny';

export interface AuditEntryInput {
  event: AuditEvent;
  /** Who asked: remote address and port, session id (never a cookie value that grants access after expiry). */
  client?: string;
  tee?: string;
  /** SHA-256 of the evidence as received, hex. */
  evidenceDigest?: string;
  /** Short claims summary: measurement, tcb, debug, platform. */
  evidenceSummary?: Record<string, unknown>;
  verdict?: 'allow' | 'deny';
  reasons?: string[];
  keyIds?: string[];
  models?: ModelBinding[];
  /** JWK thumbprint (RFC 7638) of the session's tee-pubkey. */
  teePubkeyThumbprint?: string;
  detail?: Record<string, unknown>;
}

export interface AuditAppendResult {
  seq: number;
  /** SHA-256 hex of the appended line. */
  hash: string;
}

export interface AuditSink {
  append(entry: AuditEntryInput): Promise<AuditAppendResult>;
}
