/**
 * The broker's audit log: append-only JSON lines, each chained to the one before it.
 *
 *   {"seq":N,"time":ISO,"prev":hex,"event":"...", ...fields}
 *
 * `prev` is the SHA-256 of the previous line's bytes (without its newline); the first line (seq 0,
 * event "init") chains from the random genesis hash in config.json. Lines are exactly
 * JSON.stringify of their object (no other spacing or key order is accepted), at most
 * MAX_AUDIT_LINE bytes. A release entry carries its receipt: a JWS over the entry's own fields
 * plus `auditSeq` (= seq), `auditHash` (= prev) and `auditTime` (= time), so whoever holds a receipt holds a signed
 * commitment to the whole log before it.
 *
 * What the chain proves: no entry before the last was changed, removed or reordered. What it does
 * not: that the newest entries were not cut off, or the last one edited; a receipt held outside
 * the broker pins everything up to its entry (see docs/BROKER.md).
 *
 * Writers: one at a time per folder (the folder lock). Appends queued in this process while a
 * write is in flight go out together in one write and one fdatasync (group commit).
 */
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { AuditLogError, BrokerConfigError, InvalidArgumentError, IoError, SealedTensorsError } from '../errors.js';
import { decodeProtectedHeader } from 'jose';
import { KEY_ID_PATTERN } from '../format/constants.js';
import { BROKER_FILES, parseBrokerSettings, parsePublicSigningJwk, type BrokerSigningKey } from './config.js';
import { openGuardedFile, readGuardedFile } from './files.js';
import { withBrokerLock } from './lock.js';
import { Mutex } from './mutex.js';
import type { AuditEntryInput, AuditSink } from './types.js';
import { checkReleaseFields, receiptVerificationKey, signReceipt, verifyReceipt, type ReceiptClaims, type ReleaseFields } from './receipt.js';

export { checkReleaseFields, signReceipt, verifyReceipt, receiptVerificationKey, RECEIPT_TYP, type ReceiptClaims, type ReleaseFields } from './receipt.js';

export const MAX_AUDIT_LINE = 256 * 1024;
/** Keystore changes: each names the key and the keystore generation it wrote. */
export const KEYSTORE_EVENTS: ReadonlySet<string> = new Set(['key-add', 'key-bind', 'key-rotate', 'key-revoke', 'policy-set']);
const RESERVED = new Set(['seq', 'time', 'prev', 'event', 'receipt']);
const EVENT = /^[a-z][a-z0-9-]{0,31}$/;
const FIELD = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const READ_CHUNK = 1024 * 1024;

export interface AuditEntry {
  seq: number;
  time: string;
  prev: string;
  event: string;
  [field: string]: unknown;
}

/** Where the chain stands: the next entry gets `seq` and chains from `hash`. */
export interface AuditHead {
  /** Sequence number of the last entry. */
  seq: number;
  /** Hex SHA-256 of the last entry's line. */
  hash: string;
}

