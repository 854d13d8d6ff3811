/**
 * One HTTP/1.1 GET on a connection of its own, for the range source: a strict parser of the answer's
 * head, and a body read straight into the caller's buffers.
 *
 * Why not node:http: its client hands a body over in fresh 64 KiB Buffers, one per socket read;
 * allocating, faulting in and collecting them cost this project's 2-core VM more CPU than the
 * decryption itself (0.4-0.7 CPU-s per 256 MiB, against 0.07 for a socket with `onread`). Here every
 * socket read lands in one reused buffer (`onread`) and is copied at once into the caller's buffer,
 * the one the reader hands to the addon: no allocation per read, nothing to collect.
 *
 * Deliberately small: GET only, `Connection: close`, a body only with Content-Length (a ranged or
 * whole-file answer always has one; Transfer-Encoding is refused), interim 1xx answers skipped,
 * everything else about the head checked strictly and bounded (16 KiB, 100 fields).
 */
import type net from 'node:net';
import type tls from 'node:tls';
import { isIP, nodeNet, nodeTls } from '../net-builtins.js';
import { SealedTensorsError, SourceError } from '../errors.js';
import { connectHost } from '../net-trust.js';

export const MAX_HEAD_BYTES = 16 * 1024;
/** One socket read at most: copied into the reader's buffer at once, so memory stays flat. */
const READ_BUFFER_BYTES = 256 * 1024;
export const MAX_HEAD_FIELDS = 100;

