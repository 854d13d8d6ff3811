/**
 * What startBroker takes, checked once and with defaults filled in, so the handlers read plain
 * numbers and never a missing option.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import type { JWK, KeyObject, CryptoKey } from 'jose';
import { InvalidArgumentError } from '../errors.js';
import { isLoopback } from '../net-trust.js';
import type { TeeType } from '../attestation/types.js';
import type { TdxCollateral } from '../attestation/verifiers/tdx-collateral.js';
import { MAX_REQUEST_BYTES } from '../protocol/messages.js';
import type { AuditSink, Keystore, PolicyStore } from './types.js';
import type { RateLimitOptions } from './rate-limit.js';
import { DEFAULT_ISSUER_PREFIX, defaultIssuer } from '../protocol/token.js';

export interface BrokerSigningKey {
  /** P-256 private key for ES256. */
  privateKey: CryptoKey | KeyObject | JWK;
  /** Its public JWK: put in token headers, and what tokens are verified with. */
  publicJwk: JWK;
  kid: string;
}

export interface BrokerVerifyOptions {
  /** Trusted root fingerprints per evidence type (default: the pinned roots; simulated: simulatedRoots). */
  trustedRoots?: Partial<Record<TeeType, readonly string[]>>;
  /** AMD ARK/ASK CRLs (DER) for snp and azure-snp. */
  crls?: readonly Uint8Array[];
  /** Intel PCS collateral for TDX. */
  collateral?: TdxCollateral;
  /** Extra issuers (e.g. AMD's ASK/ARK) added to the certificates that come with the evidence. */
  certificates?: readonly X509Certificate[];
}

export interface BrokerOptions {
  keystore: Keystore;
  policies: PolicyStore;
  audit: AuditSink;
  /** Signs tokens (and nothing else). */
  signingKey: BrokerSigningKey;
  /** Signs release receipts (and nothing else); must not be the signing key. */
  receiptKey: BrokerSigningKey;
  /** PEM certificate chain and key; required unless plain HTTP on loopback is allowed. */
  tls?: { cert: string | Uint8Array; key: string | Uint8Array };
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Plain HTTP, only when `host` is a loopback address and this is true (development, tests). */
  allowPlainHttpOnLoopback?: boolean;
  /** Whether simulated (software) evidence may be accepted at all; each key's policy must allow it too. */
  allowSimulated: boolean;
  /** SHA-256 fingerprints of the simulated-TEE roots this broker trusts. */
  simulatedRoots?: readonly string[];
  /**
   * The `iss` of tokens. Default "sealed-tensors-broker:<RFC 7638 thumbprint of the signing key>",
   * so two brokers never accept each other's tokens by issuer. Tokens' `aud` is tokenAudience(iss).
   */
  issuer?: string;
  tokenTtlSeconds?: number;
  challengeTtlSeconds?: number;
  /**
   * Malformed requests not tied to a session are audited once per address per this many seconds,
   * with the count of the rest. Default 60.
   */
  auditGroupWindowSeconds?: number;
  maxPendingChallenges?: number;
  /** Attested sessions kept for cookie access (the oldest is dropped beyond it). Default 10_000. */
  maxSessions?: number;
  rateLimit?: RateLimitOptions;
  maxRequestBytes?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  /** How long close() lets in-flight requests finish before cutting connections. Default 10 s. */
  closeTimeoutMs?: number;
  /** Open connections at most; more are dropped on arrival. Default 1024. */
  maxConnections?: number;
  /**
   * Open connections per client address at most, so one address (slow or idle connections, which
   * the request rate limit never sees) cannot hold every slot. Default maxConnections / 8.
   */
  maxConnectionsPerClient?: number;
  /** Clock for expiries and evidence checks (tests). */
  now?: () => Date;
  verifyOptions?: BrokerVerifyOptions;
  /**
   * Verify primary evidence in this many worker threads (verify-pool.ts), so the signature and
   * chain checks run beside the main thread's TLS and JOSE work. Absent: in the main thread.
   * `workerUrl` is for tests; `timeoutMs` (default 30 s) denies a job a worker does not answer.
   */
  verifyThreads?: { threads: number; timeoutMs?: number; workerUrl?: URL };
  /** Where internal errors go (never to clients). Default: one line on stderr. */
  onError?: (err: unknown) => void;
}

export interface ResolvedOptions {
  keystore: Keystore;
  policies: PolicyStore;
  audit: AuditSink;
  signingKey: BrokerSigningKey;
  receiptKey: BrokerSigningKey;
  tls: { cert: string | Uint8Array; key: string | Uint8Array } | undefined;
  host: string;
  port: number;
  allowSimulated: boolean;
  simulatedRoots: readonly string[];
  issuer: string;
  tokenTtlSeconds: number;
  challengeTtlSeconds: number;
  auditGroupWindowSeconds: number;
  maxPendingChallenges: number;
  maxSessions: number;
  rateLimit: RateLimitOptions;
  maxRequestBytes: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  closeTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
  nowMs: () => number;
  verifyOptions: BrokerVerifyOptions;
  verifyThreads: BrokerOptions['verifyThreads'];
  onError: (err: unknown) => void;
}

// Shared with the session, which checks them against a pinned broker key.
export { DEFAULT_ISSUER_PREFIX, tokenAudience } from '../protocol/token.js';

