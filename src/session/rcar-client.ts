/**
 * The session's side of the KBS attestation protocol (Request, Challenge, Attestation, Response)
 * over node:https. The transport's trust is said explicitly, never defaulted: a `ca` PEM (the only
 * trust anchor then), or `trustPublicRoots` to accept Node's bundled public roots; neither is refused
 * before any connection. Plain http:// is accepted only for a loopback address and only when the
 * caller says so. (The session also pins the broker's signing keys: broker-trust.ts.) Every answer
 * is bounded (size, connect, idle and overall time) and parsed strictly.
 *
 * Errors: the broker could not be reached, timed out, failed (5xx) or answered garbage: BrokerError;
 * it refused (401, 403, 404): DeniedError with its reasons; a message of the wrong shape:
 * ProtocolError; the caller's signal: its reason (an AbortError unless the caller chose another).
 */
import type http from 'node:http';
import type https from 'node:https';
import { isIP, nodeHttp, nodeHttps } from '../net-builtins.js';
import { checkCaPem, connectHost, isLoopback } from '../net-trust.js';
import { BrokerError, DeniedError, InvalidArgumentError, ProtocolError, SealedTensorsError } from '../errors.js';
import {
  KBS_PATH_PREFIX,
  KBS_PROTOCOL_VERSION,
  MAX_RESPONSE_BYTES,
  SESSION_COOKIE,
  parseChallenge,
  parseFlattenedJwe,
  parseJsonBody,
  parseProblem,
  parseResourcePath,
  parseTokenResponse,
  type Challenge,
  type FlattenedJwe,
} from '../protocol/messages.js';

import { MAX_RECEIPT_LENGTH as MAX_RECEIPT_CHARS, RECEIPT_HEADER } from '../protocol/token.js';

export { RECEIPT_HEADER };
/** Room for that receipt in the response head (Node's default is 16 KiB). */
const MAX_HEADER_BYTES = MAX_RECEIPT_CHARS + 16 * 1024;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
/** RFC 6265 cookie-octet, bounded. */
const COOKIE_VALUE = /^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,512}$/;

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 15_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export interface RcarClientOptions {
  /** The broker's base URL: https://host:port (a path prefix before /kbs/v0 is kept). */
  broker: string;
  /** PEM of the CA that issued the broker's certificate (`broker init` writes DIR/ca.pem): then the only trust anchor. */
  ca?: string | Uint8Array;
  /**
   * Trust any certificate for the broker's name that Node's bundled public roots vouch for, instead
   * of a `ca`. Anyone who can get a publicly-trusted certificate for that name can then answer as
   * the broker: pin its keys too (EnclaveSessionOptions.brokerKey).
   */
  trustPublicRoots?: boolean;
  /** Accept http:// for a loopback address (127.0.0.0/8, ::1, localhost): development and tests only. */
  allowPlainHttpOnLoopback?: boolean;
  /** Time to open the connection (TCP and TLS). */
  connectTimeoutMs?: number;
  /** Longest silence on an open connection (a stalled answer). */
  idleTimeoutMs?: number;
  /** Longest any one request may take, start to last byte. */
  requestTimeoutMs?: number;
  /** Largest answer accepted (default MAX_RESPONSE_BYTES). */
  maxResponseBytes?: number;
  /** Cancels whatever request is in flight. */
  signal?: AbortSignal;
}

export interface ReleasedResource {
  jwe: FlattenedJwe;
  /** The broker's signed receipt for this release (compact JWS), when it sends one (Trustee does not). */
  receipt?: string;
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** setTimeout's limit: Node turns a longer delay into 1 ms. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

function positive(value: number | undefined, name: string, fallback: number, max = MAX_TIMEOUT_MS): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new InvalidArgumentError(`${name} must be a positive integer of at most ${max}, got ${String(value)}`);
  }
  return value;
}

