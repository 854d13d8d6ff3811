/**
 * The broker's HTTPS front: the KBS attestation protocol (Trustee 0.4.0) on node:https, with
 * per-client rate limits, bounded bodies, timeouts and a graceful close. It reaches keys, policies
 * and the audit log only through the interfaces of ./types.ts; every refusal on a KBS endpoint is
 * audited and answered with a ProblemBody, and nothing is released on any error path.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { KBS_PATH_PREFIX, MAX_TOKEN_CHARS } from '../protocol/messages.js';
import { CertificateCache } from './cert-cache.js';
import { ChallengeTable } from './challenges.js';
import { DenialGroups, type Group } from './denial-groups.js';
import { clientOf, HttpProblem, sendProblem } from './http.js';
import { clientBucket } from './client-bucket.js';
import { handleAttest } from './handlers/attest.js';
import { handleAuth } from './handlers/auth.js';
import type { BrokerState, RequestContext } from './handlers/context.js';
import { handleResource, RESOURCE_PREFIX } from './handlers/resource.js';
import { resolveOptions, type BrokerOptions } from './options.js';
import { RateLimiter } from './rate-limit.js';
import { SessionTable } from './sessions.js';
import { prepareSigner } from './signer.js';
import { poolStatics, VerifyPool } from './verify-pool.js';
import type { AuditEvent } from './types.js';

export type { BrokerOptions, BrokerSigningKey, BrokerVerifyOptions } from './options.js';

export interface RunningBroker {
  /** https://HOST:PORT (http:// only in the loopback development mode). */
  url: string;
  /** Stops accepting, lets in-flight requests finish (up to closeTimeoutMs), then resolves. */
  close(): Promise<void>;
  server: HttpServer | HttpsServer;
}

/**
 * Node's default request header limit (16 KiB) plus room for the longest Bearer token we issue (one
 * submod per attested GPU: docs/PROTOCOL.md).
 */
const MAX_HEADER_BYTES = 16 * 1024 + MAX_TOKEN_CHARS;

const pem = (v: string | Uint8Array): string | Buffer => (typeof v === 'string' ? v : Buffer.from(v));

type Route = { event: AuditEvent; method: 'GET' | 'POST'; handle: (state: BrokerState, req: IncomingMessage, res: ServerResponse, ctx: RequestContext, path: string) => Promise<void> };

function route(path: string): Route | undefined {
  if (path === `${KBS_PATH_PREFIX}/auth`) return { event: 'auth', method: 'POST', handle: handleAuth };
  if (path === `${KBS_PATH_PREFIX}/attest`) return { event: 'attest', method: 'POST', handle: handleAttest };
  if (path.startsWith(RESOURCE_PREFIX)) return { event: 'deny', method: 'GET', handle: handleResource };
  return undefined;
}

/** Statuses of a request refused for its form alone (not for who sent it or what it proved). */
const MALFORMED_STATUSES = new Set([400, 405, 413, 415]);

/**
 * A malformed request not tied to a session, evidence or key: its denial is grouped per address
 * (denial-groups.ts). Anything the handlers tied to a session or evidence stays one entry.
 */
function isUnboundMalformed(ctx: RequestContext, p: HttpProblem): boolean {
  const a = ctx.audit;
  return MALFORMED_STATUSES.has(p.status) && a.detail?.['session'] === undefined && a.evidenceDigest === undefined && a.teePubkeyThumbprint === undefined && a.keyIds === undefined;
}

