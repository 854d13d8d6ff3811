/**
 * The broker's HTTP plumbing: bounded body reading, JSON and problem responses, cookies. Nothing
 * here knows the KBS protocol; handlers throw an HttpProblem and the server turns it into a
 * ProblemBody response.
 */
import { clientBucket } from './client-bucket.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorCode } from '../errors.js';
import { MAX_REQUEST_BYTES, parseJsonBody, problemType, type ProblemBody } from '../protocol/messages.js';

const TITLES: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** What the session side shows of a problem (parseProblem) is no more than this either. */
const MAX_DETAIL_CHARS = 2000;
const MAX_REASON_CHARS = 1000;
const MAX_REASONS = 64;

function bounded(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A refusal with its HTTP status, error code and the checks that failed. */
export class HttpProblem extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  readonly reasons: readonly string[];
  readonly headers: Readonly<Record<string, string>>;
  constructor(status: number, code: ErrorCode, detail: string, opts: { reasons?: readonly string[]; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(bounded(detail, MAX_DETAIL_CHARS), opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'HttpProblem';
    this.status = status;
    this.code = code;
    // Every refusal names at least one reason: the detail when nothing finer is known. Reasons may
    // quote the request; bounded, so a refusal is never an echo (or an audit line) of a megabyte.
    const reasons = opts.reasons !== undefined && opts.reasons.length > 0 ? opts.reasons : [detail];
    this.reasons = Object.freeze(reasons.slice(0, MAX_REASONS).map((r) => bounded(r, MAX_REASON_CHARS)));
    this.headers = Object.freeze({ ...(opts.headers ?? {}) });
  }
}

export function problemBody(p: HttpProblem): ProblemBody {
  return { type: problemType(p.code), title: TITLES[p.status] ?? 'Error', status: p.status, detail: p.message, reasons: [...p.reasons] };
}

/** Every answer is JSON and never cached (tokens, nonces and wrapped keys must not sit in a cache). */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  const text = Buffer.from(JSON.stringify(body), 'utf8');
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(text.length),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

export function sendProblem(res: ServerResponse, p: HttpProblem, extraHeaders: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, p.status, problemBody(p), { ...p.headers, ...extraHeaders });
}

/** The media type without parameters, lower case. */
function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

/**
 * Reads a JSON request body of at most `max` bytes. A declared length over the limit is refused
 * before any byte is read; a body that grows past it is refused as soon as it does (the rest is
 * discarded, and the connection closed after the answer).
 */
export async function readJsonBody(req: IncomingMessage, max = MAX_REQUEST_BYTES): Promise<unknown> {
  if (mediaType(req) !== 'application/json') {
    throw new HttpProblem(415, 'ERR_PROTOCOL', 'the request body must be JSON (Content-Type: application/json)');
  }
  const declared = req.headers['content-length'];
  if (declared !== undefined && (!/^[0-9]{1,15}$/.test(declared) || Number(declared) > max)) {
    throw tooLarge(max);
  }
  const chunks: Buffer[] = [];
  let length = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      length += chunk.length;
      if (length > max) {
        req.off('data', onData);
        chunks.length = 0;
        reject(tooLarge(max));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve());
    req.once('error', (err) => reject(new HttpProblem(400, 'ERR_PROTOCOL', 'the request body could not be read', { cause: err })));
    req.once('aborted', () => reject(new HttpProblem(400, 'ERR_PROTOCOL', 'the request was aborted')));
  });
  try {
    return parseJsonBody(Buffer.concat(chunks, length), max, 'the request body');
  } catch (err) {
    throw new HttpProblem(400, 'ERR_PROTOCOL', (err as Error).message, { cause: err });
  }
}

function tooLarge(max: number): HttpProblem {
  return new HttpProblem(413, 'ERR_RESOURCE_LIMIT', `the request body is larger than ${max} bytes`, { headers: { connection: 'close' } });
}

/**
 * The values of one cookie in the Cookie header(s), in order. More than one value means more than
 * one cookie store answered; the caller refuses that rather than guess.
 */
export function cookieValues(req: IncomingMessage, name: string): string[] {
  const header = req.headers.cookie;
  if (header === undefined) return [];
  const out: string[] = [];
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) out.push(part.slice(eq + 1).trim());
  }
  return out;
}

/** The client as the audit log records it: address and port of the TCP peer (no proxy header is trusted). */
/** The peer: its address, the bucket its per-client limits count in (client-bucket.ts), and a label for the audit log. */
export function clientOf(req: IncomingMessage): { ip: string; bucket: string; label: string } {
  const ip = req.socket.remoteAddress ?? 'unknown';
  return { ip, bucket: clientBucket(ip), label: `${ip}:${req.socket.remotePort ?? 0}` };
}
