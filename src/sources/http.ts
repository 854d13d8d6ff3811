/**
 * A sealed file behind an HTTP(S) URL, read with range requests: a rank fetches only the byte ranges
 * it needs (header, table, the chunks of its tensors) from object storage or any web server.
 *
 * The server is not trusted with anything but availability: every byte used is authenticated by the
 * reader. What this module checks is that the answers are the ones asked for, so that a confused
 * or changing server fails early and clearly: a 206 whose Content-Range is exactly the range asked
 * for, with the same complete length on every answer (and the same strong ETag, sent back as
 * If-Match), no content coding, no more bytes than asked, no redirects. A 200 (the server ignores
 * ranges) is accepted only on the first request and only for a small file, which is then held whole.
 * Timeouts bound the wait for an answer and every silence inside a body.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { FormatError, IntegrityError, InvalidArgumentError, SealedTensorsError, SourceError, TruncatedError } from '../errors.js';
import { isPlainFileName } from '../format/table.js';
import { parseContentRange, rangeHeader, rangeMatches } from './content-range.js';
import type { OpenedSource, SealedSource } from './types.js';

export const DEFAULT_TIMEOUT_MS = 30_000;
/** A file served whole (200 to a range request) is accepted up to this size by default. */
export const DEFAULT_MAX_WHOLE_BYTES = 1 << 20;
/** The first request asks for this much: the header and, for most files, the whole sealed table. */
export const PROBE_BYTES = 64 * 1024;

export interface HttpSourceOptions {
  /** PEM of the CA that issued the server's certificate: then the only trust anchor. Default: Node's bundled roots. */
  ca?: string | Uint8Array;
  /** Extra request headers (e.g. authorization). Range, If-Match, Accept-Encoding and Host are the source's own. */
  headers?: Record<string, string>;
  /** Longest wait for an answer's headers (connecting included), and longest silence inside a body. */
  timeoutMs?: number;
  /** Cancels every request of this source (and of its siblings): they reject with the signal's reason. */
  signal?: AbortSignal;
  /** Accept http:// for a loopback address (127.0.0.0/8, ::1, localhost): development and tests only. */
  allowHttp?: boolean;
  /** Largest file accepted from a server that ignores ranges (answers 200 with the whole file). */
  maxWholeBytes?: number;
  /**
   * Where the shard `fileName` that an index names lives. Default: next to the index (its URL with the
   * last path segment replaced; the query string is not carried over). Give this for presigned URLs.
   */
  sibling?: (fileName: string, index: URL) => string | URL;
}

interface Resolved {
  ca: string | undefined;
  headers: Record<string, string>;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  allowHttp: boolean;
  maxWholeBytes: number;
  sibling: ((fileName: string, index: URL) => string | URL) | undefined;
}

const RESERVED_HEADERS = new Set(['range', 'if-match', 'if-range', 'accept-encoding', 'host', 'connection', 'content-length', 'transfer-encoding', 'te', 'upgrade']);

export class HttpRangeSource implements SealedSource {
  readonly url: URL;
  readonly description: string;
  readonly name: string;
  readonly #options: HttpSourceOptions;
  readonly #resolved: Resolved;

  constructor(url: string | URL, options: HttpSourceOptions = {}) {
    let parsed: URL;
    try {
      parsed = new URL(String(url));
    } catch (cause) {
      throw new InvalidArgumentError(`not a URL: ${JSON.stringify(String(url))}`, { cause });
    }
    this.#resolved = resolveOptions(options);
    this.#options = options;
    if (parsed.username !== '' || parsed.password !== '') {
      throw new InvalidArgumentError('a source URL must not carry credentials: pass them as a header (headers: { authorization })');
    }
    parsed.hash = '';
    if (parsed.protocol === 'http:') {
      if (!this.#resolved.allowHttp || !isLoopback(parsed.hostname)) {
        throw new InvalidArgumentError(
          `${parsed.origin} is plain HTTP: use https://, or for a loopback address in development pass allowHttp: true`,
        );
      }
    } else if (parsed.protocol !== 'https:') {
      throw new InvalidArgumentError(`a source URL must be https:// (or http:// on loopback), got ${parsed.protocol}`);
    }
    this.url = parsed;
    // Messages never carry the query string: a presigned URL's signature is a credential.
    this.description = `${parsed.origin}${parsed.pathname}`;
    const last = parsed.pathname.slice(parsed.pathname.lastIndexOf('/') + 1);
    this.name = safeDecode(last);
  }

