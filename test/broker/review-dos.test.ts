/**
 * Outside review of the broker's HTTP front (issue 8): what one unauthenticated client address can
 * take from everyone else. Loopback has a whole /8, so the "other" clients below connect from
 * 127.0.0.2 while the abusive one uses 127.0.0.1.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { authOnce, openConnections } from './client.js';
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
    for (let n = -1; n !== (n = await openConnections(f.broker.server)); ) await new Promise((r) => setImmediate(r));
    const other = await authOnce(f, '127.0.0.2');
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
    for (let i = 0; i < 8; i++) expect((await authOnce(f, '127.0.0.1')).status).toBe(200);
    const other = await authOnce(f, '127.0.0.2');
    expect(other.status, other.text).toBe(200);
  });
});
