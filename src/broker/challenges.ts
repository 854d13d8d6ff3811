/**
 * Pending challenges: the nonce the broker sent with /auth, keyed by the session cookie. Each is
 * fresh (32 random bytes), single-use (taken out of the table by the first /attest that names its
 * cookie, whatever that request's fate) and short-lived; the table is capped so unauthenticated
 * clients cannot grow it without bound. The cap is shared fairly: when it is full, the address
 * holding the most pending challenges gives up its oldest one, so a few addresses cannot make
 * /auth refuse everyone (IPv6 is counted by /64: one host usually holds a whole /64).
 */
import { createHash, randomBytes } from 'node:crypto';
import { clientBucket } from './client-bucket.js';
import { NONCE_BYTES } from '../protocol/messages.js';

/** Session ids: 32 random bytes, base64url (43 characters). */
export const SESSION_ID_BYTES = 32;
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export interface PendingChallenge {
  nonce: string;
  /** The tee the client named in /auth; its evidence is decoded as this type. */
  tee: string;
  expiresAt: number;
  /** Short, non-secret handle of the session for the audit log. */
  sessionRef: string;
  /** The client's address bucket (clientBucket). */
  bucket: string;
}

export type TakeResult = { ok: true; challenge: PendingChallenge } | { ok: false; reason: string };

/** The key a session id is stored under: its SHA-256, so tables and logs never hold the cookie itself. */
export function sessionKey(sessionId: string): string {
  return createHash('sha256').update(sessionId, 'utf8').digest('hex');
}

export function isSessionId(value: string): boolean {
  return SESSION_ID.test(value);
}

// Shared with the rate limiter and the connection cap (client-bucket.ts); re-exported for callers of this module.
export { clientBucket };

export class ChallengeTable {
  private readonly pending = new Map<string, PendingChallenge>();
  /** Pending challenge keys per address bucket, oldest first. */
  private readonly byBucket = new Map<string, Set<string>>();

  constructor(
    private readonly ttlMs: number,
    readonly max: number,
  ) {}

  /**
   * A new challenge for a client at `clientIp`. When `max` unexpired challenges are pending, the
   * address bucket holding the most gives up its oldest one; undefined (refused) when that bucket
   * is the client's own, or ties with it: a client never pushes out its own challenges, nor takes
   * a slot from one no heavier than itself.
   */
  issue(tee: string, nowMs: number, clientIp: string): { sessionId: string; challenge: PendingChallenge } | undefined {
    this.prune(nowMs);
    const bucket = clientBucket(clientIp);
    if (this.pending.size >= this.max) {
      const own = this.byBucket.get(bucket)?.size ?? 0;
      let heaviest: Set<string> | undefined;
      for (const keys of this.byBucket.values()) if (heaviest === undefined || keys.size > heaviest.size) heaviest = keys;
      if (heaviest === undefined || heaviest.size <= own) return undefined;
      this.remove(heaviest.values().next().value as string);
    }
    const sessionId = randomBytes(SESSION_ID_BYTES).toString('base64url');
    const key = sessionKey(sessionId);
    const challenge: PendingChallenge = { nonce: randomBytes(NONCE_BYTES).toString('base64'), tee, expiresAt: nowMs + this.ttlMs, sessionRef: key.slice(0, 16), bucket };
    this.pending.set(key, challenge);
    let keys = this.byBucket.get(bucket);
    if (keys === undefined) this.byBucket.set(bucket, (keys = new Set()));
    keys.add(key);
    return { sessionId, challenge };
  }

  private remove(key: string): void {
    const c = this.pending.get(key);
    if (c === undefined) return;
    this.pending.delete(key);
    const keys = this.byBucket.get(c.bucket);
    keys?.delete(key);
    if (keys?.size === 0) this.byBucket.delete(c.bucket);
  }

  /** Removes and returns the challenge of this session id; a second call for it finds nothing. */
  take(sessionId: string, nowMs: number): TakeResult {
    if (!isSessionId(sessionId)) return { ok: false, reason: 'the session cookie is not one this broker issues' };
    const key = sessionKey(sessionId);
    const c = this.pending.get(key);
    if (c === undefined) return { ok: false, reason: 'no pending challenge for this session: unknown, already used, expired, or given up for another client when the table was full (request /auth again)' };
    this.remove(key);
    if (nowMs >= c.expiresAt) return { ok: false, reason: `the challenge expired at ${new Date(c.expiresAt).toISOString()} (request /auth again)` };
    return { ok: true, challenge: c };
  }

  get size(): number {
    return this.pending.size;
  }

  /**
   * Drops expired challenges. All share one lifetime, so insertion order is expiry order and the
   * sweep stops at the first live one (a clock set back only delays pruning).
   */
  private prune(nowMs: number): void {
    for (const [k, c] of this.pending) {
      if (nowMs < c.expiresAt) break;
      this.remove(k);
    }
  }
}