/** Why a connection failed, in words a person can act on. */
function describeNetworkError(err: NodeJS.ErrnoException, where: string): string {
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED') return `the broker at ${where} refused the connection (is it running?)`;
  if (code === 'ECONNRESET' || code === 'EPIPE') return `the broker at ${where} closed the connection`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `the broker's host name in ${where} does not resolve`;
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `the broker at ${where} is unreachable`;
  if (/CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|ERR_TLS|SSL/i.test(code) || /certificate/i.test(err.message)) {
    return `the broker at ${where} is not trusted: its TLS certificate does not verify against the trusted CA (${code || err.message}); pass the broker's ca.pem`;
  }
  return `the request to the broker at ${where} failed (${code || err.message})`;
}

/**
 * The broker URL's scheme and the trust it is reached with, checked before any connection: https://
 * with a `ca` or an explicit `trustPublicRoots` (not both); http:// only to loopback with
 * allowPlainHttpOnLoopback (development), and then neither.
 */
export function checkBrokerTransport(url: URL, options: Pick<RcarClientOptions, 'ca' | 'trustPublicRoots' | 'allowPlainHttpOnLoopback'>): void {
  if (options.trustPublicRoots !== undefined && typeof options.trustPublicRoots !== 'boolean') {
    throw new InvalidArgumentError(`trustPublicRoots must be true or false, got ${JSON.stringify(options.trustPublicRoots)}`);
  }
  if (url.protocol === 'http:') {
    if (!options.allowPlainHttpOnLoopback || !isLoopback(url.hostname)) {
      throw new InvalidArgumentError(
        `the broker URL ${url.origin} is plain HTTP: keys are fetched over HTTPS only (plain HTTP is allowed for a loopback address with allowPlainHttpOnLoopback, for development)`,
      );
    }
    if (options.ca !== undefined) throw new InvalidArgumentError('ca was given for a plain-HTTP broker URL: use https://');
    if (options.trustPublicRoots) throw new InvalidArgumentError('trustPublicRoots was given for a plain-HTTP broker URL: use https://');
    return;
  }
  if (url.protocol !== 'https:') throw new InvalidArgumentError(`the broker URL must be https://, got ${url.protocol}`);
  if (options.ca !== undefined && options.trustPublicRoots) {
    throw new InvalidArgumentError("give either ca (the broker's CA certificate) or trustPublicRoots, not both: with ca, only that CA is trusted");
  }
  if (options.ca === undefined && !options.trustPublicRoots) {
    throw new InvalidArgumentError(
      `the session must know its broker: pass ca, the broker's CA certificate (broker init writes DIR/ca.pem; CLI --ca FILE), or, for a broker with a publicly-trusted certificate, trustPublicRoots: true (CLI --trust-public-roots), best with its keys pinned (brokerKey; CLI --broker-key FILE)`,
    );
  }
}

export class RcarClient {
  readonly #base: URL;
  readonly #transport: typeof http | typeof https;
  readonly #agent: http.Agent;
  readonly #connectMs: number;
  readonly #idleMs: number;
  readonly #requestMs: number;
  readonly #maxBytes: number;
  readonly #signal: AbortSignal | undefined;
  #cookie: string | null = null;
  #token: string | null = null;