/** RFC 7638 SHA-256 thumbprint (base64url) of an EC public JWK; undefined when it is not one (prepareSigner says why). */
function ecThumbprint(jwk: JWK): string | undefined {
  if (typeof jwk !== 'object' || jwk === null || typeof jwk.crv !== 'string' || typeof jwk.x !== 'string' || typeof jwk.y !== 'string') return undefined;
  return createHash('sha256').update(JSON.stringify({ crv: jwk.crv, kty: 'EC', x: jwk.x, y: jwk.y }), 'utf8').digest('base64url');
}

function resolveIssuer(o: BrokerOptions): string {
  if (o.issuer !== undefined) {
    if (typeof o.issuer !== 'string' || o.issuer.length === 0 || o.issuer.length > 256) throw new InvalidArgumentError('broker option issuer must be a non-empty string of at most 256 characters');
    return o.issuer;
  }
  const t = ecThumbprint(o.signingKey.publicJwk);
  return t === undefined ? DEFAULT_ISSUER_PREFIX : defaultIssuer(t);
}

function int(value: number | undefined, name: string, dflt: number, min: number, max: number): number {
  const v = value ?? dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new InvalidArgumentError(`broker option ${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return v;
}

export function resolveOptions(o: BrokerOptions): ResolvedOptions {
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError('startBroker needs an options object');
  for (const k of ['keystore', 'policies', 'audit', 'signingKey', 'receiptKey'] as const) {
    if (typeof o[k] !== 'object' || o[k] === null) throw new InvalidArgumentError(`broker option ${k} is required`);
  }
  if (typeof o.host !== 'string' || o.host.length === 0) throw new InvalidArgumentError('broker option host must be a host name or address');
  if (typeof o.allowSimulated !== 'boolean') throw new InvalidArgumentError('broker option allowSimulated must be true or false, said explicitly');
  if (o.tls === undefined) {
    if (o.allowPlainHttpOnLoopback !== true || !isLoopback(o.host)) {
      throw new InvalidArgumentError(`the broker serves HTTPS: pass tls {cert, key} (broker init writes server.pem/server.key); plain HTTP is allowed only on a loopback host with allowPlainHttpOnLoopback (host was ${JSON.stringify(o.host)})`);
    }
  }
  const simulatedRoots = o.simulatedRoots ?? [];
  if (!Array.isArray(simulatedRoots) || !simulatedRoots.every((r) => typeof r === 'string' && /^[0-9a-fA-F]{64}$/.test(r))) {
    throw new InvalidArgumentError('broker option simulatedRoots must be a list of SHA-256 fingerprints (64 hex digits)');
  }
  const now = o.now;
  if (now !== undefined && typeof now !== 'function') throw new InvalidArgumentError('broker option now must be a function returning a Date');
  return {
    keystore: o.keystore,
    policies: o.policies,
    audit: o.audit,
    signingKey: o.signingKey,
    receiptKey: o.receiptKey,
    tls: o.tls,
    host: o.host,
    port: int(o.port, 'port', 0, 0, 65535),
    allowSimulated: o.allowSimulated,
    simulatedRoots,
    issuer: resolveIssuer(o),
    tokenTtlSeconds: int(o.tokenTtlSeconds, 'tokenTtlSeconds', 300, 1, 86_400),
    challengeTtlSeconds: int(o.challengeTtlSeconds, 'challengeTtlSeconds', 60, 1, 3600),
    auditGroupWindowSeconds: int(o.auditGroupWindowSeconds, 'auditGroupWindowSeconds', 60, 1, 86_400),
    maxPendingChallenges: int(o.maxPendingChallenges, 'maxPendingChallenges', 10_000, 1, 10_000_000),
    maxSessions: int(o.maxSessions, 'maxSessions', 10_000, 1, 10_000_000),
    rateLimit: o.rateLimit ?? {},
    maxRequestBytes: int(o.maxRequestBytes, 'maxRequestBytes', MAX_REQUEST_BYTES, 1024, MAX_REQUEST_BYTES),
    headersTimeoutMs: int(o.headersTimeoutMs, 'headersTimeoutMs', 10_000, 100, 600_000),
    requestTimeoutMs: int(o.requestTimeoutMs, 'requestTimeoutMs', 30_000, 100, 600_000),
    keepAliveTimeoutMs: int(o.keepAliveTimeoutMs, 'keepAliveTimeoutMs', 5_000, 100, 600_000),
    closeTimeoutMs: int(o.closeTimeoutMs, 'closeTimeoutMs', 10_000, 0, 600_000),
    maxConnections: int(o.maxConnections, 'maxConnections', 1024, 1, 1_000_000),
    maxConnectionsPerClient: int(o.maxConnectionsPerClient, 'maxConnectionsPerClient', Math.max(1, Math.floor((o.maxConnections ?? 1024) / 8)), 1, 1_000_000),
    nowMs: now === undefined ? () => Date.now() : () => {
      const d = now();
      if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new InvalidArgumentError('broker option now() must return a valid Date');
      return d.getTime();
    },
    verifyOptions: o.verifyOptions ?? {},
    verifyThreads: o.verifyThreads,
    onError: o.onError ?? ((err) => process.stderr.write(`sealed-tensors broker: internal error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)),
  };
}
