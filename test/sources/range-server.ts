// A small range-serving node:http server on loopback whose answers a test can bend: flip a byte,
// cut a body short, stall, change the file's size or ETag between requests, answer another range.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface Answer {
  status: number;
  headers: Record<string, string | number>;
  body: Uint8Array;
  /** Send only this many body bytes, then: 'cut' destroys the connection, 'stall' keeps it open and silent. */
  stop?: { after: number; how: 'cut' | 'stall' };
  /** Send nothing at all, not even the status line. */
  silent?: boolean;
}

/** Bends the nth (0-based) request's correct answer. */
export type Bend = (answer: Answer, request: { n: number; first: number; last: number }) => Answer;

export interface RangeServer {
  url: string;
  /** Requests seen so far: their Range headers. */
  ranges: string[];
  bend: Bend | null;
  close(): Promise<void>;
}

export async function startRangeServer(file: Uint8Array, name = 'model.sealed'): Promise<RangeServer> {
  const sockets = new Set<Socket>();
  const state: RangeServer = { url: '', ranges: [], bend: null, close: async () => {} };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const n = state.ranges.length;
    const range = req.headers.range ?? '';
    state.ranges.push(range);
    if (req.url !== `/${name}`) {
      res.writeHead(404).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d+)$/.exec(range);
    let answer: Answer;
    let first = 0;
    let last = file.length - 1;
    if (!m) {
      answer = { status: 200, headers: { 'content-length': file.length, etag: '"v1"' }, body: file };
    } else {
      first = Number(m[1]);
      last = Math.min(Number(m[2]), file.length - 1);
      const body = file.subarray(first, last + 1);
      answer = { status: 206, headers: { 'content-range': `bytes ${first}-${last}/${file.length}`, 'content-length': body.length, etag: '"v1"' }, body };
    }
    if (state.bend) answer = state.bend(answer, { n, first, last });
    if (answer.silent) return;
    res.writeHead(answer.status, answer.headers);
    if (!answer.stop) {
      res.end(Buffer.from(answer.body));
      return;
    }
    res.write(Buffer.from(answer.body.subarray(0, answer.stop.after)));
    if (answer.stop.how === 'cut') setImmediate(() => res.socket?.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as { port: number }).port}/${name}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return state;
}

/** A copy with bit 0 of byte `at` flipped. */
export function flipped(bytes: Uint8Array, at: number): Uint8Array {
  const out = new Uint8Array(bytes);
  out[at]! ^= 1;
  return out;
}
