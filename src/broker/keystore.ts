/**
 * The broker's keystore: which data keys it holds, which sealed models each may open, which
 * policy guards each, and whether a key was revoked.
 *
 * `Keystore` is the interface the server uses; `FileKeystore` is the embedded default, one JSON
 * file (keystore.json) next to the key-encryption key (kek):
 * - each data key is wrapped with AES-256-GCM under a key derived from the kek, with a fresh random
 *   96-bit nonce per wrapping and AAD binding the key id and the record's version;
 * - the whole file is authenticated with HMAC-SHA256 under another key derived from the kek (over
 *   its JCS form), so no state, model list or policy pin can be edited without the kek;
 * - every write is atomic (temp, fsync, rename, folder fsync) and bumps a generation number that
 *   the audit log records too; a revoked key's wrapped bytes are deleted from the file.
 * Rollback (an old, authentic keystore.json copied back) is caught against the audit log: its
 * generation must not be behind the log's, and every key the log records as revoked must be
 * revoked here. A crash between the keystore write and its audit entry is repaired at the next
 * open: the keystore keeps its last change, which is then appended (marked "recovered").
 *
 * An HSM (PKCS#11) backend implements the same interface: it never exports a key except into
 * withDataKey's callback, and its metadata may stay in a file like this one.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, createSecretKey, type KeyObject } from 'node:crypto';
import { stat } from 'node:fs/promises';
import canonicalize from 'canonicalize';
import { constantTimeEqual } from '../bytes.js';
import { InvalidArgumentError, KeyRevokedError, KeystoreError, NotFoundError, SealedTensorsError } from '../errors.js';
import { DATA_KEY_LENGTH, KEY_ID_PATTERN } from '../format/constants.js';
import type { ModelBinding } from '../protocol/resource.js';
import type { AuditLog } from './audit.js';
import type { KeyRecord as BaseKeyRecord, Keystore } from './types.js';
import { BROKER_FILES, brokerPaths } from './config.js';
import { readGuardedFile, writeFileAtomic } from './files.js';
import { withBrokerLock } from './lock.js';
import { Mutex } from './mutex.js';
import { POLICY_NAME, pinPolicy } from './policies.js';

export type { ModelBinding } from '../protocol/resource.js';
export type { Keystore } from './types.js';

/** The file keystore's record: the contract's KeyRecord and what this store tracks besides. */
export interface KeyRecord extends BaseKeyRecord {
  /** Hex SHA-256 the policy file must still have. */
  policyDigest: string;
  updatedAt: string;
  /** Rotation: the key this one replaced, or the key that replaced this one. */
  rotatedFrom?: string;
  rotatedTo?: string;
  /** Bumped at every change of the record; bound into the wrapping's AAD. */
  version: number;
}

export interface AddKeyOptions {
  keyId: string;
  models: ModelBinding[];
  /** Policy name under policies/. */
  policy: string;
}

export interface RotateOptions extends Omit<AddKeyOptions, 'policy'> {
  /** Default: the old key's policy. */
  policy?: string;
  /** Keep the old key active (for sessions still loading models sealed under it); default: revoke it. */
  keepOld?: boolean;
}

