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
 * Timeouts bound the wait for an answer and every silence inside a body. Each request has a
 * connection of its own (http1.ts), whose body is read straight into the reader's buffers.
 */
import { checkCaPem, isLoopback } from '../net-trust.js';
import { FormatError, IntegrityError, InvalidArgumentError, SourceError, TruncatedError } from '../errors.js';
import { isPlainFileName } from '../format/table.js';
import { parseContentRange, rangeHeader, rangeMatches } from './content-range.js';
import { exchange, type Exchange } from './http1.js';
import type { OpenedSource, SealedSource, SpanReader } from './types.js';

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
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k)) throw new InvalidArgumentError(`header name ${JSON.stringify(k)} is not an HTTP token`);
    if (RESERVED_HEADERS.has(k.toLowerCase())) throw new InvalidArgumentError(`header ${k} is set by the range source itself`);
    if (typeof v !== 'string' || /[\r\n\0]/.test(v)) throw new InvalidArgumentError(`header ${k} must be a string without CR, LF or NUL`);
    headers[k.toLowerCase()] = v;
  }
  return {
    ca: o.ca === undefined ? undefined : checkCaPem(o.ca),
    headers,
    timeoutMs: positive(o.timeoutMs, 'timeoutMs', DEFAULT_TIMEOUT_MS, 2 ** 31 - 1), // setTimeout's limit: longer fires at once
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
  readonly #open = new Set<Exchange>();

  constructor(
    private readonly url: URL,
    readonly description: string,
    private readonly o: Resolved,
  ) {}

  get bytesFetched(): number {
    return this.#fetched;
  }

  /** The first request: the size (from Content-Range), the ETag, and the file's first bytes. */
  async probe(): Promise<void> {
    const ex = await this.#get(0, PROBE_BYTES, undefined);
    try {
      const fields = ex.head.fields;
      let expected: number;
      if (ex.head.status === 206) {
        const range = parseContentRange(fields.get('content-range'));
        if (!range || range.first !== 0 || range.last !== Math.min(PROBE_BYTES, range.complete) - 1) {
          throw new SourceError(`${this.description} answered 206 with Content-Range ${JSON.stringify(fields.get('content-range') ?? null)} to a request for ${rangeHeader(0, PROBE_BYTES)}`, { status: 206 });
        }
        this.size = range.complete;
        expected = range.last + 1;
      } else if (ex.head.status === 200) {
        // The server ignores ranges: acceptable only for a file small enough to hold whole.
        const declared = ex.bodyLength;
        if (declared === undefined || declared > this.o.maxWholeBytes) {
          throw new SourceError(
            `${this.description}: the server ignores range requests (answered 200 with ${declared ?? 'an unknown number of'} bytes, more than the ${this.o.maxWholeBytes} accepted whole): serve it from a server that supports Range`,
            { status: 200 },
          );
        }
        this.#whole = true;
        this.size = declared;
        expected = declared;
      } else if (ex.head.status === 416) {
        throw new FormatError(`${this.description} is empty (the server could not satisfy bytes 0-): not a sealed-tensors file`);
      } else {
        throw statusError(ex.head.status, this.description);
      }
      const etag = fields.get('etag');
      if (etag !== undefined && !etag.startsWith('W/')) this.#etag = etag; // only a strong ETag names exact bytes
      this.#checkBody(ex, expected);
      const head = new Uint8Array(expected);
      await this.#readBody(ex, head);
      this.#head = head;
    } finally {
      this.#close(ex);
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.#checkSpan(offset, length);
    const out = new Uint8Array(length);
    const span = await this.readSpan(offset, length);
    try {
      await span.readFully(out);
    } finally {
      span.close();
    }
    return out;
  }

  async readSpan(offset: number, length: number, signal?: AbortSignal): Promise<SpanReader> {
    this.#checkSpan(offset, length);
    const end = offset + length;
    let at = offset;
    let ex: Exchange | undefined;
    const fetchFrom = Math.max(offset, Math.min(end, this.#head.length)); // what the first request brought is not fetched again
    let closed = false;
    return {
      readFully: async (into: Uint8Array): Promise<void> => {
        if (closed) throw new SourceError(`${this.description}: the span was closed`);
        if (at + into.length > end) throw new InvalidArgumentError('read past the end of the span');
        let done = 0;
        if (at < fetchFrom) {
          const n = Math.min(into.length, fetchFrom - at);
          into.set(this.#head.subarray(at, at + n));
          done = n;
          at += n;
        }
        if (done === into.length) return;
        if (!ex) {
          ex = await this.#get(fetchFrom, end - fetchFrom, signal);
          try {
            this.#checkPartial(ex, fetchFrom, end - fetchFrom);
          } catch (err) {
            this.#close(ex);
            throw err;
          }
        }
        await this.#readBody(ex, into.subarray(done));
        at += into.length - done;
      },
      close: (): void => {
        closed = true;
        if (ex) this.#close(ex);
      },
    };
  }

  async close(): Promise<void> {
    for (const ex of this.#open) ex.close();
    this.#open.clear();
  }

  #close(ex: Exchange): void {
    ex.close();
    this.#open.delete(ex);
  }

  /** Fills `into` from the body; a body that ends first is a source cut short. */
  async #readBody(ex: Exchange, into: Uint8Array): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const n = await ex.read(into.subarray(done));
      if (n === 0) throw new SourceError(`${this.description}: the answer ended ${into.length - done} bytes early`);
      done += n;
      this.#fetched += n;
    }
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
  #checkPartial(ex: Exchange, offset: number, length: number): void {
    const where = `${this.description} (${rangeHeader(offset, length)})`;
    const status = ex.head.status;
    const fields = ex.head.fields;
    if (status === 412 || status === 416) {
      throw new IntegrityError(`${where}: the server says the file changed while it was being read (${status}): open it again`);
    }
    if (status === 200) throw new SourceError(`${where}: the server answered 200 (the whole file) to a range request it honoured before`, { status });
    if (status !== 206) throw statusError(status, where);
    const raw = fields.get('content-range');
    const range = parseContentRange(raw);
    if (range && range.complete !== this.size) {
      throw new IntegrityError(`${where}: the file changed while it was being read (it was ${this.size} bytes, the server now says ${range.complete}): open it again`);
    }
    if (!range || !rangeMatches(range, offset, length)) {
      throw new SourceError(`${where}: the server answered with Content-Range ${JSON.stringify(raw ?? null)}, not the range asked for`, { status });
    }
    if (this.#etag !== undefined && fields.get('etag') !== this.#etag) {
      throw new IntegrityError(`${where}: the file changed while it was being read (its ETag changed): open it again`);
    }
    this.#checkBody(ex, length);
  }

  #checkBody(ex: Exchange, length: number): void {
    const coding = ex.head.fields.get('content-encoding');
    if (coding !== undefined && coding.toLowerCase() !== 'identity') {
      throw new SourceError(`${this.description}: the server applied a content coding (${coding}) to a range; serve the file as is`);
    }
    if (ex.bodyLength !== length) {
      throw new SourceError(`${this.description}: the answer declares ${ex.bodyLength ?? 'no'} bytes where ${length} were asked for`);
    }
  }

  /** Sends a GET for [offset, offset + length) on a connection of its own; resolves once its answer's head arrived. */
  async #get(offset: number, length: number, callerSignal: AbortSignal | undefined): Promise<Exchange> {
    const headers: Record<string, string> = {
      'user-agent': 'sealed-tensors',
      ...this.o.headers,
      range: rangeHeader(offset, length),
      'accept-encoding': 'identity',
    };
    if (this.#etag !== undefined) headers['if-match'] = this.#etag;
    const where = `${this.description} (${rangeHeader(offset, length)})`;
    const ex = await exchange(this.url, `${this.url.pathname}${this.url.search}`, headers, {
      ca: this.o.ca,
      timeoutMs: this.o.timeoutMs,
      signal: anySignal(this.o.signal, callerSignal),
      where,
    });
    const status = ex.head.status;
    if (status >= 300 && status < 400) {
      ex.close();
      throw new SourceError(`${where}: the server redirects (${status}); redirects are not followed: give the file's own URL`, { status });
    }
    this.#open.add(ex);
    return ex;
  }
}

function anySignal(a: AbortSignal | undefined, b: AbortSignal | undefined): AbortSignal | undefined {
  if (!a) return b;
  if (!b) return a;
  return AbortSignal.any([a, b]);
}



function statusError(status: number, where: string): SourceError {
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

function positive(value: number | undefined, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1 || value > max) throw new InvalidArgumentError(`${name} must be a positive integer of at most ${max}, got ${String(value)}`);
  return value;
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

