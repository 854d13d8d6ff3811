/**
 * Outside review of the broker's HTTP front (issue 8): what one unauthenticated client address can
 * take from everyone else. Loopback has a whole /8, so the "other" clients below connect from
 * 127.0.0.2 while the abusive one uses 127.0.0.1.
 */
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { json, type Reply } from './client.js';
import { type Fixture, startFixture } from './fixture.js';

let fixtures: Fixture[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(fixtures.map((f) => f.broker.close()));
  fixtures = [];
});
async function fixture(over: Parameters<typeof startFixture>[0] = {}): Promise<Fixture> {
  const f = await startFixture(over);
  fixtures.push(f);
  return f;
}

/** POST /kbs/v0/auth from a chosen source address. */
function authFrom(f: Fixture, localAddress: string): Promise<Reply> {
  const j = json({ version: '0.4.0', tee: 'simulated', 'extra-params': '' });
  return new Promise((resolve, reject) => {
    const req = (f.ca ? httpsRequest : request)(`${f.url}/kbs/v0/auth`, { method: 'POST', localAddress, agent: false, ...(f.ca ? { ca: f.ca } : {}), headers: { ...j.headers, 'content-length': String(Buffer.byteLength(j.body)) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: JSON.parse(text) as unknown });
      });
    });
    req.on('error', reject);
    req.end(j.body);
  });
}

async function connections(f: Fixture): Promise<number> {
  return new Promise((resolve, reject) => f.broker.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

describe('review: one client address and the broker\'s connection slots', () => {
  it.each([['HTTP', false], ['HTTPS', true]])('%s: connections that never finish their headers, all from one address, do not lock every other client out', async (_, https) => {
    const f = await fixture({ maxConnections: 16, https });
    const port = Number(new URL(f.url).port);
    // Slowloris: 16 connections from 127.0.0.1, each with half a request line; the rate limiter
    // never sees them (it counts requests), and maxConnections is one pool for everybody.
    for (let i = 0; i < 16; i++) {
      const tcp = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.1' });
      const s = https ? tlsConnect({ socket: tcp, host: '127.0.0.1', ca: f.ca }) : tcp;
      if (s !== tcp) tcp.on('error', () => {});
      s.on('error', () => {});
      sockets.push(s);
      // Over TLS the handshake completes first; the request then stalls like the plain one.
      // (A connection the broker turns away closes instead.)
      await new Promise<void>((resolve) => {
        s.once(https ? 'secureConnect' : 'connect', () => resolve());
        s.once('close', () => resolve());
      });
      s.write('POST /kbs/v0/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    }
    // Wait until the broker has looked at every one of them (accepted, or turned away).
    for (let n = -1; n !== (n = await connections(f)); ) await new Promise((r) => setImmediate(r));
    const other = await authFrom(f, '127.0.0.2');
    expect(other.status, other.text).toBe(200);
  });

  it('header and request timeouts are checked often enough to mean what they say (Node checks every 30 s by default)', async () => {
    const f = await fixture();
    const server = f.broker.server as typeof f.broker.server & { connectionsCheckingInterval: number };
    // headersTimeout defaults to 10 s: with Node's 30 s sweep a slow client keeps its slot up to 40 s.
    expect(server.connectionsCheckingInterval).toBeLessThanOrEqual(1000);
  });
});

describe('review: one client address and the pending-challenge cap', () => {
  // The cap was one pool, so one address (at the default 60 requests/s and 60 s challenges, about
  // 3,700 pending) or three filled it and /auth was 429 for everyone. Now a full table gives up the
  // oldest challenge of the address holding the most.
  it('challenges pending for one address do not make /auth refuse every other address', async () => {
    const f = await fixture({ maxPendingChallenges: 8 });
    for (let i = 0; i < 8; i++) expect((await authFrom(f, '127.0.0.1')).status).toBe(200);
    const other = await authFrom(f, '127.0.0.2');
    expect(other.status, other.text).toBe(200);
  });
});