  async open(): Promise<OpenedSource> {
    const opened = new OpenedHttp(this.url, this.description, this.#resolved);
    try {
      await opened.probe();
    } catch (err) {
      await opened.close();
      throw err;
    }
    return opened;
  }

  sibling(fileName: string): HttpRangeSource {
    if (!isPlainFileName(fileName)) throw new InvalidArgumentError(`a sibling must be a plain file name, got ${JSON.stringify(fileName)}`);
    const custom = this.#resolved.sibling;
    const url = custom ? custom(fileName, new URL(this.url)) : new URL(encodeURIComponent(fileName), this.url);
    const next = new HttpRangeSource(url, this.#options);
    // By default shards come from the index's own origin; a sibling callback is the caller's explicit choice.
    if (!custom && next.url.origin !== this.url.origin) throw new InvalidArgumentError(`${fileName} resolves outside ${this.url.origin}`);
    return next;
  }
}

function resolveOptions(o: HttpSourceOptions): Resolved {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('options must be an object');
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(o.headers ?? {})) {
    if (RESERVED_HEADERS.has(k.toLowerCase())) throw new InvalidArgumentError(`header ${k} is set by the range source itself`);
    if (typeof v !== 'string' || /[\r\n\0]/.test(v)) throw new InvalidArgumentError(`header ${k} must be a string without CR, LF or NUL`);
    headers[k.toLowerCase()] = v;
  }
  return {
    ca: o.ca === undefined ? undefined : checkCaPem(o.ca),
    headers,
    timeoutMs: positive(o.timeoutMs, 'timeoutMs', DEFAULT_TIMEOUT_MS),
    signal: o.signal,
    allowHttp: o.allowHttp === true,
    maxWholeBytes: positive(o.maxWholeBytes, 'maxWholeBytes', DEFAULT_MAX_WHOLE_BYTES),
    sibling: o.sibling,
  };
}

class OpenedHttp implements OpenedSource {
  size = 0;
  #head: Uint8Array = new Uint8Array(0); // the file's first bytes (all of it when served whole)
  #whole = false;
  #etag: string | undefined;
  #fetched = 0;
  readonly #agent: http.Agent;
  readonly #transport: typeof http | typeof https;

  constructor(
    private readonly url: URL,
    readonly description: string,
    private readonly o: Resolved,
  ) {
    this.#transport = url.protocol === 'https:' ? https : http;
    // A few kept-alive connections: windows of one file are fetched one after another.
    this.#agent =
      this.#transport === https ? new https.Agent({ keepAlive: true, maxSockets: 2, ...(o.ca ? { ca: o.ca } : {}) }) : new http.Agent({ keepAlive: true, maxSockets: 2 });
  }

  get bytesFetched(): number {
    return this.#fetched;
  }

  /** The first request: the size (from Content-Range), the ETag, and the file's first bytes. */
  async probe(): Promise<void> {
    const res = await this.#get(0, PROBE_BYTES, undefined);
    let expected: number;
    if (res.statusCode === 206) {
      const range = parseContentRange(header(res, 'content-range'));
      if (!range || range.first !== 0 || range.last !== Math.min(PROBE_BYTES, range.complete) - 1) {
        res.destroy();
        throw new SourceError(`${this.description} answered 206 with Content-Range ${JSON.stringify(header(res, 'content-range') ?? null)} to a request for ${rangeHeader(0, PROBE_BYTES)}`, { status: 206 });
      }
      this.size = range.complete;
      expected = range.last + 1;
    } else if (res.statusCode === 200) {
      // The server ignores ranges: acceptable only for a file small enough to hold whole.
      const declared = contentLength(res);
      if (declared === undefined || !Number.isSafeInteger(declared) || declared > this.o.maxWholeBytes) {
        res.destroy();
        throw new SourceError(
          `${this.description}: the server ignores range requests (answered 200 with ${declared ?? 'an unknown number of'} bytes, more than the ${this.o.maxWholeBytes} accepted whole): serve it from a server that supports Range`,
          { status: 200 },
        );
      }
      this.#whole = true;
      this.size = declared;
      expected = declared;
    } else if (res.statusCode === 416) {
      res.destroy();
      throw new FormatError(`${this.description} is empty (the server could not satisfy bytes 0-): not a sealed-tensors file`);
    } else {
      throw statusError(res, this.description);
    }
    const etag = header(res, 'etag');
    if (etag !== undefined && !etag.startsWith('W/')) this.#etag = etag; // only a strong ETag names exact bytes
    this.checkBody(res, expected);
    this.#head = await collect(this.#body(res, expected, undefined), expected);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.#checkSpan(offset, length);
    if (offset + length <= this.#head.length) return this.#head.slice(offset, offset + length);
    return collect(this.stream(offset, length), length);
  }

  async *stream(offset: number, length: number, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    this.#checkSpan(offset, length);
    const end = offset + length;
    let at = offset;
    // What the first request brought is not fetched again.
    if (at < this.#head.length) {
      const stop = Math.min(end, this.#head.length);
      yield this.#head.slice(at, stop);
      at = stop;
    }
    if (at === end) return;
    const res = await this.#get(at, end - at, signal);
    this.#checkPartial(res, at, end - at);
    yield* this.#body(res, end - at, signal);
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }

  #checkSpan(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new InvalidArgumentError(`bad span ${offset}+${length}`);
    }
    if (offset + length > this.size) {
      throw new TruncatedError(`${this.description} is ${this.size} bytes but bytes up to ${offset + length} are needed: the file is truncated`);
    }
  }

