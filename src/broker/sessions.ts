/**
 * Attested sessions, keyed by the hash of the session cookie: what /attest established and
 * /resource releases against. Bounded: at the cap the oldest session is dropped (its client can
 * still present its token).
 */
import type { Claims } from '../attestation/types.js';
import type { PublicJwk } from '../protocol/jwk.js';
import { isSessionId, sessionKey } from './challenges.js';
import type { AttestedDevice } from './devices.js';

export interface AttestedSession {
  tee: string;
  claims: Claims;
  teePubkey: PublicJwk;
  teePubkeyRaw: object;
  /** RFC 7638 thumbprint of the tee-pubkey. */
  teePubkeyThumbprint: string;
  /** The binding the evidence's report data holds (64 bytes; Azure vTPM: the 48-byte digest in the quote's nonce). */
  binding: Uint8Array;
  evidenceDigest: string;
  /** Additional (device) evidence that verified and binds this session, for the key policies. */
  devices?: AttestedDevice[];
  /** ms since the epoch; the session (and its token) is void from then on. */
  expiresAt: number;
  sessionRef: string;
}

export class SessionTable {
  private readonly sessions = new Map<string, AttestedSession>();

  constructor(readonly max: number) {}

  put(sessionId: string, session: AttestedSession, nowMs: number): void {
    const key = sessionKey(sessionId);
    this.sessions.delete(key);
    this.prune(nowMs);
    while (this.sessions.size >= this.max) {
      const oldest = this.sessions.keys().next();
      if (oldest.done) break;
      this.sessions.delete(oldest.value);
    }
    this.sessions.set(key, session);
  }

  /** The live session of this cookie value, or undefined (unknown, malformed or expired). */
  get(sessionId: string, nowMs: number): AttestedSession | undefined {
    if (!isSessionId(sessionId)) return undefined;
    const key = sessionKey(sessionId);
    const s = this.sessions.get(key);
    if (s === undefined) return undefined;
    if (nowMs >= s.expiresAt) {
      this.sessions.delete(key);
      return undefined;
    }
    return s;
  }

  get size(): number {
    return this.sessions.size;
  }

  private prune(nowMs: number): void {
    for (const [k, s] of this.sessions) {
      if (nowMs < s.expiresAt) break;
      this.sessions.delete(k);
    }
  }
}
