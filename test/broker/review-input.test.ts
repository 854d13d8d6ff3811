/**
 * Outside review of the broker's request parsing (issue 8): inputs that should be refused as the
 * client's fault (400) but reach code paths that fail as the broker's (500), and refusals whose
 * reasons carry unbounded attacker text into the response and the audit log.
 */
import { describe, expect, it } from 'vitest';
import { json, type Reply } from './client.js';
import { attest, attestBody, auth, type Fixture, teeKeyPair, useFixtures } from './fixture.js';

const fixture = useFixtures();

/** A refusal that is the client's fault: 400, audited, nothing reported as an internal error. */
function expectBadRequest(f: Fixture, r: Reply, reason: RegExp): void {
  expect(r.status, r.text).toBe(400);
  expect((r.json as { reasons: string[] }).reasons).toEqual(expect.arrayContaining([expect.stringMatching(reason)]));
  expect(f.audit.entries.at(-1)).toMatchObject({ verdict: 'deny' });
  expect(f.errors).toEqual([]);
  expect(f.keystore.handedOut).toHaveLength(0);
}

describe('review: tee-pubkey members that the binding cannot hash', () => {
  // parsePublicJwk lets "kid" and "use" through unchecked; the binding hashes the JWK as received
  // (RFC 8785), which refuses lone surrogates and non-finite numbers: the attest fails after the
  // evidence verified, as an internal error (500, operator alerted), for input the client chose.
  for (const [name, member] of [
    ['a kid with a lone surrogate', '"kid":"\\ud800"'],
    ['a numeric kid out of range (1e999 parses as Infinity)', '"kid":1e999'],
    ['a use that is an object', '"use":{"a":1e999}'],
  ] as const) {
    it(`${name} is a 400 naming tee-pubkey, not a 500`, async () => {
      const f = await fixture();
      const a = await auth(f);
      const { jwk } = await teeKeyPair();
      // Evidence bound to the plain JWK: the request must be refused before or at the binding, as malformed.
      const body = JSON.stringify(await attestBody(f, a.nonce, jwk)).replace('"alg":"ECDH-ES+A256KW"', `"alg":"ECDH-ES+A256KW",${member}`);
      expect(body).toContain(member);
      const r = await f.send('/kbs/v0/attest', { headers: { 'content-type': 'application/json', cookie: `kbs-session-id=${a.cookie}` }, body });
      expectBadRequest(f, r, /tee-pubkey/);
    });
  }

  it('a kid or use that is not a short string is refused even when it could be hashed (RFC 7517: both are strings)', async () => {
    const f = await fixture();
    for (const extra of [{ kid: { deep: [1, 2, 3] } }, { use: 'sig' }, { kid: 'k'.repeat(100_000) }]) {
      const a = await auth(f);
      const { jwk } = await teeKeyPair();
      const withExtra = { ...jwk, ...extra };
      const r = await attest(f, a.cookie, await attestBody(f, a.nonce, withExtra));
      expectBadRequest(f, r, /tee-pubkey/);
    }
  });
});

describe('review: refusal reasons are bounded', () => {
  // Member names and values from the request were copied whole into `detail` and `reasons`, so a
  // 1 MiB request produced a ~1 MiB answer and a ~2 MiB audit line, for every refused request.
  const big = 'x'.repeat(200_000);
  const cases: [string, string, (f: Fixture) => Promise<Record<string, string>>, () => unknown][] = [
    ['an unknown member name at /auth', '/kbs/v0/auth', async () => ({}), () => ({ version: '0.4.0', tee: 'simulated', [big]: 1 })],
    ['an unknown member name in runtime-data', '/kbs/v0/attest', async (f) => ({ cookie: `kbs-session-id=${(await auth(f)).cookie}` }), () => ({ 'runtime-data': { nonce: 'x', [big]: 1 }, 'tee-evidence': {} })],
    ['a tee-pubkey kty value', '/kbs/v0/attest', async (f) => ({ cookie: `kbs-session-id=${(await auth(f)).cookie}` }), () => ({ 'runtime-data': { nonce: Buffer.alloc(32).toString('base64'), 'tee-pubkey': { kty: big } }, 'tee-evidence': {} })],
    ['a tee-pubkey crv value', '/kbs/v0/attest', async (f) => ({ cookie: `kbs-session-id=${(await auth(f)).cookie}` }), () => ({ 'runtime-data': { nonce: Buffer.alloc(32).toString('base64'), 'tee-pubkey': { kty: 'EC', crv: big } }, 'tee-evidence': {} })],
    ['a tee-pubkey member name', '/kbs/v0/attest', async (f) => ({ cookie: `kbs-session-id=${(await auth(f)).cookie}` }), () => ({ 'runtime-data': { nonce: Buffer.alloc(32).toString('base64'), 'tee-pubkey': { kty: 'EC', [big]: 1 } }, 'tee-evidence': {} })],
  ];
  for (const [name, path, headers, body] of cases) {
    it(`${name}: the answer and the audit entry stay small`, async () => {
      const f = await fixture();
      const h = await headers(f);
      const j = json(body());
      const r = await f.send(path, { headers: { ...j.headers, ...h }, body: j.body });
      expect(r.status).toBe(400);
      expect(r.text.length).toBeLessThan(8 * 1024);
      const entry = f.audit.entries.at(-1)!;
      expect(entry.verdict).toBe('deny');
      expect(JSON.stringify(entry).length).toBeLessThan(8 * 1024);
    });
  }
});

describe('review: errors name the member, not the JavaScript engine', () => {
  it('deeply nested extra-params at /auth is a 400 naming extra-params (not "Maximum call stack size exceeded")', async () => {
    const f = await fixture();
    const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
    const r = await f.send('/kbs/v0/auth', { headers: { 'content-type': 'application/json' }, body: `{"version":"0.4.0","tee":"simulated","extra-params":${deep}}` });
    expect(r.status).toBe(400);
    expect((r.json as { detail: string }).detail).toMatch(/extra-params/);
    expect(r.text).not.toMatch(/call stack/i);
  });
});
