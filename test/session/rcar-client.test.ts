import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BrokerError, DeniedError, InvalidArgumentError, ProtocolError } from '../../src/errors.js';
import { RcarClient } from '../../src/session/rcar-client.js';
import { FakeKbs, json, problem } from './fake-kbs.js';
import { makePki } from './tls.js';
import { failure } from './harness.js';

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

async function kbs(options: Parameters<typeof FakeKbs.start>[0] = {}): Promise<FakeKbs> {
  const k = await FakeKbs.start(options);
  open.push(k);
  return k;
}

function client(url: string, extra: Partial<ConstructorParameters<typeof RcarClient>[0]> = {}): RcarClient {
  const c = new RcarClient({ broker: url, allowPlainHttpOnLoopback: true, ...extra });
  open.push(c);
  return c;
}


describe('RcarClient: where it connects', () => {
  it('refuses plain HTTP except to loopback with the explicit flag, and URLs with credentials, queries or other schemes', () => {
    expect(() => new RcarClient({ broker: 'http://127.0.0.1:1' })).toThrow(InvalidArgumentError);
    expect(() => new RcarClient({ broker: 'http://10.0.0.1:1', allowPlainHttpOnLoopback: true })).toThrow(/HTTPS only/);
    expect(() => new RcarClient({ broker: 'http://example.com', allowPlainHttpOnLoopback: true })).toThrow(InvalidArgumentError);
    expect(() => new RcarClient({ broker: 'ftp://127.0.0.1' })).toThrow(InvalidArgumentError);
    expect(() => new RcarClient({ broker: 'https://u:p@broker.example' })).toThrow(/credentials/);
    expect(() => new RcarClient({ broker: 'https://broker.example/?x=1' })).toThrow(/query/);
    expect(() => new RcarClient({ broker: 'not a url' })).toThrow(InvalidArgumentError);
    expect(() => new RcarClient({ broker: 'https://broker.example', ca: 'not a pem' })).toThrow(InvalidArgumentError);
    for (const ok of ['http://127.0.0.1:1', 'http://127.5.0.1:1', 'http://[::1]:1', 'http://localhost:1']) {
      new RcarClient({ broker: ok, allowPlainHttpOnLoopback: true }).close();
    }
  });

  it('trusts exactly the CA it is given: the broker signed by it is reached, one signed by another CA or by no pinned CA is not', async () => {
    const pki = await makePki();
    const other = await makePki('Other CA');
    const k = await kbs({ tls: { cert: pki.certPem, key: pki.keyPem } });
    expect(k.url).toMatch(/^https:/);
    const challenge = await client(k.url, { ca: pki.caPem }).auth('simulated');
    expect(challenge.nonce).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    const wrong = await failure(client(k.url, { ca: other.caPem }).auth('simulated'));
    expect(wrong).toBeInstanceOf(BrokerError);
    expect(wrong.message).toMatch(/not trusted/);
    // Node's public roots, said explicitly: they do not vouch for this broker's private CA.
    const publicRoots = await failure(client(k.url, { trustPublicRoots: true }).auth('simulated'));
    expect(publicRoots).toBeInstanceOf(BrokerError);
    expect(publicRoots.message).toMatch(/not trusted/);
    expect(k.requests.length).toBe(1); // the refused connections never sent a request
  });

  it('an https broker needs its CA or an explicit trustPublicRoots, not both, and neither for plain HTTP: refused before any connection', () => {
    expect(() => new RcarClient({ broker: 'https://127.0.0.1:1' })).toThrow(/must know its broker: pass ca/);
    expect(() => new RcarClient({ broker: 'https://127.0.0.1:1', trustPublicRoots: false })).toThrow(InvalidArgumentError);
    expect(() => new RcarClient({ broker: 'https://127.0.0.1:1', trustPublicRoots: 'yes' as unknown as boolean })).toThrow(InvalidArgumentError);
    expect(() => new RcarClient({ broker: 'http://127.0.0.1:1', allowPlainHttpOnLoopback: true, trustPublicRoots: true })).toThrow(/plain-HTTP/);
    new RcarClient({ broker: 'https://broker.example', trustPublicRoots: true }).close();
  });

  it('a closed port is an unreachable broker (ERR_BROKER)', async () => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((r) => server.close(() => r()));
    const err = await failure(client(`http://127.0.0.1:${port}`).auth('simulated'));
    expect(err.code).toBe('ERR_BROKER');
    expect(err.message).toMatch(/refused the connection/);
  });
});

