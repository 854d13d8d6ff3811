/**
 * Pending challenges: the nonce the broker sent with /auth, keyed by the session cookie. Each is
 * fresh (32 random bytes), single-use (taken out of the table by the first /attest that names its
 * cookie, whatever that request's fate) and short-lived; the table is capped so unauthenticated
 * clients cannot grow it without bound.
 */
import { createHash, randomBytes } from 'node:crypto';
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
}

export type TakeResult = { ok: true; challenge: PendingChallenge } | { ok: false; reason: string };

/** The key a session id is stored under: its SHA-256, so tables and logs never hold the cookie itself. */
export function sessionKey(sessionId: string): string {
  return createHash('sha256').update(sessionId, 'utf8').digest('hex');
}

export function isSessionId(value: string): boolean {
  return SESSION_ID.test(value);
}

export class ChallengeTable {
  private readonly pending = new Map<string, PendingChallenge>();

  constructor(
    private readonly ttlMs: number,
    readonly max: number,
  ) {}

  /** A new challenge, or undefined when `max` unexpired challenges are already pending. */
  issue(tee: string, nowMs: number): { sessionId: string; challenge: PendingChallenge } | undefined {
    this.prune(nowMs);
    if (this.pending.size >= this.max) return undefined;
    const sessionId = randomBytes(SESSION_ID_BYTES).toString('base64url');
    const key = sessionKey(sessionId);
    const challenge: PendingChallenge = { nonce: randomBytes(NONCE_BYTES).toString('base64'), tee, expiresAt: nowMs + this.ttlMs, sessionRef: key.slice(0, 16) };
    this.pending.set(key, challenge);
    return { sessionId, challenge };
  }

  /** Removes and returns the challenge of this session id; a second call for it finds nothing. */
  take(sessionId: string, nowMs: number): TakeResult {
    if (!isSessionId(sessionId)) return { ok: false, reason: 'the session cookie is not one this broker issues' };
    const key = sessionKey(sessionId);
    const c = this.pending.get(key);
    if (c === undefined) return { ok: false, reason: 'no pending challenge for this session: unknown, already used, or expired (request /auth again)' };
    this.pending.delete(key);
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
      this.pending.delete(k);
    }
  }
}
