/**
 * Every per-client limit of the broker counts in one unit (src/broker/client-bucket.ts): an IPv4
 * address, or an IPv6 /64. The rate limiter and the connection cap counted raw addresses while
 * challenges counted /64s, so a host holding a /64 rotated around them. Loopback has only ::1, so the
 * server tests give each accepted connection the peer address the test chooses.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { clientBucket } from '../../src/broker/client-bucket.js';
import { authOnce, openConnections } from './client.js';
import { type Fixture, startFixture } from './fixture.js';

let fixtures: Fixture[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(fixtures.map((f) => f.broker.close()));
  fixtures = [];
});

/** A plain-HTTP broker whose connections appear to come from the addresses `peers` yields, in turn. */
async function fixture(peers: () => string, over: Parameters<typeof startFixture>[0] = {}): Promise<Fixture> {
  const f = await startFixture(over);
  fixtures.push(f);
  // Ahead of the broker's own listeners: the cap and every request see this address.
  f.broker.server.prependListener('connection', (s: Socket) => Object.defineProperty(s, 'remoteAddress', { value: peers(), configurable: true }));
  return f;
}


describe('clientBucket: IPv4-compatible addresses (review-c)', () => {
  it('::a.b.c.d (as a socket reports an IPv4-compatible peer) is an IPv6 address of ::/64, not the IPv4 a.b.c.d', () => {
    // ipaddr.js parses "::1.2.3.4" as ::ffff:1.2.3.4: a host in ::/64 got a bucket per IPv4 address
    // (rotating around every limit) and shared the bucket of the real IPv4 peer 1.2.3.4.
    for (const a of ['::1.2.3.4', '::9.9.9.9', '::102:304', '0:0:0:0:0:0:1.2.3.4']) expect(clientBucket(a), a).toBe(clientBucket('::1'));
    expect(clientBucket('::1.2.3.4')).not.toBe('1.2.3.4');
    // Other embedded-IPv4 spellings stay where they belong.
    expect(clientBucket('::ffff:1.2.3.4')).toBe('1.2.3.4');
    expect(clientBucket('::ffff:0:1.2.3.4')).toBe(clientBucket('::ffff:0:0:1'));
    expect(clientBucket('64:ff9b::1.2.3.4')).toBe('64:ff9b:0:0::/64');
    expect(clientBucket('2001:db8:1:2::1.2.3.4')).toBe('2001:db8:1:2::/64');
  });
});

describe('clientBucket', () => {
  it('an IPv6 address counts as its /64 in any spelling; IPv4-mapped as IPv4; a zone id is ignored; IPv4 as itself', () => {
    const b = clientBucket('2001:db8:1:2::1');
    expect(b).toBe('2001:db8:1:2::/64');
    for (const same of ['2001:0db8:0001:0002:ffff:eeee:dddd:cccc', '2001:DB8:1:2:0:0:0:9', '2001:db8:1:2::1%eth0']) expect(clientBucket(same), same).toBe(b);
    for (const other of ['2001:db8:1:3::1', '2001:db8:0:2::1', '2001:db9:1:2::1']) expect(clientBucket(other), other).not.toBe(b);
    expect(clientBucket('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(clientBucket('::ffff:7f00:1')).toBe('127.0.0.1');
    expect(clientBucket('::1')).toBe('0:0:0:0::/64');
    expect(clientBucket('fe80::1%eth0')).toBe(clientBucket('fe80::2'));
    expect(clientBucket('10.0.0.1')).toBe('10.0.0.1');
    expect(clientBucket('10.0.0.1')).not.toBe(clientBucket('10.0.0.2'));
    // What a socket never reports stays as it is (and so its own bucket).
    for (const odd of ['unknown', '0x7f.1', '']) expect(clientBucket(odd)).toBe(odd);
  });
});

describe('broker: per-client limits count an IPv6 /64 as one client', () => {
  it('the request rate limit: addresses rotated within one /64 share one bucket; another /64 has its own', async () => {
    let n = 0;
    let prefix = '2001:db8:1:2';
    const f = await fixture(() => `${prefix}::${(++n).toString(16)}`, { rateLimit: { burst: 3, perSecond: 0.001 } });
    for (let i = 0; i < 3; i++) expect((await authOnce(f)).status).toBe(200);
    const r = await authOnce(f);
    expect(r.status, r.text).toBe(429);
    expect(r.text).toContain('2001:db8:1:2::/64');
    prefix = '2001:db8:1:3';
    expect((await authOnce(f)).status).toBe(200);
  });

  it('the connection cap: connections from rotating addresses in one /64 are held to maxConnectionsPerClient', async () => {
    let n = 0;
    let prefix = '2001:db8:1:2';
    const f = await fixture(() => `${prefix}::${(++n).toString(16)}`, { maxConnectionsPerClient: 2 });
    const port = Number(new URL(f.url).port);
    const open = async (): Promise<Socket> => {
      const s = connect({ port, host: '127.0.0.1' });
      s.on('error', () => {});
      sockets.push(s);
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      s.write('POST /kbs/v0/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // and never finish
      return s;
    };
    const settle = async (): Promise<number> => {
      let c = -1;
      for (let seen = -2; seen !== c; ) {
        seen = c;
        await new Promise((r) => setImmediate(r));
        c = await openConnections(f.broker.server);
      }
      return c;
    };
    for (let i = 0; i < 4; i++) await open();
    expect(await settle()).toBe(2);
    prefix = '2001:db8:1:3';
    await open();
    expect(await settle()).toBe(3);
  });
});