  /** A later answer must be the exact range of the same file (size, ETag). */
  #checkPartial(res: http.IncomingMessage, offset: number, length: number): void {
    const where = `${this.description} (${rangeHeader(offset, length)})`;
    const status = res.statusCode ?? 0;
    if (status === 412 || status === 416) {
      res.destroy();
      throw new IntegrityError(`${where}: the server says the file changed while it was being read (${status}): open it again`);
    }
    if (status === 200) {
      res.destroy();
      throw new SourceError(`${where}: the server answered 200 (the whole file) to a range request it honoured before`, { status });
    }
    if (status !== 206) throw statusError(res, where);
    const raw = header(res, 'content-range');
    const range = parseContentRange(raw);
    if (range && range.complete !== this.size) {
      res.destroy();
      throw new IntegrityError(`${where}: the file changed while it was being read (it was ${this.size} bytes, the server now says ${range.complete}): open it again`);
    }
    if (!range || !rangeMatches(range, offset, length)) {
      res.destroy();
      throw new SourceError(`${where}: the server answered with Content-Range ${JSON.stringify(raw ?? null)}, not the range asked for`, { status });
    }
    const etag = header(res, 'etag');
    if (this.#etag !== undefined && etag !== this.#etag) {
      res.destroy();
      throw new IntegrityError(`${where}: the file changed while it was being read (its ETag changed): open it again`);
    }
    this.checkBody(res, length);
  }

  checkBody(res: http.IncomingMessage, length: number): void {
    const coding = header(res, 'content-encoding');
    if (coding !== undefined && coding.toLowerCase() !== 'identity') {
      res.destroy();
      throw new SourceError(`${this.description}: the server applied a content coding (${coding}) to a range; serve the file as is`);
    }
    const declared = contentLength(res);
    if (declared !== undefined && declared !== length) {
      res.destroy();
      throw new SourceError(`${this.description}: the answer declares ${declared} bytes where ${length} were asked for`);
    }
  }

  /** Sends a GET for [offset, offset + length); resolves with the answer once its headers arrived. */
  #get(offset: number, length: number, callerSignal: AbortSignal | undefined): Promise<http.IncomingMessage> {
    const signal = anySignal(this.o.signal, callerSignal);
    if (signal?.aborted) return Promise.reject(signal.reason);
    const headers: http.OutgoingHttpHeaders = {
      ...this.o.headers,
      range: rangeHeader(offset, length),
      'accept-encoding': 'identity',
      'user-agent': this.o.headers['user-agent'] ?? 'sealed-tensors',
    };
    if (this.#etag !== undefined) headers['if-match'] = this.#etag;
    // Plain HTTP to "localhost" goes to the loopback address itself, not wherever a resolver points it.
    const literal = this.url.hostname.replace(/^\[|\]$/g, '');
    const hostname = this.#transport === http && literal === 'localhost' ? '127.0.0.1' : literal;
    const where = `${this.description} (${rangeHeader(offset, length)})`;
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = (err: unknown, res?: http.IncomingMessage): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err !== undefined) {
          req.destroy();
          reject(err);
        } else resolve(res!);
      };
      const onAbort = (): void => finish(signal!.reason);
      const req = this.#transport.request({
        protocol: this.url.protocol,
        hostname,
        port: this.url.port || undefined,
        servername: isIP(hostname) ? undefined : hostname,
        method: 'GET',
        path: `${this.url.pathname}${this.url.search}`,
        headers,
        agent: this.#agent,
      });
      const timer = setTimeout(() => finish(new SourceError(`${where}: no answer within ${this.o.timeoutMs} ms`)), this.o.timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err: NodeJS.ErrnoException) => finish(err instanceof SealedTensorsError ? err : new SourceError(describeNetworkError(err, where), { cause: err })));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400) {
          res.destroy();
          finish(new SourceError(`${where}: the server redirects (${status}); redirects are not followed: give the file's own URL`, { status }));
          return;
        }
        if (settled) {
          res.destroy();
          return;
        }
        finish(undefined, res);
      });
      req.end();
    });
  }

  /**
   * The body of an answer, exactly `length` bytes, in the pieces the socket delivers. A silence longer
   * than the timeout, a connection cut short, or bytes beyond `length` end it with a typed error; leaving
   * the iteration early destroys the answer (and its connection).
   */
  async *#body(res: http.IncomingMessage, length: number, callerSignal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    const signal = anySignal(this.o.signal, callerSignal);
    const it = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let got = 0;
    let complete = false;
    try {
      for (;;) {
        const next = await nextWithin(it, this.o.timeoutMs, signal, () =>
          new SourceError(`${this.description}: the answer stalled after ${got} of ${length} bytes (nothing for ${this.o.timeoutMs} ms)`),
        ).catch((err: unknown) => {
          if (err instanceof SealedTensorsError || err === signal?.reason) throw err;
          throw new SourceError(`${this.description}: the answer was cut short after ${got} of ${length} bytes (${(err as Error).message})`, { cause: err });
        });
        if (next.done) break;
        const piece = next.value;
        got += piece.length;
        this.#fetched += piece.length;
        if (got > length) throw new SourceError(`${this.description}: the answer holds more than the ${length} bytes asked for`);
        if (piece.length > 0) yield new Uint8Array(piece.buffer, piece.byteOffset, piece.length);
      }
      if (got < length || !res.complete) {
        throw new SourceError(`${this.description}: the answer was cut short after ${got} of ${length} bytes`);
      }
      complete = true;
    } finally {
      if (!complete) res.destroy();
    }
  }
}

