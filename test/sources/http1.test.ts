// The range source's HTTP/1.1 exchange: its answer-head parser under fast-check, and the exchange
// against a raw TCP server that writes exactly the bytes a test scripts (split anywhere, malformed,
// interim answers, bodies longer or shorter than declared, silence).
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_HEAD_BYTES, exchange, parseAnswerHead, type Exchange } from '../../src/sources/http1.js';
import { SourceError } from '../../src/errors.js';
import { fuzzRuns } from '../helpers/fuzz.js';

const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

describe('parseAnswerHead', () => {
  it('parses status and fields; null while the empty line has not come', () => {
    const text = 'HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length:10\r\nX-A: 1\r\nx-a:  2 \r\n\r\nBODY';
    const r = parseAnswerHead(ascii(text))!;
    expect(r.head.status).toBe(206);
    expect(Object.fromEntries(r.head.fields)).toEqual({ 'content-range': 'bytes 0-9/100', 'content-length': '10', 'x-a': '1, 2' });
    expect(r.length).toBe(text.indexOf('BODY'));
    for (let cut = 0; cut < text.indexOf('BODY') - 1; cut++) expect(parseAnswerHead(ascii(text.slice(0, cut)))).toBeNull();
    expect(parseAnswerHead(ascii('HTTP/1.0 404 \r\n\r\n'))!.head.status).toBe(404);
  });

  it('refuses what HTTP/1.1 does not allow, and ambiguity', () => {
    for (const bad of [
      'HTTP/2 200 OK\r\n\r\n',
      'HTTP/1.1 20 OK\r\n\r\n',
      'HTTP/1.1 099 X\r\n\r\n',
      'HTTP/1.1 200OK\r\n\r\n',
      'ICY 200 OK\r\n\r\n',
      'HTTP/1.1 200 OK\r\nNo-Colon\r\n\r\n',
      'HTTP/1.1 200 OK\r\n: empty-name\r\n\r\n',
      'HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n',
      'HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n',
      'HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\r\n',
      'HTTP/1.1 200 OK\r\nA: x\x00y\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n',
      'HTTP/1.1 206 OK\r\nContent-Range: bytes 0-1/2\r\ncontent-range: bytes 0-1/2\r\n\r\n',
      `HTTP/1.1 200 OK\r\n${'A: b\r\n'.repeat(101)}\r\n`,
    ]) {
      expect(() => parseAnswerHead(ascii(bad)), JSON.stringify(bad)).toThrow(SourceError);
    }
    expect(() => parseAnswerHead(new Uint8Array(MAX_HEAD_BYTES).fill(65))).toThrow(/longer than/);
  });

  it('never throws anything but SourceError; what it accepts re-parses the same', () => {
    const line = fc.oneof(fc.string({ maxLength: 40 }), fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,12}$/), fc.string({ maxLength: 30 })).map(([k, v]) => `${k}: ${v}`));
    const head = fc.tuple(fc.oneof(fc.constant('HTTP/1.1 206 Partial Content'), fc.string({ maxLength: 30 })), fc.array(line, { maxLength: 8 })).map(([s, ls]) => [s, ...ls].join('\r\n') + '\r\n\r\n');
    const input = fc.oneof(head.map(ascii), fc.uint8Array({ maxLength: 300 }));
    fc.assert(
      fc.property(input, (bytes) => {
        let r: ReturnType<typeof parseAnswerHead>;
        try {
          r = parseAnswerHead(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(SourceError);
          return;
        }
        if (r === null) return;
        expect(r.head.status).toBeGreaterThanOrEqual(100);
        expect(r.head.status).toBeLessThan(1000);
        const again = parseAnswerHead(bytes.subarray(0, r.length))!;
        expect(again.head).toEqual(r.head);
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});

/** A TCP server whose next connection gets `script(socket)`. */
let server: Server;
let port = 0;
let script: (s: Socket) => void = () => {};
const sockets = new Set<Socket>();
beforeAll(async () => {
  server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.once('data', () => script(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

const open = (timeoutMs = 2000, signal?: AbortSignal): Promise<Exchange> =>
  exchange(new URL(`http://127.0.0.1:${port}/f`), '/f', { range: 'bytes=0-9' }, { ca: undefined, timeoutMs, signal, where: 'test' });
async function body(ex: Exchange, size: number, step = size): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  let done = 0;
  while (done < size) {
    const n = await ex.read(out.subarray(done, Math.min(size, done + step)));
    if (n === 0) throw new Error(`ended at ${done}`);
    done += n;
  }
  return out;
}
/** Writes the pieces one event-loop turn apart, so they arrive as separate reads. */
function writeSlowly(s: Socket, pieces: (string | Uint8Array)[], end = true): void {
  let i = 0;
  const next = (): void => {
    if (s.destroyed) return;
    if (i === pieces.length) {
      if (end) s.end();
      return;
    }
    s.write(pieces[i++]!, () => setTimeout(next, 2));
  };
  next();
}

describe('exchange', () => {
  const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) & 0xff));
  const ok = `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-299999/300000\r\nContent-Length: 300000\r\n\r\n`;

  it('a head split byte by byte, an interim 103, a body in odd pieces, read in odd sizes: the exact bytes', async () => {
    script = (s) => writeSlowly(s, [...'HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n'.split(''), ...ok.split(''), payload.subarray(0, 5), payload.subarray(5, 200_001), payload.subarray(200_001)]);
    const ex = await open();
    expect(ex.head.status).toBe(206);
    expect(ex.bodyLength).toBe(300_000);
    expect(Buffer.from(await body(ex, 300_000, 70_001)).equals(payload)).toBe(true);
    expect(await ex.read(new Uint8Array(10))).toBe(0);
  });

  it('head and body in one write: the body bytes that came with the head are kept', async () => {
    script = (s) => s.end(Buffer.concat([Buffer.from(ok), payload]));
    const ex = await open();
    expect(Buffer.from(await body(ex, 300_000, 1000)).equals(payload)).toBe(true);
  });

  const failure = async (write: (s: Socket) => void, timeoutMs = 2000, readSize = 300_000): Promise<string> => {
    script = write;
    try {
      const ex = await open(timeoutMs);
      await body(ex, readSize);
      return 'ok';
    } catch (e) {
      return e instanceof SourceError ? `SourceError: ${e.message}` : String(e);
    }
  };

  it('refuses bodies cut short, chunked or without a length, a 101, a head too long; ignores bytes after the body', async () => {
    expect(await failure((s) => s.end(Buffer.concat([Buffer.from(ok), payload.subarray(0, 1000)])))).toMatch(/cut short after 1000 of 300000/);
    // Bytes after the declared body are no part of the answer: never taken (the connection is not reused).
    expect(await failure((s) => s.end(Buffer.concat([Buffer.from(ok), payload, Buffer.from('extra')])))).toBe('ok');
    expect(await failure((s) => s.end('HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'))).toMatch(/Transfer-Encoding/);
    expect(await failure((s) => s.end('HTTP/1.1 200 OK\r\n\r\nhello'))).toMatch(/no Content-Length/);
    expect(await failure((s) => s.end('HTTP/1.1 206 OK\r\nContent-Length: -1\r\n\r\n'))).toMatch(/not a byte count/);
    expect(await failure((s) => s.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n'))).toMatch(/switched protocols/);
    expect(await failure((s) => s.end(`HTTP/1.1 206 OK\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`))).toMatch(/longer than/);
    expect(await failure((s) => s.end())).toMatch(/closed the connection before answering/);
    expect(await failure((s) => s.end('garbage\r\n\r\n'))).toMatch(/not HTTP\/1.x/);
  });

  it('silence before the head, or inside the body, past the timeout: a stall error; an abort: its reason', async () => {
    expect(await failure(() => {}, 150)).toMatch(/no answer within 150 ms/);
    expect(await failure((s) => s.write(Buffer.concat([Buffer.from(ok), payload.subarray(0, 7000)])), 150)).toMatch(/stalled after 7000 of 300000/);
    const controller = new AbortController();
    script = (s) => s.write(ok);
    const ex = await open(5000, controller.signal);
    const reading = ex.read(new Uint8Array(10));
    const reason = new Error('stop');
    controller.abort(reason);
    await expect(reading).rejects.toBe(reason);
    await expect(ex.read(new Uint8Array(1))).rejects.toBe(reason);
  });

  it('sends a well-formed GET with the caller\'s fields, Host and Connection: close', async () => {
    let request = '';
    server.removeAllListeners('connection');
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('error', () => {});
      s.on('data', (d) => {
        request += d.toString('latin1');
        if (request.includes('\r\n\r\n')) s.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      });
    });
    const ex = await exchange(new URL(`http://localhost:${port}/a%20b?x=1`), '/a%20b?x=1', { range: 'bytes=5-9', 'if-match': '"e"' }, { ca: undefined, timeoutMs: 2000, signal: undefined, where: 't' });
    expect(ex.head.status).toBe(404);
    ex.close();
    expect(request).toBe(`GET /a%20b?x=1 HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\nrange: bytes=5-9\r\nif-match: "e"\r\n\r\n`);
  });
});