export async function startBroker(options: BrokerOptions): Promise<RunningBroker> {
  const opts = resolveOptions(options);
  const signer = await prepareSigner(opts.signingKey, opts.receiptKey);
  const state: BrokerState = {
    opts,
    signer,
    challenges: new ChallengeTable(opts.challengeTtlSeconds * 1000, opts.maxPendingChallenges),
    sessions: new SessionTable(opts.maxSessions),
    certificates: new CertificateCache(),
    ...(opts.verifyThreads !== undefined ? { pool: new VerifyPool(poolStatics(opts.verifyOptions), { ...opts.verifyThreads, onError: opts.onError }) } : {}),
    secure: opts.tls !== undefined,
  };
  const limiter = new RateLimiter(opts.rateLimit);
  let closing = false;

  const malformed = new DenialGroups(opts.auditGroupWindowSeconds * 1000, opts.rateLimit.maxClients ?? 10_000);

  /** Logs a refusal; an audit sink that fails is reported, and the refusal stands. */
  const auditDenial = async (ctx: RequestContext, p: HttpProblem): Promise<void> => {
    let extra: Record<string, unknown> = {};
    if (isUnboundMalformed(ctx, p)) {
      const d = malformed.note(ctx.client.bucket, opts.nowMs(), (g) => void auditGroup(g));
      if (!d.write) return;
      extra = { grouped: 'malformed', ...(d.previous ? { previousWindow: { since: new Date(d.previous.since).toISOString(), count: d.previous.count } } : {}) };
    }
    try {
      await opts.audit.append({ ...ctx.audit, verdict: 'deny', reasons: [...p.reasons], detail: { ...ctx.audit.detail, status: p.status, ...extra } });
    } catch (err) {
      opts.onError(err);
    }
  };

  /** The count of a window's malformed requests that were not written one by one. */
  const auditGroup = async (g: Group): Promise<void> => {
    try {
      await opts.audit.append({
        event: 'deny',
        client: g.client,
        verdict: 'deny',
        reasons: [`malformed: ${g.count} more malformed request(s) from this address refused since ${new Date(g.since).toISOString()}, not logged one by one`],
        detail: { grouped: 'malformed', since: new Date(g.since).toISOString(), count: g.count },
      });
    } catch (err) {
      opts.onError(err);
    }
  };

  const onRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (closing) res.setHeader('connection', 'close');
    const client = clientOf(req);
    const ctx: RequestContext = { client, audit: { event: 'deny', client: client.label } };
    // Counted per bucket (an IPv6 /64), as connections and challenges are: rotating addresses gains nothing.
    const decision = limiter.take(client.bucket);
    if (!decision.allowed) {
      const p = new HttpProblem(429, 'ERR_RESOURCE_LIMIT', `too many requests from ${client.bucket}; retry after ${decision.retryAfterSeconds} s`, {
        reasons: [`rate: more than ${limiter.burst} requests at once or ${limiter.perSecond}/s from this address`],
        headers: { 'retry-after': String(decision.retryAfterSeconds) },
      });
      // One entry per episode, not per refused request: a flood must not flood the log.
      if (decision.firstRefusal) await auditDenial({ ...ctx, audit: { ...ctx.audit, detail: { path: (req.url ?? '').slice(0, 256) } } }, p);
      sendProblem(res, p);
      return;
    }
    const url = req.url ?? '/';
    const path = url.split('?', 1)[0]!;
    const r = route(path);
    if (r === undefined) {
      sendProblem(res, new HttpProblem(404, 'ERR_NOT_FOUND', `no such endpoint; this broker serves ${KBS_PATH_PREFIX}/auth, /attest and /resource/<repository>/<type>/<tag>`));
      return;
    }
    ctx.audit.event = r.event;
    try {
      if (req.method !== r.method) {
        throw new HttpProblem(405, 'ERR_PROTOCOL', `${path.startsWith(RESOURCE_PREFIX) ? 'resources' : path} take ${r.method} only`, { reasons: [`method: ${String(req.method).slice(0, 16)} is not allowed`], headers: { allow: r.method } });
      }
      await r.handle(state, req, res, ctx, path);
    } catch (err) {
      let p: HttpProblem;
      if (err instanceof HttpProblem) p = err;
      else {
        opts.onError(err);
        p = new HttpProblem(500, 'ERR_BROKER', 'the broker failed to handle this request; nothing was released (the operator has the details)', { reasons: ['internal error'] });
      }
      await auditDenial(ctx, p);
      sendProblem(res, p);
    }
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    // A connection whose request finishes after close() began is idle now: close it too.
    res.once('finish', () => {
      if (closing) setImmediate(() => server.closeIdleConnections());
    });
    onRequest(req, res).catch((err: unknown) => {
      opts.onError(err);
      if (!res.headersSent) sendProblem(res, new HttpProblem(500, 'ERR_BROKER', 'the broker failed to handle this request; nothing was released'));
      else res.destroy();
    });
  };

  // Node sweeps for expired header/request timeouts every 30 s by default, which lets a 10 s header
  // timeout last 40 s; sweep at a tenth of the shortest timeout (at most every second).
  const connectionsCheckingInterval = Math.max(10, Math.min(1000, Math.floor(Math.min(opts.headersTimeoutMs, opts.requestTimeoutMs) / 10)));
  const server: HttpServer | HttpsServer =
    opts.tls !== undefined
      ? createHttpsServer({ cert: pem(opts.tls.cert), key: pem(opts.tls.key), minVersion: 'TLSv1.2', maxHeaderSize: MAX_HEADER_BYTES, handshakeTimeout: opts.headersTimeoutMs, connectionsCheckingInterval }, handler)
      : createHttpServer({ maxHeaderSize: MAX_HEADER_BYTES, connectionsCheckingInterval }, handler);
  server.headersTimeout = opts.headersTimeoutMs;
  server.requestTimeout = opts.requestTimeoutMs;
  server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  server.maxConnections = opts.maxConnections;

  // Connections per client address: a slow or idle connection is never a request, so the rate
  // limiter cannot stop one address from taking every slot of maxConnections; this does.
  // Counted per bucket (an IPv6 /64), like the rate limit and the pending challenges.
  const perClient = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const ip = clientBucket(socket.remoteAddress ?? 'unknown');
    const n = (perClient.get(ip) ?? 0) + 1;
    if (n > opts.maxConnectionsPerClient) {
      socket.destroy();
      return;
    }
    perClient.set(ip, n);
    socket.once('close', () => {
      const left = (perClient.get(ip) ?? 1) - 1;
      if (left <= 0) perClient.delete(ip);
      else perClient.set(ip, left);
    });
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => opts.onError(err));
  const port = (server.address() as AddressInfo).port;
  const host = opts.host.includes(':') && !opts.host.startsWith('[') ? `[${opts.host}]` : opts.host;
  const url = `${state.secure ? 'https' : 'http'}://${host}:${port}`;

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      closing = true;
      const hard = setTimeout(() => server.closeAllConnections(), opts.closeTimeoutMs);
      hard.unref();
      server.close(() => {
        clearTimeout(hard);
        resolve();
      });
      server.closeIdleConnections();
    }).then(async () => {
      await state.pool?.close();
      // Counts still held go to the log before close resolves.
      for (const g of malformed.drain()) await auditGroup(g);
    });
    return closed;
  };
  return { url, close, server };
}
