/**
 * Per-client token buckets: each client address may make `burst` requests at once and
 * `perSecond` more every second. The table of clients is bounded, so a flood of source addresses
 * costs memory only up to `maxClients` (full buckets are forgotten first: a client that has not
 * been limited loses nothing by being forgotten).
 */
import { InvalidArgumentError } from '../errors.js';

export interface RateLimitOptions {
  /** Requests a client may make at once. Default 120. */
  burst?: number;
  /** Sustained requests per second per client. Default 60. */
  perSecond?: number;
  /** Clients tracked at most. Default 10_000. */
  maxClients?: number;
}

export const DEFAULT_RATE_LIMIT = Object.freeze({ burst: 120, perSecond: 60, maxClients: 10_000 });

export interface RateDecision {
  allowed: boolean;
  /** True for the first refusal after the client was last allowed: the one worth auditing. */
  firstRefusal: boolean;
  /** Seconds until one more request is allowed (when refused). */
  retryAfterSeconds: number;
}

interface Bucket {
  tokens: number;
  at: number;
  limited: boolean;
}

export class RateLimiter {
  readonly burst: number;
  readonly perSecond: number;
  readonly maxClients: number;
  private readonly buckets = new Map<string, Bucket>();

  constructor(opts: RateLimitOptions = {}, private readonly clock: () => number = () => performance.now()) {
    this.burst = opts.burst ?? DEFAULT_RATE_LIMIT.burst;
    this.perSecond = opts.perSecond ?? DEFAULT_RATE_LIMIT.perSecond;
    this.maxClients = opts.maxClients ?? DEFAULT_RATE_LIMIT.maxClients;
    for (const [name, v] of [['burst', this.burst], ['perSecond', this.perSecond], ['maxClients', this.maxClients]] as const) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidArgumentError(`rate limit ${name} must be a positive number, got ${String(v)}`);
    }
  }

  /** Takes one token for `client` (its address). */
  take(client: string): RateDecision {
    const now = this.clock();
    let b = this.buckets.get(client);
    if (b === undefined) {
      if (this.buckets.size >= this.maxClients) this.evict(now);
      b = { tokens: this.burst, at: now, limited: false };
      this.buckets.set(client, b);
    } else {
      // Time only moves forward here: a clock set back refills nothing.
      const elapsed = Math.max(0, now - b.at) / 1000;
      b.tokens = Math.min(this.burst, b.tokens + elapsed * this.perSecond);
      b.at = Math.max(b.at, now);
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.limited = false;
      return { allowed: true, firstRefusal: false, retryAfterSeconds: 0 };
    }
    const firstRefusal = !b.limited;
    b.limited = true;
    return { allowed: false, firstRefusal, retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / this.perSecond)) };
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Forgets refilled buckets; if every client is mid-burst, the oldest entry goes. */
  private evict(now: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + (Math.max(0, now - b.at) / 1000) * this.perSecond >= this.burst) this.buckets.delete(k);
    }
    if (this.buckets.size >= this.maxClients) {
      const oldest = this.buckets.keys().next();
      if (!oldest.done) this.buckets.delete(oldest.value);
    }
  }
}
