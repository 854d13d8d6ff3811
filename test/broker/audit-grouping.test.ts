/**
 * Review finding 5: a malformed request from an unauthenticated client wrote one fsync'd,
 * hash-chained audit entry each. Now such denials are grouped per address per time window (as
 * rate-limit refusals are): the first in a window is an entry, the rest are counted and the count
 * lands in the address's next entry, or in one entry per address when the broker closes. Denials
 * tied to a session or evidence stay one entry each.
 */
import { describe, expect, it } from 'vitest';
import { attest, attestBody, auth, type Fixture, teeKeyPair, useFixtures } from './fixture.js';

const fixture = useFixtures();

const junk = (f: Fixture) => f.send('/kbs/v0/auth', { headers: { 'content-type': 'application/json' }, body: '{"version":' });
const denials = (f: Fixture) => f.audit.entries.filter((e) => e.verdict === 'deny');
const counted = (f: Fixture): number => denials(f).reduce((n, e) => n + Number((e.detail as { count?: number }).count ?? 1), 0);

describe('audit: malformed requests from one address are grouped', () => {
  it('30 malformed requests write one entry, and the count of the rest lands at close', async () => {
    const f = await fixture();
    for (let i = 0; i < 30; i++) expect((await junk(f)).status).toBe(400);
    expect(denials(f)).toHaveLength(1);
    await f.broker.close();
    expect(denials(f)).toHaveLength(2);
    expect(counted(f)).toBe(30);
    const last = denials(f)[1]!;
    expect(last.client).toBe('127.0.0.1');
    expect(last.detail).toMatchObject({ count: 29, grouped: 'malformed' });
  });

  it('a new window starts a new entry that carries the previous window\'s count', async () => {
    const f = await fixture();
    for (let i = 0; i < 5; i++) await junk(f);
    expect(denials(f)).toHaveLength(1);
    f.clock.ms += 61_000;
    await junk(f);
    expect(denials(f)).toHaveLength(2);
    expect(denials(f)[1]!.detail).toMatchObject({ previousWindow: { count: 4 } });
    await f.broker.close();
    expect(denials(f)).toHaveLength(2);
    expect(counted(f) + 4).toBe(6);
  });

  it('denials tied to a session stay one entry each', async () => {
    const f = await fixture();
    for (let i = 0; i < 3; i++) {
      const a = await auth(f);
      const { jwk } = await teeKeyPair();
      const body = await attestBody(f, a.nonce, jwk, { bindNonce: Buffer.alloc(32, 9).toString('base64') });
      expect((await attest(f, a.cookie, body)).status).toBe(403);
    }
    expect(denials(f)).toHaveLength(3);
    for (const e of denials(f)) expect((e.detail as { session?: string }).session).toBeDefined();
  });
});