/** The file keystore's whole interface: the server's Keystore contract plus the management operations. */
export interface ManagedKeystore extends Keystore {
  list(): Promise<KeyRecord[]>;
  get(keyId: string): Promise<KeyRecord | undefined>;
  /**
   * Calls `fn` with the active key's bytes (and its record); the bytes are wiped when `fn` settles.
   * Unknown key: NotFoundError. Revoked key: KeyRevokedError. Never hands out a revoked key.
   */
  withDataKey<T>(keyId: string, fn: (key: Uint8Array, record: KeyRecord) => Promise<T>): Promise<T>;
  add(key: Uint8Array, opts: AddKeyOptions): Promise<KeyRecord>;
  /** Binds more models to an active key (a model re-sealed under the same key). */
  addModels(keyId: string, models: ModelBinding[]): Promise<KeyRecord>;
  /** Adds `newKey` as the successor of `oldKeyId`; revokes the old key unless `keepOld`. */
  rotate(oldKeyId: string, newKey: Uint8Array, opts: RotateOptions): Promise<KeyRecord>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// The file format

const KIND = 'sealed-tensors-keystore';
export const MAX_KEYSTORE_BYTES = 64 * 1024 * 1024;
export const MAX_KEYS = 100_000;
export const MAX_MODELS_PER_KEY = 10_000;
const MAX_REASON = 1024;
const MAX_LABEL = 256;
const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const B64URL = (n: number): RegExp => new RegExp(`^[A-Za-z0-9_-]{${n}}$`);
const NONCE_B64 = B64URL(16); // 12 bytes
const CT_B64 = B64URL(64); // 32-byte key + 16-byte tag
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const WRAP_INFO = 'sealed-tensors keystore v1 wrap';
const MAC_INFO = 'sealed-tensors keystore v1 mac';

interface StoredRecord extends KeyRecord {
  /** Present while active; deleted at revocation. */
  wrap?: { alg: 'A256GCM'; nonce: string; ciphertext: string };
}

export interface KeystoreDocument {
  kind: typeof KIND;
  version: 1;
  /** Bumped at every write; the audit log records it too. */
  generation: number;
  /** The audit entry of the last write, re-appended if a crash lost it. */
  lastChange: { event: string; fields: Record<string, unknown> } | null;
  keys: StoredRecord[];
  mac: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function noControl(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return !/[\u0000-\u001f\u007f]/.test(s);
}

/** Checks a model list (from a caller or the file); returns a clean copy. */
export function checkModels(models: unknown, where: string, Err: new (m: string) => SealedTensorsError = InvalidArgumentError): ModelBinding[] {
  if (!Array.isArray(models)) throw new Err(`${where}: models must be a list`);
  if (models.length > MAX_MODELS_PER_KEY) throw new Err(`${where}: more than ${MAX_MODELS_PER_KEY} models`);
  return models.map((m, i) => {
    if (!isObject(m)) throw new Err(`${where}: model ${i} must be an object`);
    for (const k of Object.keys(m)) if (!['bundleId', 'headerDigest', 'label'].includes(k)) throw new Err(`${where}: model ${i} has an unknown member "${k}"`);
    if (typeof m.bundleId !== 'string' || !HEX32.test(m.bundleId)) throw new Err(`${where}: model ${i} bundleId must be 32 lower-case hex characters`);
    if (typeof m.headerDigest !== 'string' || !HEX64.test(m.headerDigest)) throw new Err(`${where}: model ${i} headerDigest must be 64 lower-case hex characters`);
    if (m.label !== undefined && (typeof m.label !== 'string' || m.label.length > MAX_LABEL || !noControl(m.label))) {
      throw new Err(`${where}: model ${i} label must be a string of at most ${MAX_LABEL} characters without control characters`);
    }
    return { bundleId: m.bundleId, headerDigest: m.headerDigest, ...(m.label !== undefined ? { label: m.label as string } : {}) };
  });
}

function checkKeyId(keyId: unknown, Err: new (m: string) => SealedTensorsError = InvalidArgumentError): asserts keyId is string {
  if (typeof keyId !== 'string' || !KEY_ID_PATTERN.test(keyId)) throw new Err('key id must be 1 to 255 characters from A-Z a-z 0-9 . _ : / -');
}

const RECORD_KEYS = ['keyId', 'state', 'models', 'policy', 'policyDigest', 'createdAt', 'updatedAt', 'revokedAt', 'revocationReason', 'rotatedFrom', 'rotatedTo', 'version', 'wrap'];

function parseRecord(r: unknown, i: number): StoredRecord {
  const bad = (why: string): never => {
    throw new KeystoreError(`keystore.json key ${i}: ${why}`);
  };
  if (!isObject(r)) bad('not an object');
  const o = r as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!RECORD_KEYS.includes(k)) bad(`unknown member "${k}"`);
  checkKeyId(o.keyId, KeystoreError);
  if (o.state !== 'active' && o.state !== 'revoked') bad('state must be "active" or "revoked"');
  const models = checkModels(o.models, `keystore.json key ${i}`, KeystoreError);
  if (typeof o.policy !== 'string' || !POLICY_NAME.test(o.policy)) bad('policy must be a policy name');
  if (typeof o.policyDigest !== 'string' || !HEX64.test(o.policyDigest)) bad('policyDigest must be a hex SHA-256');
  for (const k of ['createdAt', 'updatedAt']) if (typeof o[k] !== 'string' || !TIME.test(o[k] as string)) bad(`${k} must be an ISO 8601 UTC time`);
  if (typeof o.version !== 'number' || !Number.isSafeInteger(o.version) || o.version < 1) bad('version must be a positive integer');
  for (const k of ['rotatedFrom', 'rotatedTo']) if (o[k] !== undefined) checkKeyId(o[k], KeystoreError);
  if (o.state === 'revoked') {
    if (typeof o.revokedAt !== 'string' || !TIME.test(o.revokedAt)) bad('a revoked key needs revokedAt');
    if (typeof o.revocationReason !== 'string' || o.revocationReason.length > MAX_REASON) bad('a revoked key needs revocationReason');
    if (o.wrap !== undefined) bad('a revoked key must not keep its wrapped key');
  } else {
    if (o.revokedAt !== undefined || o.revocationReason !== undefined) bad('an active key has no revokedAt or revocationReason');
    const w = o.wrap;
    if (!isObject(w) || Object.keys(w).length !== 3 || w.alg !== 'A256GCM' || typeof w.nonce !== 'string' || !NONCE_B64.test(w.nonce) || typeof w.ciphertext !== 'string' || !CT_B64.test(w.ciphertext)) {
      bad('an active key needs wrap {alg "A256GCM", nonce (12 bytes), ciphertext (48 bytes)}, base64url');
    }
  }
  return o as unknown as StoredRecord;
}

/**
 * Parses keystore.json's bytes into a document, strictly (unknown members, wrong types, duplicate
 * key ids refused). Does not authenticate it: FileKeystore checks the MAC. Throws KeystoreError only.
 */
export function parseKeystoreDocument(bytes: Uint8Array): KeystoreDocument {
  if (bytes.length > MAX_KEYSTORE_BYTES) throw new KeystoreError(`keystore.json is larger than ${MAX_KEYSTORE_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new KeystoreError('keystore.json is not valid UTF-8 JSON: it was damaged or replaced', { cause });
  }
  if (!isObject(doc)) throw new KeystoreError('keystore.json is not a JSON object');
  for (const k of Object.keys(doc)) if (!['kind', 'version', 'generation', 'lastChange', 'keys', 'mac'].includes(k)) throw new KeystoreError(`keystore.json has an unknown member "${k}"`);
  if (doc.kind !== KIND || doc.version !== 1) throw new KeystoreError(`keystore.json is not a version 1 ${KIND}`);
  if (typeof doc.generation !== 'number' || !Number.isSafeInteger(doc.generation) || doc.generation < 0) throw new KeystoreError('keystore.json generation must be a non-negative integer');
  if (typeof doc.mac !== 'string' || !HEX64.test(doc.mac)) throw new KeystoreError('keystore.json mac must be 64 hex characters');
  const lc = doc.lastChange;
  if (lc !== null && (!isObject(lc) || typeof lc.event !== 'string' || !isObject(lc.fields) || Object.keys(lc).length !== 2)) {
    throw new KeystoreError('keystore.json lastChange must be null or {event, fields}');
  }
  if ((lc === null) !== (doc.generation === 0)) throw new KeystoreError('keystore.json lastChange must be null exactly at generation 0');
  if (!Array.isArray(doc.keys)) throw new KeystoreError('keystore.json keys must be a list');
  if (doc.keys.length > MAX_KEYS) throw new KeystoreError(`keystore.json holds more than ${MAX_KEYS} keys`);
  const keys = doc.keys.map(parseRecord);
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k.keyId)) throw new KeystoreError(`keystore.json lists key "${k.keyId}" twice`);
    seen.add(k.keyId);
  }
  return doc as unknown as KeystoreDocument;
}

/** The keys derived from the kek: one wraps data keys, one authenticates the file. */
export function deriveKeystoreKeys(kek: KeyObject): { wrap: KeyObject; mac: KeyObject } {
  const derive = (info: string): KeyObject => {
    const raw = new Uint8Array(hkdfSync('sha256', kek, new Uint8Array(0), info, 32));
    try {
      return createSecretKey(raw);
    } finally {
      raw.fill(0);
    }
  };
  return { wrap: derive(WRAP_INFO), mac: derive(MAC_INFO) };
}

/** HMAC-SHA256 over the JCS (RFC 8785) form of the document without its mac. */
export function keystoreMac(macKey: KeyObject, doc: Omit<KeystoreDocument, 'mac'> | Record<string, unknown>): string {
  const { mac: _mac, ...rest } = doc as Record<string, unknown>;
  const text = canonicalize(rest);
  if (text === undefined) throw new KeystoreError('keystore document cannot be canonicalized');
  return createHmac('sha256', macKey).update('sealed-tensors keystore v1\n').update(text).digest('hex');
}

function wrapAad(keyId: string, version: number): Uint8Array {
  return new TextEncoder().encode(`${WRAP_INFO}\0${keyId}\0${version}`);
}

function wrapKey(wrapKeyObj: KeyObject, key: Uint8Array, keyId: string, version: number): NonNullable<StoredRecord['wrap']> {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', wrapKeyObj, nonce, { authTagLength: 16 });
  c.setAAD(wrapAad(keyId, version));
  const ct = Buffer.concat([c.update(key), c.final(), c.getAuthTag()]);
  return { alg: 'A256GCM', nonce: nonce.toString('base64url'), ciphertext: ct.toString('base64url') };
}

/** Unwraps into memory of its own (not Node's Buffer pool); the caller wipes it. */
function unwrapKey(wrapKeyObj: KeyObject, wrap: NonNullable<StoredRecord['wrap']>, keyId: string, version: number): Uint8Array {
  const ct = Buffer.from(wrap.ciphertext, 'base64url');
  const out = new Uint8Array(new ArrayBuffer(DATA_KEY_LENGTH));
  let plain: Buffer | undefined;
  try {
    const d = createDecipheriv('aes-256-gcm', wrapKeyObj, Buffer.from(wrap.nonce, 'base64url'), { authTagLength: 16 });
    d.setAAD(wrapAad(keyId, version));
    d.setAuthTag(ct.subarray(DATA_KEY_LENGTH));
    plain = d.update(ct.subarray(0, DATA_KEY_LENGTH));
    d.final();
    out.set(plain);
    return out;
  } catch (cause) {
    out.fill(0);
    throw new KeystoreError(`the wrapped key of "${keyId}" does not authenticate: keystore.json was modified (a key moved between records, or changed)`, { cause });
  } finally {
    plain?.fill(0);
  }
}

/** A fresh keystore file's bytes (broker init). */
export function emptyKeystoreBytes(kek: KeyObject): Uint8Array {
  const { mac } = deriveKeystoreKeys(kek);
  const doc = { kind: KIND, version: 1, generation: 0, lastChange: null, keys: [] };
  return new TextEncoder().encode(`${JSON.stringify({ ...doc, mac: keystoreMac(mac, doc) }, null, 2)}\n`);
}

function publicRecord(r: StoredRecord): KeyRecord {
  const { wrap: _wrap, ...rest } = r;
  return structuredClone({ ...rest, models: rest.models.map((m) => ({ ...m })) });
}

// ---------------------------------------------------------------------------------------------

export interface FileKeystoreOptions {
  dir: string;
  kek: KeyObject;
  /** The broker's setting: policies allowing simulated evidence are refused without it. */
  allowSimulated?: boolean;
}

export class FileKeystore implements ManagedKeystore {
  private readonly mutex = new Mutex();
  private closed = false;
  private byId = new Map<string, StoredRecord>();
  private checked = '';

  private constructor(
    private readonly opts: FileKeystoreOptions,
    private readonly path: string,
    private readonly keys: { wrap: KeyObject; mac: KeyObject },
    private readonly audit: AuditLog,
    private doc: KeystoreDocument,
    private stamp: string,
  ) {
    this.setDoc(doc, stamp);
  }

  /**
   * Opens DIR/keystore.json: authenticates it under the kek and checks it against the audit log
   * (rollback, revocations). Repairs a missing audit entry left by a crash, under the folder lock.
   */
  static async open(opts: FileKeystoreOptions, audit: AuditLog): Promise<FileKeystore> {
    const path = brokerPaths(opts.dir).keystore;
    const keys = deriveKeystoreKeys(opts.kek);
    const { doc, stamp } = await readDocument(path, keys.mac);
    const ks = new FileKeystore(opts, path, keys, audit, doc, stamp);
    await audit.refresh();
    let settled = false;
    try {
      // Consistent and not one write ahead: nothing to repair.
      settled = !ks.reconcile(true);
    } catch (err) {
      if (!(err instanceof KeystoreError)) throw err;
    }
    // Otherwise look again holding the lock: a writer may be between its two writes, or a crash left it so.
    if (!settled) await withBrokerLock(opts.dir, () => ks.reloadLocked());
    ks.checked = ks.mark();
    return ks;
  }

  private setDoc(doc: KeystoreDocument, stamp: string): void {
    this.doc = doc;
    this.stamp = stamp;
    this.byId = new Map(doc.keys.map((k) => [k.keyId, k]));
  }

  /** What the last successful reconcile saw: the keystore file, and the keystore changes the log records. */
  private mark(): string {
    return `${this.stamp}|${this.audit.keystoreGeneration}|${this.audit.revokedCount}`;
  }

  /**
   * Re-reads keystore.json if it changed on disk (another process wrote it), catches up with the
   * audit log, and checks the two against each other when either moved.
   */
  private async refresh(): Promise<void> {
    this.assertOpen();
    // The keystore first, then the log: the log is then at least as new as the keystore's previous write.
    const stamp = await stampOf(this.path);
    await this.audit.refresh();
    if (stamp === this.stamp && this.checked === this.mark()) return;
    await this.mutex.run(async () => {
      try {
        const now = await stampOf(this.path);
        if (now !== this.stamp) {
          const { doc, stamp: read } = await readDocument(this.path, this.keys.mac);
          this.setDoc(doc, read);
        }
        await this.audit.refresh();
        this.reconcile(false);
      } catch (err) {
        if (!(err instanceof KeystoreError)) throw err;
        // A writer in another process may have written one file and not yet the other: look again
        // holding the lock, and only then conclude.
        await withBrokerLock(this.opts.dir, () => this.reloadLocked());
      }
      this.checked = this.mark();
    });
  }

  /** Under the folder lock: re-read both files and repair a lost audit entry. */
  private async reloadLocked(): Promise<void> {
    await this.audit.syncLocked();
    const { doc, stamp } = await readDocument(this.path, this.keys.mac);
    this.setDoc(doc, stamp);
    if (this.reconcile(true)) {
      const lc = this.doc.lastChange!;
      await this.audit.appendLocked({ event: lc.event, ...lc.fields, recovered: true });
    }
  }

  /**
   * Checks the keystore against the audit log. Returns true when the keystore is one write ahead
   * of the log and the caller holds the lock: that write's audit entry was lost in a crash.
   */
  private reconcile(locked: boolean): boolean {
    const storeGen = this.doc.generation;
    const auditGen = this.audit.keystoreGeneration;
    if (storeGen < auditGen) {
      throw new KeystoreError(
        `keystore.json is generation ${storeGen}, but the audit log records generation ${auditGen}: it was rolled back to an older copy. Nothing is served from it; restore the newest keystore.json`,
      );
    }
    if (storeGen > auditGen + 1) {
      throw new KeystoreError(
        `keystore.json is generation ${storeGen}, but the audit log records only ${auditGen}: the audit log lost entries or belongs to another keystore`,
      );
    }
    for (const keyId of this.audit.revokedKeys()) {
      const r = this.byId.get(keyId);
      if (!r || r.state !== 'revoked') {
        throw new KeystoreError(
          `the audit log records key "${keyId}" as revoked (entry ${this.audit.revokedAt(keyId)}), but keystore.json ${r ? 'has it active' : 'does not list it'}: keystore.json was rolled back or replaced; a revoked key stays revoked`,
        );
      }
    }
    if (storeGen === auditGen + 1) {
      const lc = this.doc.lastChange;
      if (!lc || lc.fields.generation !== storeGen) throw new KeystoreError('keystore.json is one write ahead of the audit log but does not record that write');
      return locked;
    }
    return false;
  }

  async list(): Promise<KeyRecord[]> {
    await this.refresh();
    return this.doc.keys.map(publicRecord);
  }

  async get(keyId: string): Promise<KeyRecord | undefined> {
    await this.refresh();
    const r = this.byId.get(keyId);
    return r ? publicRecord(r) : undefined;
  }

  async withDataKey<T>(keyId: string, fn: (key: Uint8Array, record: KeyRecord) => Promise<T>): Promise<T> {
    checkKeyId(keyId);
    await this.refresh();
    const r = this.byId.get(keyId);
    if (!r) throw new NotFoundError(`no key "${keyId}" in the keystore`);
    const revokedSeq = this.audit.revokedAt(keyId);
    if (r.state === 'revoked' || revokedSeq !== undefined || !r.wrap) {
      throw new KeyRevokedError(`key "${keyId}" was revoked${r.revokedAt ? ` at ${r.revokedAt}` : ''}${revokedSeq !== undefined ? ` (audit entry ${revokedSeq})` : ''}: it is never released again`);
    }
    const record = publicRecord(r);
    const key = unwrapKey(this.keys.wrap, r.wrap, r.keyId, r.version);
    try {
      return await fn(key, record);
    } finally {
      key.fill(0);
    }
  }

  /**
   * One change: under the folder lock and this keystore's mutex, re-read both files, apply
   * `change` to a copy, write it (generation + 1), then append its audit entry.
   */
  private mutate<T>(change: (doc: KeystoreDocument) => { event: string; fields: Record<string, unknown>; result: T } | { unchanged: T }): Promise<T> {
    this.assertOpen();
    return this.mutex.run(() =>
      withBrokerLock(this.opts.dir, async () => {
        await this.reloadLocked();
        const next = structuredClone(this.doc);
        const out = change(next);
        if ('unchanged' in out) return out.unchanged;
        next.generation = this.doc.generation + 1;
        const fields = { ...out.fields, generation: next.generation };
        next.lastChange = { event: out.event, fields };
        const { mac: _mac, ...body } = next;
        next.mac = keystoreMac(this.keys.mac, body);
        await writeFileAtomic(this.path, `${JSON.stringify(next, null, 2)}\n`, { mode: 0o600 });
        this.setDoc(next, await stampOf(this.path));
        await this.audit.appendLocked({ event: out.event, ...fields });
        this.checked = this.mark();
        return out.result;
      }),
    );
  }

  private async policyPin(name: string): Promise<{ policy: string; policyDigest: string }> {
    const pinned = await pinPolicy(this.opts.dir, name, this.opts.allowSimulated === true);
    return { policy: pinned.name, policyDigest: pinned.digest };
  }

  async add(key: Uint8Array, opts: AddKeyOptions): Promise<KeyRecord> {
    if (!(key instanceof Uint8Array) || key.length !== DATA_KEY_LENGTH) throw new InvalidArgumentError(`a data key must be ${DATA_KEY_LENGTH} bytes`);
    checkKeyId(opts?.keyId);
    const models = dedupe(checkModels(opts.models, 'models'));
    const pin = await this.policyPin(opts.policy);
    return this.mutate<KeyRecord>((doc) => {
      if (doc.keys.some((k) => k.keyId === opts.keyId)) {
        throw new InvalidArgumentError(`key "${opts.keyId}" is already in the keystore (a key id is never reused, even after revocation)`);
      }
      const r = this.newRecord(key, opts.keyId, models, pin);
      doc.keys.push(r);
      return { event: 'key-add', fields: { keyId: r.keyId, models, policy: pin.policy, policyDigest: pin.policyDigest }, result: publicRecord(r) };
    });
  }

  private newRecord(key: Uint8Array, keyId: string, models: ModelBinding[], pin: { policy: string; policyDigest: string }): StoredRecord {
    const now = new Date().toISOString();
    return { keyId, state: 'active', models, ...pin, createdAt: now, updatedAt: now, version: 1, wrap: wrapKey(this.keys.wrap, key, keyId, 1) };
  }

  /** A changed record gets the next version, its key re-wrapped under the new AAD with a new nonce. */
  private bump(r: StoredRecord): void {
    const key = unwrapKey(this.keys.wrap, r.wrap!, r.keyId, r.version);
    try {
      r.version += 1;
      r.wrap = wrapKey(this.keys.wrap, key, r.keyId, r.version);
      r.updatedAt = new Date().toISOString();
    } finally {
      key.fill(0);
    }
  }

  private activeRecord(doc: KeystoreDocument, keyId: string): StoredRecord {
    const r = doc.keys.find((k) => k.keyId === keyId);
    if (!r) throw new NotFoundError(`no key "${keyId}" in the keystore (see broker key list)`);
    if (r.state === 'revoked' || this.audit.revokedAt(keyId) !== undefined) throw new KeyRevokedError(`key "${keyId}" is revoked: it cannot be changed or used again`);
    return r;
  }

  async addModels(keyId: string, models: ModelBinding[]): Promise<KeyRecord> {
    checkKeyId(keyId);
    const add = checkModels(models, 'models');
    return this.mutate<KeyRecord>((doc) => {
      const r = this.activeRecord(doc, keyId);
      const merged = dedupe([...r.models, ...add]);
      const added = merged.slice(r.models.length);
      if (added.length === 0) return { unchanged: publicRecord(r) };
      if (merged.length > MAX_MODELS_PER_KEY) throw new InvalidArgumentError(`a key may list at most ${MAX_MODELS_PER_KEY} models`);
      r.models = merged;
      this.bump(r);
      return { event: 'key-bind', fields: { keyId, models: added }, result: publicRecord(r) };
    });
  }

  /** Replaces an active key's model list (Keystore contract); `addModels` adds to it. */
  async setModels(keyId: string, models: ModelBinding[]): Promise<void> {
    checkKeyId(keyId);
    const list = dedupe(checkModels(models, 'models'));
    await this.mutate<undefined>((doc) => {
      const r = this.activeRecord(doc, keyId);
      if (JSON.stringify(r.models) === JSON.stringify(list)) return { unchanged: undefined };
      r.models = list;
      this.bump(r);
      return { event: 'key-bind', fields: { keyId, models: list, replaced: true }, result: undefined };
    });
  }

  async rotate(oldKeyId: string, newKey: Uint8Array, opts: RotateOptions): Promise<KeyRecord> {
    checkKeyId(oldKeyId);
    checkKeyId(opts?.keyId);
    if (!(newKey instanceof Uint8Array) || newKey.length !== DATA_KEY_LENGTH) throw new InvalidArgumentError(`a data key must be ${DATA_KEY_LENGTH} bytes`);
    if (opts.keyId === oldKeyId) throw new InvalidArgumentError('the new key needs a key id of its own');
    const models = dedupe(checkModels(opts.models, 'models'));
    const current = await this.get(oldKeyId);
    if (!current) throw new NotFoundError(`no key "${oldKeyId}" in the keystore (see broker key list)`);
    if (current.state === 'revoked') throw new KeyRevokedError(`key "${oldKeyId}" is revoked: rotate from an active key, or add the new key with broker key add`);
    const pin = await this.policyPin(opts.policy ?? current.policy);
    return this.mutate<KeyRecord>((doc) => {
      const old = this.activeRecord(doc, oldKeyId);
      if (doc.keys.some((k) => k.keyId === opts.keyId)) throw new InvalidArgumentError(`key "${opts.keyId}" is already in the keystore`);
      if (opts.policy === undefined && (old.policy !== pin.policy || old.policyDigest !== pin.policyDigest)) {
        throw new KeystoreError(`the policy of "${oldKeyId}" changed during the rotation; try again`);
      }
      const r = { ...this.newRecord(newKey, opts.keyId, models, pin), rotatedFrom: oldKeyId };
      const now = new Date().toISOString();
      if (opts.keepOld) {
        old.rotatedTo = opts.keyId;
        this.bump(old);
      } else {
        revokeRecord(old, `rotated to ${opts.keyId}`, now);
        old.rotatedTo = opts.keyId;
      }
      doc.keys.push(r);
      return {
        event: 'key-rotate',
        fields: { keyId: oldKeyId, newKeyId: opts.keyId, oldRevoked: !opts.keepOld, models, policy: pin.policy, policyDigest: pin.policyDigest },
        result: publicRecord(r),
      };
    });
  }

  async revoke(keyId: string, reason: string): Promise<void> {
    checkKeyId(keyId);
    if (typeof reason !== 'string' || reason.length > MAX_REASON || !noControl(reason)) {
      throw new InvalidArgumentError(`a revocation reason is a line of at most ${MAX_REASON} characters`);
    }
    await this.mutate<undefined>((doc) => {
      const r = doc.keys.find((k) => k.keyId === keyId);
      if (!r) throw new NotFoundError(`no key "${keyId}" in the keystore (see broker key list)`);
      if (r.state === 'revoked') return { unchanged: undefined };
      revokeRecord(r, reason, new Date().toISOString());
      return { event: 'key-revoke', fields: { keyId, reason }, result: undefined };
    });
  }

  async setPolicy(keyId: string, policyName: string): Promise<void> {
    checkKeyId(keyId);
    const pin = await this.policyPin(policyName);
    await this.mutate<undefined>((doc) => {
      const r = this.activeRecord(doc, keyId);
      if (r.policy === pin.policy && r.policyDigest === pin.policyDigest) return { unchanged: undefined };
      r.policy = pin.policy;
      r.policyDigest = pin.policyDigest;
      this.bump(r);
      return { event: 'policy-set', fields: { keyId, ...pin }, result: undefined };
    });
  }

  private assertOpen(): void {
    if (this.closed) throw new InvalidArgumentError('the keystore is closed');
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.mutex.run(async () => {});
  }
}

function revokeRecord(r: StoredRecord, reason: string, now: string): void {
  // The wrapped key goes: even the kek cannot bring a revoked key back from this file.
  delete r.wrap;
  r.state = 'revoked';
  r.revokedAt = now;
  r.revocationReason = reason;
  r.version += 1;
  r.updatedAt = now;
}

function dedupe(models: ModelBinding[]): ModelBinding[] {
  const seen = new Set<string>();
  return models.filter((m) => {
    const k = `${m.bundleId}:${m.headerDigest}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

async function stampOf(path: string): Promise<string> {
  try {
    const s = await stat(path, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (cause) {
    throw new KeystoreError(`cannot stat ${path} (${(cause as NodeJS.ErrnoException).code})`, { cause });
  }
}

async function readDocument(path: string, macKey: KeyObject): Promise<{ doc: KeystoreDocument; stamp: string }> {
  // The stamp is taken before reading: a write after it changes the stamp, so it is read again later.
  const stamp = await stampOf(path);
  const bytes = await readGuardedFile(path, BROKER_FILES.keystore, { maxBytes: MAX_KEYSTORE_BYTES, secret: true });
  const doc = parseKeystoreDocument(bytes);
  const want = Buffer.from(keystoreMac(macKey, doc), 'hex');
  if (!constantTimeEqual(want, Buffer.from(doc.mac, 'hex'))) {
    throw new KeystoreError('keystore.json does not authenticate under this kek: it was modified, or the kek is not the one it was written with. Nothing is read from it');
  }
  return { doc, stamp };
}