  constructor(options: RcarClientOptions) {
    let url: URL;
    try {
      url = new URL(options.broker);
    } catch (cause) {
      throw new InvalidArgumentError(`broker must be a URL such as https://broker.example:8443, got ${JSON.stringify(String(options.broker))}`, { cause });
    }
    if (url.username || url.password) throw new InvalidArgumentError('the broker URL must not carry credentials');
    if (url.search || url.hash) throw new InvalidArgumentError('the broker URL must not have a query or fragment');
    checkBrokerTransport(url, options);
    this.#base = url;
    this.#connectMs = positive(options.connectTimeoutMs, 'connectTimeoutMs', DEFAULT_CONNECT_TIMEOUT_MS);
    this.#idleMs = positive(options.idleTimeoutMs, 'idleTimeoutMs', DEFAULT_IDLE_TIMEOUT_MS);
    this.#requestMs = positive(options.requestTimeoutMs, 'requestTimeoutMs', DEFAULT_REQUEST_TIMEOUT_MS);
    this.#maxBytes = positive(options.maxResponseBytes, 'maxResponseBytes', MAX_RESPONSE_BYTES, Number.MAX_SAFE_INTEGER);
    this.#signal = options.signal;
    if (url.protocol === 'https:') {
      this.#transport = nodeHttps();
      this.#agent = new (nodeHttps().Agent)({
        keepAlive: true,
        maxSockets: 4,
        minVersion: 'TLSv1.2',
        // With `ca`, Node trusts exactly these certificates and not its bundled roots.
        ...(options.ca !== undefined ? { ca: checkCaPem(options.ca, 'the broker CA certificate') } : {}),
      });
    } else {
      this.#transport = nodeHttp();
      this.#agent = new (nodeHttp().Agent)({ keepAlive: true, maxSockets: 4 });
    }
  }

  /** The broker's origin, for messages. */
  get origin(): string {
    return this.#base.origin;
  }

  /** POST /auth: the challenge; keeps the session cookie for the next steps. */
  async auth(tee: string, extraParams: unknown = ''): Promise<Challenge> {
    const res = await this.#call('POST', '/auth', { version: KBS_PROTOCOL_VERSION, tee, 'extra-params': extraParams });
    const cookie = sessionCookie(res.headers['set-cookie']);
    if (cookie === null) throw new ProtocolError(`the broker's challenge set no ${SESSION_COOKIE} cookie`);
    const challenge = parseChallenge(this.#json(res, 'the challenge'));
    this.#cookie = cookie;
    return challenge;
  }

  /** POST /attest with the session cookie: the attestation token (checked for shape only). */
  async attest(request: object): Promise<string> {
    if (this.#cookie === null) throw new ProtocolError('attest before auth: the KBS protocol starts with /auth');
    const res = await this.#call('POST', '/attest', request);
    const token = parseTokenResponse(this.#json(res, 'the attestation response'));
    this.#token = token;
    return token;
  }

  /** GET /resource/<repository>/<type>/<tag> with the cookie and the token. */
  async resource(repository: string, type: string, tag: string): Promise<ReleasedResource> {
    if (this.#token === null) throw new ProtocolError('resource before attest: the KBS protocol releases resources to an attested session');
    const path = parseResourcePath(`${repository}/${type}/${tag}`);
    const res = await this.#call('GET', `/resource/${path.repository}/${path.type}/${path.tag}`);
    const jwe = parseFlattenedJwe(this.#json(res, 'the resource'));
    const header = res.headers[RECEIPT_HEADER];
    if (header === undefined) return { jwe };
    const receipt = Array.isArray(header) ? header.join(',') : header;
    if (receipt.length > MAX_RECEIPT_CHARS || !COMPACT_JWS.test(receipt)) throw new ProtocolError(`the broker's ${RECEIPT_HEADER} header is not a compact JWS`);
    return { jwe, receipt };
  }

  /** Closes idle keep-alive connections; requests after this fail. */
  close(): void {
    this.#agent.destroy();
  }

  #json(res: RawResponse, what: string): unknown {
    try {
      return parseJsonBody(res.body, this.#maxBytes, what);
    } catch (cause) {
      throw new BrokerError(`the broker at ${this.origin} answered ${what} with something that is not JSON`, { cause });
    }
  }

  async #call(method: 'GET' | 'POST', endpoint: string, body?: object): Promise<RawResponse> {
    const res = await this.#request(method, endpoint, body);
    if (res.status === 200) return res;
    const where = `${method} ${KBS_PATH_PREFIX}${endpoint}`;
    let problem = { detail: '', reasons: [] as string[] };
    try {
      problem = parseProblem(JSON.parse(res.body.toString('utf8')));
    } catch {
      // an error body that is not JSON is shown as the status alone
    }
    const detail = problem.detail ? `: ${problem.detail}` : '';
    const reasons = problem.reasons.length > 0 ? ` (${problem.reasons.join('; ')})` : '';
    if (res.status === 401 || res.status === 403 || res.status === 404) {
      const what = res.status === 401 ? 'no valid session or token' : res.status === 403 ? 'denied by its policy' : 'no such resource';
      throw new DeniedError(`the broker refused ${where} with ${res.status} (${what})${detail}${reasons}`, { status: res.status, reasons: problem.reasons });
    }
    if (res.status === 400 || res.status === 413) {
      throw new ProtocolError(`the broker rejected ${where} as malformed (${res.status})${detail}${reasons}`);
    }
    if (res.status >= 300 && res.status < 400) {
      throw new BrokerError(`the broker answered ${where} with a redirect (${res.status}); redirects are not followed: give the broker's own URL`);
    }
    throw new BrokerError(`the broker failed ${where} with ${res.status}${detail}${reasons}${res.status === 429 ? ': rate limited, try again later' : ''}`);
  }

  #request(method: 'GET' | 'POST', endpoint: string, body?: object): Promise<RawResponse> {
    const signal = this.#signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const base = this.#base.pathname.replace(/\/+$/, '');
    const path = `${base}${KBS_PATH_PREFIX}${endpoint}`;
    const where = `${this.origin}${path}`;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json', 'user-agent': 'sealed-tensors' };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    if (this.#cookie !== null) headers['cookie'] = `${SESSION_COOKIE}=${this.#cookie}`;
    if (this.#token !== null && endpoint.startsWith('/resource/')) headers['authorization'] = `Bearer ${this.#token}`;
    const hostname = connectHost(this.#base);

    return new Promise<RawResponse>((resolve, reject) => {
      let settled = false;
      const timers: NodeJS.Timeout[] = [];
      const finish = (err: unknown, value?: RawResponse): void => {
        if (settled) return;
        settled = true;
        for (const t of timers) clearTimeout(t);
        signal?.removeEventListener('abort', onAbort);
        if (err !== undefined) {
          req.destroy();
          reject(err);
        } else resolve(value!);
      };
      const onAbort = (): void => finish(signal!.reason);
      const req = this.#transport.request({
        protocol: this.#base.protocol,
        hostname,
        port: this.#base.port || undefined,
        servername: isIP(hostname) ? undefined : hostname,
        method,
        path,
        headers,
        agent: this.#agent,
        maxHeaderSize: MAX_HEADER_BYTES,
        // Socket inactivity, also while connecting: a stalled broker.
        timeout: this.#idleMs,
      });
      timers.push(
        setTimeout(() => finish(new BrokerError(`the broker at ${where} did not answer within ${this.#requestMs} ms`)), this.#requestMs),
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        const t = setTimeout(() => finish(new BrokerError(`could not connect to the broker at ${this.origin} within ${this.#connectMs} ms`)), this.#connectMs);
        timers.push(t);
        socket.once(this.#transport === nodeHttps() ? 'secureConnect' : 'connect', () => clearTimeout(t));
      });
      req.on('timeout', () => finish(new BrokerError(`the broker at ${where} stalled: nothing received for ${this.#idleMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => finish(err instanceof SealedTensorsError ? err : new BrokerError(describeNetworkError(err, where), { cause: err })));
      req.on('response', (res) => {
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > this.#maxBytes) {
          finish(new BrokerError(`the broker's answer to ${where} is ${declared} bytes, more than the ${this.#maxBytes} accepted`));
          return;
        }
        const chunks: Buffer[] = [];
        let length = 0;
        res.on('data', (chunk: Buffer) => {
          length += chunk.length;
          if (length > this.#maxBytes) {
            finish(new BrokerError(`the broker's answer to ${where} is more than the ${this.#maxBytes} bytes accepted`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', (err: NodeJS.ErrnoException) => finish(new BrokerError(`the broker's answer to ${where} was cut short (${err.code ?? err.message})`, { cause: err })));
        res.on('end', () => {
          if (!res.complete) return; // 'close' reports it
          finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks, length) });
        });
        res.on('close', () => {
          if (!res.complete) finish(new BrokerError(`the broker's answer to ${where} was cut short: the connection closed after ${length} bytes`));
        });
      });
      req.end(payload);
    });
  }
}

/** The kbs-session-id value from Set-Cookie headers, or null. */
function sessionCookie(setCookie: string[] | undefined): string | null {
  for (const line of setCookie ?? []) {
    const first = line.split(';', 1)[0]!.trim();
    const eq = first.indexOf('=');
    if (eq < 0 || first.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    let value = first.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    if (!COOKIE_VALUE.test(value)) throw new ProtocolError(`the broker's ${SESSION_COOKIE} cookie has characters a cookie may not have`);
    return value;
  }
  return null;
}