/** it.next(), or a typed error when nothing comes within `ms` or the signal aborts (the caller destroys the stream). */
function nextWithin<T>(it: AsyncIterator<T>, ms: number, signal: AbortSignal | undefined, stalled: () => Error): Promise<IteratorResult<T>> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      done();
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      done();
      reject(stalled());
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    it.next().then(
      (v) => {
        done();
        resolve(v);
      },
      (e) => {
        done();
        reject(e);
      },
    );
  });
}

async function collect(pieces: AsyncIterable<Uint8Array>, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let at = 0;
  for await (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function anySignal(a: AbortSignal | undefined, b: AbortSignal | undefined): AbortSignal | undefined {
  if (!a) return b;
  if (!b) return a;
  return AbortSignal.any([a, b]);
}

function header(res: http.IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

function contentLength(res: http.IncomingMessage): number | undefined {
  const raw = header(res, 'content-length');
  if (raw === undefined) return undefined;
  return /^[0-9]{1,15}$/.test(raw) ? Number(raw) : Number.NaN;
}

function statusError(res: http.IncomingMessage, where: string): SourceError {
  const status = res.statusCode ?? 0;
  res.destroy();
  const why =
    status === 401 || status === 403
      ? 'access refused: check the credentials (headers) or the URL signature'
      : status === 404
        ? 'not found: check the URL'
        : status >= 500
          ? 'the server failed'
          : 'an answer a range source cannot use';
  return new SourceError(`${where}: ${status} (${why})`, { status });
}

/** A loopback literal (or "localhost"), as plain HTTP requires. */
export function isLoopback(hostname: string): boolean {
  const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

function positive(value: number | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(value)}`);
  return value;
}

function checkCaPem(ca: string | Uint8Array): string {
  const pem = typeof ca === 'string' ? ca : Buffer.from(ca.buffer, ca.byteOffset, ca.byteLength).toString('utf8');
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new InvalidArgumentError('ca must be PEM text holding a CA certificate (-----BEGIN CERTIFICATE-----)');
  try {
    new X509Certificate(pem);
  } catch (cause) {
    throw new InvalidArgumentError('ca does not parse as an X.509 certificate in PEM', { cause });
  }
  return pem;
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function describeNetworkError(err: NodeJS.ErrnoException, where: string): string {
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED') return `${where}: the server refused the connection (is it running?)`;
  if (code === 'ECONNRESET' || code === 'EPIPE') return `${where}: the server closed the connection`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `${where}: the host name does not resolve`;
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `${where}: the server is unreachable`;
  if (/CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|ERR_TLS|SSL/i.test(code) || /certificate/i.test(err.message)) {
    return `${where}: the server is not trusted: its TLS certificate does not verify (${code || err.message}); pass the CA that issued it (ca)`;
  }
  return `${where}: the request failed (${code || err.message})`;
}
