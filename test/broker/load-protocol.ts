/** What test/broker/load.test.ts and its broker child (load-child.ts) say to each other over IPC. */
import type { RateLimitOptions } from '../../src/broker/rate-limit.js';

export interface LoadBrokerConfig {
  tls: { cert: string; key: string };
  simulatedRoot: string;
  rateLimit: RateLimitOptions;
}

/** Keys besides KEY_ID: one whose policy wants another measurement, one revoked. */
export const STRICT_KEY_ID = 'strict-key';
export const REVOKED_KEY_ID = 'revoked-key';

export interface MemorySample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

export interface BrokerStats {
  /** Data keys the keystore handed to the broker, and whether every one was wiped afterwards. */
  handedOut: number;
  allWiped: boolean;
  entries: number;
  /** Audit entries by `event:verdict`. */
  byEvent: Record<string, number>;
  /** Entries whose reasons mention the rate limiter. */
  rateLimited: number;
  /** The hash chain recomputed from the entries: undefined if intact, else the first bad seq. */
  chainBreak: number | undefined;
  errors: string[];
}