describe('RcarClient: what it accepts', () => {
  it('carries the kbs-session-id cookie from /auth to /attest, and keeps a base path', async () => {
    const k = await kbs();
    k.override.attest = (_req, res) => json(res, 200, { token: 'a.b.c' });
    const c = client(k.url);
    await c.auth('simulated');
    expect(await c.attest({})).toBe('a.b.c');
    expect(k.requests[1]!.cookie).toMatch(/^kbs-session-id=[0-9a-f-]{36}$/);
    const based = client(`${k.url}/prefix/`);
    await expect(based.auth('simulated')).rejects.toThrow(DeniedError); // 404: /prefix/kbs/v0/auth
    expect(k.requests.at(-1)!.path).toBe('/prefix/kbs/v0/auth');
  });

  it('401, 403 and 404 are denials (ERR_DENIED) with the status and the broker\'s reasons', async () => {
    const k = await kbs();
    for (const status of [401, 403, 404]) {
      k.override.auth = (_req, res) => problem(res, status, 'nope', [`check ${status} failed`, 'another']);
      const err = (await failure(client(k.url).auth('simulated'))) as DeniedError;
      expect(err).toBeInstanceOf(DeniedError);
      expect(err.status).toBe(status);
      expect(err.reasons).toEqual([`check ${status} failed`, 'another']);
      expect(err.message).toContain(`check ${status} failed`);
    }
  });

  it('5xx, 429 and redirects are broker failures (ERR_BROKER); 400 and 413 are protocol errors', async () => {
    const k = await kbs();
    const cases: [number, string][] = [[500, 'ERR_BROKER'], [503, 'ERR_BROKER'], [429, 'ERR_BROKER'], [302, 'ERR_BROKER'], [400, 'ERR_PROTOCOL'], [413, 'ERR_PROTOCOL']];
    for (const [status, code] of cases) {
      k.override.auth = (_req, res) => {
        res.writeHead(status, { 'content-type': 'text/plain', location: 'https://elsewhere.example/' });
        res.end('<html>oops</html>');
      };
      expect((await failure(client(k.url).auth('simulated'))).code, String(status)).toBe(code);
    }
  });

  it('garbage is a broker failure; JSON of the wrong shape is a protocol error; a missing cookie too', async () => {
    const k = await kbs();
    k.override.auth = (_req, res) => {
      res.writeHead(200, { 'set-cookie': 'kbs-session-id=abc' });
      res.end('{"nonce": ');
    };
    const garbage = await failure(client(k.url).auth('simulated'));
    expect(garbage).toBeInstanceOf(BrokerError);
    expect(garbage.message).toMatch(/not JSON/);
    k.override.auth = (_req, res) => json(res, 200, { nonce: 'short', 'extra-params': '' }, { 'set-cookie': 'kbs-session-id=abc' });
    expect(await failure(client(k.url).auth('simulated'))).toBeInstanceOf(ProtocolError);
    k.override.auth = (_req, res) => json(res, 200, { nonce: Buffer.alloc(32).toString('base64'), 'extra-params': '' });
    const noCookie = await failure(client(k.url).auth('simulated'));
    expect(noCookie).toBeInstanceOf(ProtocolError);
    expect(noCookie.message).toMatch(/cookie/);
    k.override.auth = (_req, res) => json(res, 200, { nonce: Buffer.alloc(32).toString('base64') }, { 'set-cookie': 'kbs-session-id=a b' });
    expect(await failure(client(k.url).auth('simulated'))).toBeInstanceOf(ProtocolError);
    const fresh = client(k.url);
    await expect(fresh.attest({})).rejects.toThrow(ProtocolError); // out of sequence
  });

  it('an oversized answer is refused, whether announced by its length or streamed', async () => {
    const k = await kbs();
    k.override.auth = (_req, res) => {
      res.writeHead(200, { 'content-length': 10_000_000 });
      res.write(' '.repeat(1000));
    };
    const announced = await failure(client(k.url, { maxResponseBytes: 4096 }).auth('simulated'));
    expect(announced).toBeInstanceOf(BrokerError);
    expect(announced.message).toMatch(/more than the 4096/);
    k.override.auth = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // chunked, no length
      const blob = ' '.repeat(1024);
      for (let i = 0; i < 8; i++) res.write(blob);
      res.end();
    };
    const streamed = await failure(client(k.url, { maxResponseBytes: 4096 }).auth('simulated'));
    expect(streamed).toBeInstanceOf(BrokerError);
    expect(streamed.message).toMatch(/more than the 4096/);
  });

  it('a broker that closes the socket mid-answer is a broker failure', async () => {
    const k = await kbs();
    k.override.auth = (_req, res) => {
      res.writeHead(200, { 'content-length': 500, 'set-cookie': 'kbs-session-id=abc' });
      res.write('{"nonce":"');
      setImmediate(() => res.socket?.destroy());
    };
    const err = await failure(client(k.url).auth('simulated'));
    expect(err).toBeInstanceOf(BrokerError);
    expect(err.message).toMatch(/cut short|closed/);
    k.override.auth = (req) => req.socket.destroy(); // before any answer
    expect((await failure(client(k.url).auth('simulated'))).code).toBe('ERR_BROKER');
  });

  it('a broker that stalls, before answering or mid-body, times out (ERR_BROKER)', async () => {
    const k = await kbs();
    k.override.auth = () => {}; // never answers
    const silent = await failure(client(k.url, { idleTimeoutMs: 150 }).auth('simulated'));
    expect(silent).toBeInstanceOf(BrokerError);
    expect(silent.message).toMatch(/stalled/);
    k.override.auth = (_req, res) => {
      res.writeHead(200, { 'content-length': 100 });
      res.write('{');
    };
    const midBody = await failure(client(k.url, { idleTimeoutMs: 150 }).auth('simulated'));
    expect(midBody).toBeInstanceOf(BrokerError);
    // A trickle that never goes quiet still ends at the overall limit.
    k.override.auth = (_req, res) => {
      res.writeHead(200, { 'content-length': 100000 });
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write(' ')), 20);
    };
    const trickle = await failure(client(k.url, { idleTimeoutMs: 1000, requestTimeoutMs: 300 }).auth('simulated'));
    expect(trickle.message).toMatch(/did not answer within 300 ms/);
  });

  it('an AbortSignal cancels a request in flight with its reason', async () => {
    const k = await kbs();
    k.override.auth = () => {};
    const controller = new AbortController();
    const p = client(k.url, { signal: controller.signal }).auth('simulated');
    setTimeout(() => controller.abort(), 20);
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    const already = AbortSignal.abort(new Error('stop'));
    await expect(client(k.url, { signal: already }).auth('simulated')).rejects.toThrow('stop');
  });
});
