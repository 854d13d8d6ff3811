/**
 * In-memory implementations of the broker interfaces (src/broker/types.ts), for the server's tests
 * only: the file-backed ones are broker-store's. The audit sink keeps a hash chain like the real
 * log, so tests can check that a receipt names the entry that recorded its release.
 */
import { createHash } from 'node:crypto';
import { DeniedError, NotFoundError } from '../../src/errors.js';
import type { Policy } from '../../src/attestation/policy/policy.js';
import type { AuditAppendResult, AuditEntryInput, AuditSink, KeyRecord, Keystore, ModelBinding, PolicyStore } from '../../src/broker/types.js';

export class MemoryKeystore implements Keystore {
  private readonly records = new Map<string, KeyRecord>();
  private readonly keys = new Map<string, Uint8Array>();
  /** Every buffer handed to a withDataKey callback, to check it was wiped afterwards. */
  readonly handedOut: Uint8Array[] = [];

  async list(): Promise<KeyRecord[]> {
    return [...this.records.values()].map((r) => structuredClone(r));
  }
  async get(keyId: string): Promise<KeyRecord | undefined> {
    const r = this.records.get(keyId);
    return r === undefined ? undefined : structuredClone(r);
  }
  async withDataKey<T>(keyId: string, fn: (key: Uint8Array) => Promise<T>): Promise<T> {
    const r = this.records.get(keyId);
    const k = this.keys.get(keyId);
    if (r === undefined || k === undefined) throw new NotFoundError(`no key ${keyId}`);
    if (r.state !== 'active') throw new DeniedError(`key ${keyId} is revoked`);
    const copy = k.slice();
    this.handedOut.push(copy);
    try {
      return await fn(copy);
    } finally {
      copy.fill(0);
    }
  }
  async add(key: Uint8Array, opts: { keyId: string; models: ModelBinding[]; policy: string }): Promise<KeyRecord> {
    const rec: KeyRecord = { keyId: opts.keyId, state: 'active', models: opts.models, policy: opts.policy, createdAt: new Date().toISOString() };
    this.records.set(opts.keyId, rec);
    this.keys.set(opts.keyId, key.slice());
    return structuredClone(rec);
  }
  async revoke(keyId: string, reason: string): Promise<void> {
    const r = this.records.get(keyId);
    if (r === undefined) throw new NotFoundError(`no key ${keyId}`);
    r.state = 'revoked';
    r.revokedAt = new Date().toISOString();
    r.revocationReason = reason;
  }
  async setPolicy(keyId: string, policyName: string): Promise<void> {
    this.records.get(keyId)!.policy = policyName;
  }
  async setModels(keyId: string, models: ModelBinding[]): Promise<void> {
    this.records.get(keyId)!.models = models;
  }
}

export class MemoryPolicies implements PolicyStore {
  readonly policies = new Map<string, Policy>();
  async get(name: string): Promise<Policy | undefined> {
    return this.policies.get(name);
  }
}

export interface AuditLine extends AuditEntryInput {
  seq: number;
  prev: string;
  hash: string;
}

export class MemoryAudit implements AuditSink {
  readonly entries: AuditLine[] = [];
  private last = '0'.repeat(64);
  async append(entry: AuditEntryInput): Promise<AuditAppendResult> {
    const seq = this.entries.length + 1;
    const line = JSON.stringify({ seq, prev: this.last, ...entry });
    const hash = createHash('sha256').update(line).digest('hex');
    this.entries.push({ ...(JSON.parse(line) as AuditEntryInput & { seq: number; prev: string }), hash });
    this.last = hash;
    return { seq, hash };
  }
  clear(): void {
    this.entries.length = 0;
  }
}