export function hashLine(line: Uint8Array): string {
  return createHash('sha256').update(line).digest('hex');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks an entry's fields before it is written: names, reserved words, JSON-ness. */
function checkFields(event: unknown, fields: unknown): asserts fields is Record<string, unknown> {
  if (typeof event !== 'string' || !EVENT.test(event)) throw new InvalidArgumentError(`audit event must match ${EVENT}, got ${JSON.stringify(event)}`);
  if (!isObject(fields)) throw new InvalidArgumentError('audit fields must be an object');
  for (const k of Object.keys(fields)) {
    if (RESERVED.has(k)) throw new InvalidArgumentError(`audit field "${k}" is reserved`);
    if (!FIELD.test(k)) throw new InvalidArgumentError(`audit field name ${JSON.stringify(k)} must match ${FIELD}`);
  }
}

/** The exact line (without newline) for an entry. */
export function formatAuditLine(seq: number, time: string, prev: string, event: string, fields: Record<string, unknown>, receipt?: string): Uint8Array {
  checkFields(event, fields);
  let text: string;
  try {
    text = JSON.stringify({ seq, time, prev, event, ...fields, ...(receipt !== undefined ? { receipt } : {}) });
  } catch (cause) {
    throw new InvalidArgumentError(`audit fields are not JSON: ${(cause as Error).message}`, { cause });
  }
  // What is written must read back as the same text (the parser's canonical-form rule).
  if (JSON.stringify(JSON.parse(text)) !== text) throw new InvalidArgumentError('audit fields do not survive a JSON round trip');
  const line = new TextEncoder().encode(text);
  if (line.length > MAX_AUDIT_LINE) throw new InvalidArgumentError(`an audit entry is limited to ${MAX_AUDIT_LINE} bytes; this one is ${line.length}`);
  return line;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Checks one line (without its newline) at its place in the chain: its form, its seq and prev,
 * and the fields its event requires. Returns the entry, or why it is bad. Never throws.
 */
export function checkAuditLine(line: Uint8Array, expected: { seq: number; prev: string }): { entry: AuditEntry } | { reason: string; prevMismatch?: true } {
  if (line.length > MAX_AUDIT_LINE) return { reason: `line is longer than ${MAX_AUDIT_LINE} bytes` };
  let text: string;
  let value: unknown;
  try {
    text = decoder.decode(line);
    value = JSON.parse(text);
  } catch {
    return { reason: 'line is not valid UTF-8 JSON' };
  }
  if (!isObject(value)) return { reason: 'line is not a JSON object' };
  if (JSON.stringify(value) !== text) return { reason: 'line is not in the form the broker writes (spacing, key order, duplicate keys or number form changed)' };
  const e = value as AuditEntry;
  const keys = Object.keys(e);
  if (keys[0] !== 'seq' || keys[1] !== 'time' || keys[2] !== 'prev' || keys[3] !== 'event') return { reason: 'line does not start with seq, time, prev, event' };
  if (typeof e.seq !== 'number' || !Number.isSafeInteger(e.seq)) return { reason: 'seq is not an integer' };
  if (e.seq !== expected.seq) return { reason: `seq is ${e.seq}, expected ${expected.seq} (an entry was removed, duplicated or moved)` };
  if (typeof e.time !== 'string' || !TIME.test(e.time) || Number.isNaN(Date.parse(e.time))) return { reason: 'time is not an ISO 8601 UTC time' };
  if (typeof e.prev !== 'string' || !HEX64.test(e.prev)) return { reason: 'prev is not a hex SHA-256' };
  if (e.prev !== expected.prev) {
    return e.seq === 0 ? { reason: 'prev is not the genesis hash in config.json' } : { reason: 'prev is not the hash of the entry before it', prevMismatch: true };
  }
  if (typeof e.event !== 'string' || !EVENT.test(e.event)) return { reason: 'event is not a valid event name' };
  for (const k of keys.slice(4)) if (!FIELD.test(k) && k !== 'receipt') return { reason: `field name ${JSON.stringify(k)} is not allowed` };
  if ((e.seq === 0) !== (e.event === 'init')) return { reason: e.seq === 0 ? 'the first entry is not "init"' : '"init" after the first entry' };
  if (e.event === 'init' && e.generation !== 0) return { reason: 'init must record keystore generation 0' };
  if (KEYSTORE_EVENTS.has(e.event)) {
    if (typeof e.keyId !== 'string' || !KEY_ID_PATTERN.test(e.keyId)) return { reason: `${e.event} without a valid keyId` };
    if (typeof e.generation !== 'number' || !Number.isSafeInteger(e.generation) || e.generation < 1) return { reason: `${e.event} without a keystore generation` };
    if (e.event === 'key-rotate' && (typeof e.newKeyId !== 'string' || !KEY_ID_PATTERN.test(e.newKeyId) || typeof e.oldRevoked !== 'boolean')) {
      return { reason: 'key-rotate without newKeyId and oldRevoked' };
    }
  }
  if ((e.event === 'release') !== Object.hasOwn(e, 'receipt')) return { reason: e.event === 'release' ? 'release without a receipt' : 'a receipt outside a release entry' };
  if (Object.hasOwn(e, 'receipt') && keys[keys.length - 1] !== 'receipt') return { reason: 'receipt is not the last field' };
  return { entry: e };
}

/** Keystore facts the chain records, which the keystore checks itself against. */
interface ChainState {
  /** Bytes of the file covered by verified, complete lines. */
  size: number;
  /** Seq of the next entry. */
  seq: number;
  /** Hash the next entry chains from. */
  prev: string;
  /** Highest keystore generation recorded. */
  generation: number;
  /** Revoked key id -> seq of the entry that revoked it. */
  revoked: Map<string, number>;
}

function absorb(state: ChainState, entry: AuditEntry, hash: string, length: number): void {
  state.size += length + 1;
  state.seq = entry.seq + 1;
  state.prev = hash;
  if (typeof entry.generation === 'number' && entry.generation > state.generation) state.generation = entry.generation;
  if (entry.event === 'key-revoke' || (entry.event === 'key-rotate' && entry.oldRevoked === true)) {
    if (!state.revoked.has(entry.keyId as string)) state.revoked.set(entry.keyId as string, entry.seq);
  }
}

type LineItem = { kind: 'line'; line: Uint8Array } | { kind: 'tail'; bytes: Uint8Array } | { kind: 'too-long' };

/**
 * The lines of [from, end) of a file, without their newlines; then the bytes after the last
 * newline if any (an incomplete line), or 'too-long' for a line longer than any entry may be.
 */
async function* readLines(fh: FileHandle, from: number, end: number): AsyncGenerator<LineItem> {
  let carry: Uint8Array = new Uint8Array(0);
  let pos = from;
  const buf = new Uint8Array(READ_CHUNK);
  while (pos < end) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
    if (bytesRead === 0) break;
    pos += bytesRead;
    const data = carry.length ? Buffer.concat([carry, buf.subarray(0, bytesRead)]) : buf.subarray(0, bytesRead);
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      if (nl < 0) break;
      if (nl - start > MAX_AUDIT_LINE) {
        yield { kind: 'too-long' };
        return;
      }
      yield { kind: 'line', line: data.subarray(start, nl) };
      start = nl + 1;
    }
    carry = new Uint8Array(data.subarray(start));
    if (carry.length > MAX_AUDIT_LINE) {
      yield { kind: 'too-long' };
      return;
    }
  }
  if (carry.length > 0) yield { kind: 'tail', bytes: carry };
}