/** A parsed answer head: the status and the fields (names lower-cased; repeated fields joined with ", "). */
export interface AnswerHead {
  status: number;
  fields: Map<string, string>;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Field values: visible ASCII, spaces and tabs, and obs-text; no control characters.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// Fields that must appear at most once: two of them would make the answer ambiguous.
const SINGLE = new Set(['content-length', 'content-range', 'etag', 'content-encoding', 'transfer-encoding', 'location']);

/**
 * Parses one answer head at the start of `bytes`. Returns null while it is incomplete (no empty line
 * yet), the head and its length once complete; throws SourceError when it is malformed or too large.
 */
export function parseAnswerHead(bytes: Uint8Array): { head: AnswerHead; length: number } | null {
  const end = indexOfEmptyLine(bytes);
  if (end < 0) {
    if (bytes.length >= MAX_HEAD_BYTES) throw malformed(`its head is longer than ${MAX_HEAD_BYTES} bytes`);
    return null;
  }
  if (end + 4 > MAX_HEAD_BYTES) throw malformed(`its head is longer than ${MAX_HEAD_BYTES} bytes`);
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, end).toString('latin1');
  const lines = text.split('\r\n');
  if (lines.some((l) => l.includes('\r') || l.includes('\n'))) throw malformed('a bare CR or LF in its head');
  const statusLine = /^HTTP\/1\.[01] ([1-9][0-9]{2}) [\t\x20-\x7e\x80-\xff]*$/.exec(lines[0]!);
  if (!statusLine) throw malformed(`its status line is not HTTP/1.x: ${JSON.stringify(lines[0]!.slice(0, 80))}`);
  if (lines.length - 1 > MAX_HEAD_FIELDS) throw malformed(`more than ${MAX_HEAD_FIELDS} header fields`);
  const fields = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw malformed(`a header line without a field name: ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw malformed(`a field name that is not a token: ${JSON.stringify(name.slice(0, 80))}`); // also refuses obs-fold
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!FIELD_VALUE.test(value)) throw malformed(`field ${name} holds a control character`);
    const key = name.toLowerCase();
    const previous = fields.get(key);
    if (previous !== undefined && SINGLE.has(key)) throw malformed(`field ${name} appears twice`);
    fields.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }
  return { head: { status: Number(statusLine[1]), fields }, length: end + 4 };
}

function indexOfEmptyLine(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

function malformed(what: string): SourceError {
  return new SourceError(`the server's answer is not valid HTTP/1.1: ${what}`);
}

export interface ExchangeOptions {
  ca: string | undefined;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  /** For messages. */
  where: string;
}

/** One GET and its answer; the body is read with `read`. Close it when done (it also closes itself at the body's end). */
export interface Exchange {
  head: AnswerHead;
  /** The body's length (Content-Length), or undefined when the answer declares none. */
  readonly bodyLength: number | undefined;
  /** Reads the next body bytes into `into` until it is full or the body ends; resolves with the count (0: the body has ended). */
  read(into: Uint8Array): Promise<number>;
  close(): void;
}

/** Sends `GET path` to url's host with `headers` (Host and Connection added) and resolves once the answer's head arrived. */
export function exchange(url: URL, path: string, headers: Record<string, string>, o: ExchangeOptions): Promise<Exchange> {
  const signal = o.signal;
  if (signal?.aborted) return Promise.reject(signal.reason);
  const secure = url.protocol === 'https:';
  const host = connectHost(url);
  const port = Number(url.port || (secure ? 443 : 80));
  const lines = [`GET ${path} HTTP/1.1`, `Host: ${url.host}`, 'Connection: close'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  const request = `${lines.join('\r\n')}\r\n\r\n`;

  return new Promise<Exchange>((resolveHead, rejectHead) => {
    const readBuf = Buffer.allocUnsafe(READ_BUFFER_BYTES); // every socket read lands here, then is copied out
    const headBuf = Buffer.allocUnsafe(MAX_HEAD_BYTES);
    let headLen = 0;
    let head: AnswerHead | null = null;
    let bodyLength: number | undefined;
    let received = 0; // body bytes received from the socket
    let stash: Uint8Array | null = null; // received body bytes not yet read (from one socket read at most)
    let target: Uint8Array | null = null;
    let filled = 0;
    let pending: { resolve: (n: number) => void; reject: (e: unknown) => void } | null = null;
    let failure: unknown = null;
    let answered = false; // the exchange was handed out (its head resolved)
    let timer: NodeJS.Timeout | undefined;

    const arm = (what: () => SourceError): void => {
      clearTimeout(timer);
      timer = setTimeout(() => fail(what()), o.timeoutMs);
    };
    const fail = (err: unknown): void => {
      if (failure !== null) return;
      failure = err;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (!answered) rejectHead(err);
      if (pending) {
        const p = pending;
        pending = null;
        p.reject(err);
      }
    };
    const onAbort = (): void => fail(signal!.reason);
    const finished = (): boolean => received === bodyLength && stash === null;
    const settleRead = (): void => {
      const p = pending!;
      const n = filled;
      pending = null;
      target = null;
      clearTimeout(timer);
      if (finished()) release();
      p.resolve(n);
    };
    // The whole body is in: the connection is not needed any more (Connection: close).
    const release = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
    };
    const stalled = (): SourceError =>
      new SourceError(`${o.where}: the answer stalled after ${received} of ${bodyLength} bytes (nothing for ${o.timeoutMs} ms)`);

    /** Body bytes from the socket: into the pending read, the rest kept for the next one. */
    const onBody = (all: Uint8Array): boolean => {
      // The body is exactly Content-Length bytes; anything after it is no part of this answer (and
      // the connection is not reused), so it is never taken.
      const bytes = all.subarray(0, Math.max(0, (bodyLength ?? 0) - received));
      received += bytes.length;
      let used = 0;
      if (target) {
        used = Math.min(bytes.length, target.length - filled);
        target.set(bytes.subarray(0, used), filled);
        filled += used;
      }
      if (used < bytes.length) stash = new Uint8Array(bytes.subarray(used)); // at most one socket read's worth
      if (target && (filled === target.length || received === bodyLength)) {
        settleRead();
        return false; // paused until the next read
      }
      if (!target) return false;
      timer?.refresh(); // the read's stall timer, armed by read(): data came, the silence starts over
      return true;
    };

    /** The head so far is in headBuf: null while incomplete, false once failed, else the bytes after it. */
    const onHeadBytes = (): Uint8Array | null | false => {
      let parsed: ReturnType<typeof parseAnswerHead>;
      try {
        parsed = parseAnswerHead(headBuf.subarray(0, headLen));
      } catch (err) {
        fail(err instanceof SourceError ? new SourceError(`${o.where}: ${err.message}`) : err);
        return false;
      }
      if (!parsed) return null;
      if (parsed.head.status >= 100 && parsed.head.status < 200) {
        // An interim answer (100, 103 Early Hints): the real one follows.
        if (parsed.head.status === 101) {
          fail(new SourceError(`${o.where}: the server switched protocols (101)`, { status: 101 }));
          return false;
        }
        headBuf.copyWithin(0, parsed.length, headLen);
        headLen -= parsed.length;
        return onHeadBytes();
      }
      try {
        bodyLength = bodyLengthOf(parsed.head);
      } catch (err) {
        fail(new SourceError(`${o.where}: ${(err as Error).message}`, { status: parsed.head.status }));
        return false;
      }
      head = parsed.head;
      clearTimeout(timer);
      return headBuf.subarray(parsed.length, headLen);
    };

    // Node asks for the next read's buffer right after each callback: while a read is pending, that is
    // the rest of the caller's buffer itself (no copy); otherwise (the head, a paused answer) readBuf.
    const onread = {
      buffer: (): Uint8Array => {
        if (head && target && failure === null) {
          const room = Math.min(target.length - filled, (bodyLength ?? 0) - received);
          if (room > 0) return target.subarray(filled, filled + room);
        }
        return readBuf;
      },
      callback: (n: number, buf: Uint8Array): boolean => {
        if (failure !== null) return false;
        if (buf !== readBuf) {
          // Read straight into the pending read's buffer, never past the body's declared end.
          received += n;
          filled += n;
          if (filled === target!.length || received === bodyLength) {
            settleRead();
            return false;
          }
          timer?.refresh();
          return true;
        }
        if (head) return onBody(readBuf.subarray(0, n));
        const take = Math.min(n, MAX_HEAD_BYTES - headLen);
        readBuf.copy(headBuf, headLen, 0, take);
        headLen += take;
        const rest = onHeadBytes();
        if (rest === false) return false;
        if (rest === null) {
          if (take < n) fail(new SourceError(`${o.where}: its head is longer than ${MAX_HEAD_BYTES} bytes`));
          return take === n;
        }
        // The head is complete: what followed it (in the head buffer, and past it in this read) is body.
        const after = take < n ? Buffer.concat([rest, readBuf.subarray(take, n)]) : rest;
        if (after.length > 0 && bodyLength !== undefined) onBody(after);
        if (failure !== null) return false;
        answered = true;
        resolveHead(ex);
        return false; // paused until the first read
      },
    };

    const ex: Exchange = {
      get head() {
        return head!;
      },
      get bodyLength() {
        return bodyLength;
      },
      read(into: Uint8Array): Promise<number> {
        if (failure !== null) return Promise.reject(failure);
        if (pending) return Promise.reject(new SourceError(`${o.where}: one read at a time`));
        let n = 0;
        if (stash) {
          n = Math.min(stash.length, into.length);
          into.set(stash.subarray(0, n));
          stash = n === stash.length ? null : stash.subarray(n);
        }
        if (n === into.length || bodyLength === undefined || received === bodyLength) {
          if (finished()) release();
          return Promise.resolve(n);
        }
        return new Promise<number>((resolve, reject) => {
          pending = { resolve, reject };
          target = into;
          filled = n;
          arm(stalled);
          socket.resume();
        });
      },
      close(): void {
        if (failure === null) failure = new SourceError(`${o.where}: the answer was closed`);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.destroy();
        if (pending) {
          const p = pending;
          pending = null;
          p.reject(failure);
        }
      },
    };

    const socket: net.Socket = secure
      ? // onread is a documented tls.connect option that @types/node lacks.
        nodeTls().connect({ host, port, servername: isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'], onread, ...(o.ca ? { ca: o.ca } : {}) } as tls.ConnectionOptions)
      : nodeNet().connect({ host, port, onread });
    arm(() => new SourceError(`${o.where}: no answer within ${o.timeoutMs} ms`));
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once(secure ? 'secureConnect' : 'connect', () => socket.write(request));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      fail(err instanceof SealedTensorsError ? err : new SourceError(describeNetworkError(err, o.where), { cause: err })),
    );
    socket.on('close', () => {
      if (failure !== null) return;
      if (!head) fail(new SourceError(`${o.where}: the server closed the connection before answering`));
      else if (bodyLength !== undefined && received < bodyLength) {
        fail(new SourceError(`${o.where}: the answer was cut short after ${received} of ${bodyLength} bytes`));
      }
    });
  });
}

/** The body's length from Content-Length; refuses Transfer-Encoding (a range answer always has a length). */
function bodyLengthOf(head: AnswerHead): number | undefined {
  if (head.fields.has('transfer-encoding')) {
    if (head.status === 200 || head.status === 206) {
      throw new Error(`the answer uses Transfer-Encoding (${head.fields.get('transfer-encoding')}), not a Content-Length`);
    }
    return undefined;
  }
  const raw = head.fields.get('content-length');
  if (raw === undefined) return head.status === 200 || head.status === 206 ? missing() : undefined;
  if (!/^[0-9]{1,15}$/.test(raw)) throw new Error(`its Content-Length is not a byte count: ${JSON.stringify(raw.slice(0, 40))}`);
  return Number(raw);
}

function missing(): never {
  throw new Error('the answer declares no Content-Length');
}

export function describeNetworkError(err: NodeJS.ErrnoException, where: string): string {
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