interface Pending {
  event: string;
  fields: Record<string, unknown>;
  signingKey?: BrokerSigningKey;
  resolve(v: AppendResult): void;
  reject(e: unknown): void;
}

export interface AppendResult extends AuditHead {
  /** For a release: the receipt and its id. */
  receipt?: string;
  receiptId?: string;
}

function auditError(state: { seq: number }, line: number, reason: string, dir: string): AuditLogError {
  return new AuditLogError(
    `audit.log entry ${state.seq} (line ${line}) is bad: ${reason}. The broker appends nothing to a broken chain: run "sealed-tensors broker audit verify ${dir}" and restore audit.log from a backup, or investigate`,
  );
}

export class AuditLog implements AuditSink {
  private queue: Pending[] = [];
  /** True while this process holds the folder lock to append. */
  private writing = false;
  /** Orders this process's reads and writes of the chain state (the folder lock orders processes). */
  private readonly mutex = new Mutex();
  private draining = false;
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly path: string,
    private readonly fh: FileHandle,
    private readonly ino: number,
    private state: ChainState,
  ) {}

  /**
   * Opens DIR/audit.log for appending after verifying its whole chain (not the receipts: that is
   * verifyAuditLog's job). A broken chain is refused. An incomplete last line (a crash during a
   * write) is cut off under the folder lock and the cut recorded in a "log-repaired" entry.
   */
  static async open(dir: string): Promise<AuditLog> {
    const settings = parseBrokerSettings(Buffer.from(await readGuardedFile(join(dir, BROKER_FILES.config), BROKER_FILES.config, { maxBytes: 64 * 1024 })).toString('utf8'));
    const path = join(dir, BROKER_FILES.audit);
    const { fh, ino } = await openGuardedFile(path, BROKER_FILES.audit, { append: true });
    const log = new AuditLog(dir, path, fh, ino, {
      size: 0,
      seq: 0,
      prev: settings.auditGenesis,
      generation: 0,
      revoked: new Map(),
    });
    try {
      const torn = await log.catchUp(false);
      if (log.state.seq === 0) throw new AuditLogError(`${path} has no complete init entry: the broker folder was not completed by broker init`);
      if (torn) await withBrokerLock(dir, () => log.mutex.run(() => log.catchUp(true)));
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
    return log;
  }

  /** The last entry. */
  get head(): AuditHead {
    return { seq: this.state.seq - 1, hash: this.state.prev };
  }

  /** Highest keystore generation the log records (as of the last refresh). */
  get keystoreGeneration(): number {
    return this.state.generation;
  }

  /** Seq of the entry that revoked `keyId`, if any (as of the last refresh). */
  revokedAt(keyId: string): number | undefined {
    return this.state.revoked.get(keyId);
  }

  /** Key ids the log records as revoked. */
  revokedKeys(): string[] {
    return [...this.state.revoked.keys()];
  }

  /** How many keys the log records as revoked. */
  get revokedCount(): number {
    return this.state.revoked.size;
  }

  /** Reads entries other processes appended since the last look. */
  async refresh(): Promise<void> {
    this.assertOpen();
    // While this process writes under the folder lock no other process can append, and the
    // write leaves the state current: no need to wait for it.
    if (this.writing) return;
    const st = await stat(this.path).catch(() => undefined);
    if (st && st.ino === this.ino && st.size === this.state.size) return;
    await this.mutex.run(() => this.catchUp(false));
  }

  /** refresh() for a caller holding the folder lock: an incomplete last line is then repaired. */
  async syncLocked(): Promise<void> {
    this.assertOpen();
    await this.mutex.run(() => this.catchUp(true));
  }

  /**
   * Reads what was appended since, checking the chain. Returns whether an incomplete last line is
   * there; with `locked` (the caller holds the folder lock, so no writer is mid-write) such a line
   * is a crash's remnant and is cut off and recorded.
   */
  private async catchUp(locked: boolean): Promise<boolean> {
    let onDisk;
    try {
      onDisk = await stat(this.path);
    } catch (cause) {
      throw new AuditLogError(`${this.path} is gone (${(cause as NodeJS.ErrnoException).code}): it was moved or removed while the broker had it open`, { cause });
    }
    if (onDisk.ino !== this.ino) throw new AuditLogError(`${this.path} was replaced by another file while the broker had it open`);
    if (onDisk.size < this.state.size) throw new AuditLogError(`${this.path} shrank from ${this.state.size} to ${onDisk.size} bytes: entries were removed`);
    if (onDisk.size === this.state.size) return false;
    const next: ChainState = { ...this.state, revoked: new Map(this.state.revoked) };
    let tail: Uint8Array | undefined;
    try {
      for await (const item of readLines(this.fh, next.size, onDisk.size)) {
        if (item.kind === 'tail') tail = item.bytes;
        else {
          const r = item.kind === 'line' ? checkAuditLine(item.line, next) : { reason: `line is longer than ${MAX_AUDIT_LINE} bytes` };
          if ('reason' in r) {
            throw r.prevMismatch
              ? auditError({ seq: next.seq - 1 }, next.seq, `its hash is not the one entry ${next.seq} chains from: it was changed after it was written (or entry ${next.seq}'s prev was)`, this.dir)
              : auditError(next, next.seq + 1, r.reason, this.dir);
          }
          absorb(next, r.entry, hashLine((item as { line: Uint8Array }).line), (item as { line: Uint8Array }).line.length);
        }
      }
    } catch (cause) {
      throw cause instanceof SealedTensorsError ? cause : new IoError(`cannot read ${this.path} (${(cause as Error).message})`, { cause });
    }
    this.state = next;
    if (!tail) return false;
    if (!locked) return true;
    await this.repairTail(tail);
    return false;
  }

  private async repairTail(tail: Uint8Array): Promise<void> {
    try {
      await this.fh.truncate(this.state.size);
      await this.fh.datasync();
    } catch (cause) {
      throw new IoError(`cannot cut the incomplete last line of ${this.path} (${(cause as Error).message})`, { cause });
    }
    const fields: Record<string, unknown> = { truncatedBytes: tail.length, truncatedSha256: hashLine(tail) };
    // The cut bytes are kept in the log itself when they fit, for whoever investigates.
    if (tail.length <= MAX_AUDIT_LINE / 2) fields.truncated = Buffer.from(tail).toString('base64');
    await this.writeLocked([{ event: 'log-repaired', fields }]);
  }

  /**
   * Appends an entry; resolves once it is on disk (fdatasync'd). Fields are JSON, names camelCase;
   * seq, time, prev, event and receipt are the log's own.
   */
  append(entry: AuditEntryInput | { event: string; [field: string]: unknown }): Promise<AuditHead> {
    if (!isObject(entry)) return Promise.reject(new InvalidArgumentError('an audit entry must be an object with an event'));
    const { event, ...fields } = entry as { event: string; [field: string]: unknown };
    return this.enqueue(event, fields);
  }

  /**
   * Appends a release entry with its receipt, signed with the broker's receipt key (never the token key) over the
   * entry's fields and its place in the chain. Resolves with the receipt once the entry is on disk.
   */
  appendRelease(fields: ReleaseFields, signingKey: BrokerSigningKey): Promise<Required<AppendResult>> {
    return this.enqueue('release', { receiptId: '', ...fields }, signingKey) as Promise<Required<AppendResult>>;
  }

  private enqueue(event: unknown, fields: unknown, signingKey?: BrokerSigningKey): Promise<AppendResult> {
    try {
      this.assertOpen();
      checkFields(event, fields);
      // Checked now, at its own call, so that one bad entry cannot fail the batch it would join.
      const probe = formatAuditLine(1, new Date().toISOString(), '0'.repeat(64), event as string, fields, signingKey ? 'receipt' : undefined);
      const r = checkAuditLine(probe, { seq: 1, prev: '0'.repeat(64) });
      if ('reason' in r) throw new InvalidArgumentError(`audit entry "${event}" would be invalid: ${r.reason}`);
      if (signingKey) {
        checkReleaseFields(fields);
        // The receipt repeats the fields (base64url, about 4/3) on the same line.
        if (probe.length > MAX_AUDIT_LINE / 3) throw new InvalidArgumentError(`a release entry's fields are limited to ${Math.floor(MAX_AUDIT_LINE / 3)} bytes; these are ${probe.length}`);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<AppendResult>((resolve, reject) => {
      this.queue.push({ event: event as string, fields: fields as Record<string, unknown>, ...(signingKey ? { signingKey } : {}), resolve, reject });
      if (!this.draining) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0);
        try {
          const results = await withBrokerLock(this.dir, () =>
            this.mutex.run(async () => {
              this.writing = true;
              try {
                await this.catchUp(true);
                return await this.writeLocked(batch);
              } finally {
                this.writing = false;
              }
            }),
          );
          batch.forEach((p, i) => p.resolve(results[i]!));
        } catch (err) {
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /**
   * For code that already holds the folder lock (the keystore): catch up, then append at once.
   * Never call it without holding the lock.
   */
  async appendLocked(entry: { event: string; [field: string]: unknown }): Promise<AuditHead> {
    this.assertOpen();
    const { event, ...fields } = entry;
    checkFields(event, fields);
    const [r] = await this.mutex.run(async () => {
      await this.catchUp(true);
      return this.writeLocked([{ event, fields }]);
    });
    return r!;
  }

  /** Builds, writes and syncs the lines of a batch; the chain state moves only once they are on disk. */
  private async writeLocked(batch: readonly Pick<Pending, 'event' | 'fields' | 'signingKey'>[]): Promise<AppendResult[]> {
    const next: ChainState = { ...this.state, revoked: new Map(this.state.revoked) };
    const lines: Uint8Array[] = [];
    const results: AppendResult[] = [];
    for (const p of batch) {
      const time = new Date().toISOString();
      let line: Uint8Array;
      let extra: { receipt?: string; receiptId?: string } = {};
      if (p.event === 'release') {
        if (!p.signingKey) throw new InvalidArgumentError('a release entry needs the signing key (appendRelease)');
        const receiptId = randomBytes(16).toString('base64url');
        const fields = { ...p.fields, receiptId };
        const claims = { ...fields, auditSeq: next.seq, auditHash: next.prev, auditTime: time, iat: Math.floor(Date.parse(time) / 1000) } as ReceiptClaims;
        const receipt = await signReceipt(p.signingKey, claims);
        line = formatAuditLine(next.seq, time, next.prev, p.event, fields, receipt);
        extra = { receipt, receiptId };
      } else {
        line = formatAuditLine(next.seq, time, next.prev, p.event, p.fields);
      }
      const r = checkAuditLine(line, next);
      if ('reason' in r) throw new InvalidArgumentError(`audit entry "${p.event}" would be invalid: ${r.reason}`);
      const hash = hashLine(line);
      results.push({ seq: next.seq, hash, ...extra });
      absorb(next, r.entry, hash, line.length);
      lines.push(line, new Uint8Array([0x0a]));
    }
    const data = Buffer.concat(lines);
    try {
      for (let done = 0; done < data.length; ) done += (await this.fh.write(data, done, data.length - done)).bytesWritten;
      await this.fh.datasync();
    } catch (cause) {
      throw new IoError(`cannot append to ${this.path} (${(cause as Error).message}); entries of this batch may or may not be in the log`, { cause });
    }
    this.state = next;
    return results;
  }

  private assertOpen(): void {
    if (this.closed) throw new InvalidArgumentError('the audit log is closed');
  }

  /** Waits for queued appends, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    while (this.draining || this.queue.length > 0) await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    await this.fh.close();
  }
}

export interface AuditVerification {
  /** True only if every line is in the chain and every receipt verifies. */
  ok: boolean;
  /** Entries that verified (before the first bad one). */
  entries: number;
  /** Receipts that verified. */
  receipts: number;
  /** The last entry, when all is good. */
  head?: AuditHead;
  /**
   * Receipts given to check (held by clients or auditors) that the log does not hold at their
   * entry: the log was cut or rewritten after they were issued. Any makes `ok` false.
   */
  missingReceipts?: { auditSeq: number; receiptId: string; reason: string }[];
  /** The first entry that failed: its seq (as expected at that place), its 1-based line number, why. */
  firstBad?: { seq: number; line: number; reason: string };
  /** With `list`: every release and denial among the entries that verified, in log order. */
  decisions?: AuditDecision[];
}

/** One release or denial as the log records it (`broker audit verify` lists them). */
export interface AuditDecision {
  seq: number;
  time: string;
  /** The entry's event: `release`, or where the denial happened (`auth`, `attest`, `resource`, `deny`). */
  event: string;
  verdict: 'release' | 'deny';
  keyIds: string[];
  models: { bundleId: string; headerDigest: string; label?: string }[];
  tee?: string;
  client?: string;
  reasons: string[];
  /** A release's receipt id. */
  receiptId?: string;
}

const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

/** The release or denial an entry records, or undefined for any other entry (management, a granted attest). */
function decisionOf(e: AuditEntry): AuditDecision | undefined {
  const release = e.event === 'release';
  if (!release && e.verdict !== 'deny' && e.event !== 'deny') return undefined;
  const keyIds = typeof e.keyId === 'string' ? [e.keyId] : strings(e.keyIds);
  const models = (Array.isArray(e.models) ? e.models : [])
    .filter((m): m is Record<string, unknown> => isObject(m) && typeof m.bundleId === 'string' && typeof m.headerDigest === 'string')
    .map((m) => ({ bundleId: m.bundleId as string, headerDigest: m.headerDigest as string, ...(typeof m.label === 'string' ? { label: m.label } : {}) }));
  const reasons = release ? strings(isObject(e.verdict) ? e.verdict.reasons : undefined) : strings(e.reasons);
  return {
    seq: e.seq,
    time: e.time,
    event: e.event,
    verdict: release ? 'release' : 'deny',
    keyIds,
    models,
    ...(typeof e.tee === 'string' ? { tee: e.tee } : {}),
    ...(typeof e.client === 'string' ? { client: e.client } : {}),
    reasons,
    ...(release && typeof e.receiptId === 'string' ? { receiptId: e.receiptId } : {}),
  };
}

/** Deep equality of JSON values (key order ignored). */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

/** The receipt of a release entry must sign exactly the entry's fields at the entry's place. */
async function checkRelease(entry: AuditEntry, verifier: Awaited<ReturnType<typeof receiptVerificationKey>>): Promise<string | undefined> {
  let claims: ReceiptClaims;
  try {
    claims = await verifyReceipt(entry.receipt, verifier);
  } catch (err) {
    return err instanceof SealedTensorsError ? err.message : 'the receipt does not verify';
  }
  if (claims.auditSeq !== entry.seq) return `the receipt is for audit entry ${claims.auditSeq}, not this one`;
  if (claims.auditHash !== entry.prev) return "the receipt's audit hash is not this entry's prev";
  if (claims.auditTime !== entry.time || claims.iat !== Math.floor(Date.parse(entry.time) / 1000)) return "the receipt's time is not this entry's time";
  const { seq: _s, time: _t, prev: _p, event: _e, receipt: _r, ...fields } = entry;
  const { auditSeq: _a, auditHash: _h, auditTime: _t2, iat: _i, ...signed } = claims;
  if (!jsonEqual(fields, signed)) {
    const differ = [...new Set([...Object.keys(fields), ...Object.keys(signed)])].filter((k) => !jsonEqual(fields[k], (signed as Record<string, unknown>)[k]));
    return `the entry's fields differ from what its receipt signs (${differ.join(', ')})`;
  }
  return undefined;
}

/**
 * Verifies an audit log offline: the chain from the genesis hash, every entry's form, and every
 * receipt against the receipt key (receipt.pub.jwk; the token key's signing.pub.jwk only for receipts
 * written before the folder had a receipt key). Stops at the first bad entry and names it. Needs
 * only config.json (for the genesis hash), the two public keys and audit.log: no secret.
 */
export async function verifyAuditLog(dir: string, opts: { receipts?: readonly string[]; list?: boolean } = {}): Promise<AuditVerification> {
  const read = async (name: string): Promise<string> => {
    try {
      const text = await readFile(join(dir, name), 'utf8');
      if (text.length > 64 * 1024) throw new BrokerConfigError(`${join(dir, name)} is larger than 64 KiB`);
      return text;
    } catch (cause) {
      if (cause instanceof BrokerConfigError) throw cause;
      throw new BrokerConfigError(`cannot read ${join(dir, name)} (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause });
    }
  };
  const settings = parseBrokerSettings(await read(BROKER_FILES.config));
  const tokenKey = await receiptVerificationKey(parsePublicSigningJwk(await read(BROKER_FILES.signingPublicKey)));
  if (tokenKey.kid !== settings.signingKeyId) {
    throw new BrokerConfigError(`${BROKER_FILES.signingPublicKey} has kid ${tokenKey.kid}, but config.json names ${settings.signingKeyId}`);
  }
  tokenKey.kid = settings.signingKeyId;
  let receiptKey: Awaited<ReturnType<typeof receiptVerificationKey>> | undefined;
  if (settings.receiptKeyId !== undefined) {
    receiptKey = await receiptVerificationKey(parsePublicSigningJwk(await read(BROKER_FILES.receiptPublicKey), BROKER_FILES.receiptPublicKey));
    if (receiptKey.kid !== settings.receiptKeyId) {
      throw new BrokerConfigError(`${BROKER_FILES.receiptPublicKey} has kid ${receiptKey.kid}, but config.json names ${settings.receiptKeyId}`);
    }
    receiptKey.kid = settings.receiptKeyId;
  }
  // Receipts are the receipt key's. The token key signed them only in folders made before receipt
  // keys, so it is accepted only before the first entry that names a receipt key (init, or
  // receipt-key-add), and anywhere in a folder that has none.
  let legacy = true;
  const verifierFor = (jws: unknown): Awaited<ReturnType<typeof receiptVerificationKey>> | string => {
    let kid: unknown;
    try {
      kid = decodeProtectedHeader(String(jws)).kid;
    } catch {
      return 'the receipt is not a compact JWS';
    }
    if (receiptKey !== undefined && kid === receiptKey.kid) return receiptKey;
    if (legacy && kid === tokenKey.kid) return tokenKey;
    if (kid === tokenKey.kid) return `the receipt is signed by the token key (${String(kid)}), not by the receipt key ${receiptKey?.kid ?? '(none)'}: receipts after the receipt key was added must be signed by it`;
    return `the receipt names key ${JSON.stringify(kid)}, which is not this broker's receipt key ${receiptKey?.kid ?? '(none)'}`;
  };
  // Receipts held outside the log: each must verify, then be found verbatim at its entry.
  const held = new Map<number, { jws: string; receiptId: string }[]>();
  const missing: NonNullable<AuditVerification['missingReceipts']> = [];
  for (const jws of opts.receipts ?? []) {
    let claims: ReceiptClaims;
    try {
      const verifier = verifierFor(jws);
      if (typeof verifier === 'string') throw new AuditLogError(verifier);
      claims = await verifyReceipt(jws, verifier);
    } catch (err) {
      missing.push({ auditSeq: -1, receiptId: '', reason: `a given receipt does not verify: ${(err as Error).message}` });
      continue;
    }
    held.set(claims.auditSeq, [...(held.get(claims.auditSeq) ?? []), { jws, receiptId: claims.receiptId }]);
  }
  const path = join(dir, BROKER_FILES.audit);
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (cause) {
    throw new BrokerConfigError(`cannot read ${path} (${(cause as NodeJS.ErrnoException).code})`, { cause });
  }
  try {
    const size = (await fh.stat()).size;
    const state: ChainState = { size: 0, seq: 0, prev: settings.auditGenesis, generation: 0, revoked: new Map() };
    let receipts = 0;
    const decisions: AuditDecision[] = [];
    let firstBad: AuditVerification['firstBad'];
    const bad = (reason: string): void => void (firstBad = { seq: state.seq, line: state.seq + 1, reason });
    for await (const item of readLines(fh, 0, size)) {
      if (item.kind === 'tail') {
        bad(`the last line is incomplete (${item.bytes.length} bytes without a newline): a write was cut short`);
        break;
      }
      if (item.kind === 'too-long') {
        bad(`line is longer than ${MAX_AUDIT_LINE} bytes`);
        break;
      }
      const r = checkAuditLine(item.line, state);
      if ('reason' in r) {
        if (r.prevMismatch) {
          // Entry N+1 still chains from what entry N was: N is the one that changed (or N+1's prev).
          firstBad = { seq: state.seq - 1, line: state.seq, reason: `its hash is not the one entry ${state.seq} chains from: entry ${state.seq - 1} was changed after it was written (or entry ${state.seq}'s prev was)` };
        } else bad(r.reason);
        break;
      }
      if (r.entry.event === 'release') {
        const verifier = verifierFor(r.entry.receipt);
        const reason = typeof verifier === 'string' ? verifier : await checkRelease(r.entry, verifier);
        if (reason !== undefined) {
          bad(reason);
          break;
        }
        receipts++;
      }
      for (const h of held.get(r.entry.seq) ?? []) {
        if (h.jws !== r.entry.receipt) missing.push({ auditSeq: r.entry.seq, receiptId: h.receiptId, reason: `entry ${r.entry.seq} does not hold this receipt: the log was rewritten after it was issued` });
      }
      held.delete(r.entry.seq);
      if (opts.list) {
        const d = decisionOf(r.entry);
        if (d) decisions.push(d);
      }
      if (typeof (r.entry as Record<string, unknown>).receiptKeyId === 'string') legacy = false;
      absorb(state, r.entry, hashLine(item.line), item.line.length);
    }
    if (!firstBad) {
      for (const [seq, hs] of held) {
        for (const h of hs) missing.push({ auditSeq: seq, receiptId: h.receiptId, reason: `the log ends at entry ${state.seq - 1}, before this receipt's entry ${seq}: entries were cut off` });
      }
    }
    if (!firstBad && state.seq === 0) bad('the log is empty: it has no init entry');
    const entries = firstBad ? Math.min(state.seq, firstBad.seq) : state.seq;
    return {
      ok: firstBad === undefined && missing.length === 0,
      entries,
      receipts,
      ...(!firstBad && state.seq > 0 ? { head: { seq: state.seq - 1, hash: state.prev } } : {}),
      ...(firstBad ? { firstBad } : {}),
      ...(missing.length ? { missingReceipts: missing } : {}),
      ...(opts.list ? { decisions } : {}),
    };
  } finally {
    await fh.close();
  }
}
