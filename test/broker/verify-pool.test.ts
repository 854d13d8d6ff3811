import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VerifierUnavailableError, VerifyPool, type PoolJob } from '../../src/broker/verify-pool.js';
import { attest, attestBody, auth, resource, teeKeyPair, useFixtures } from './fixture.js';

const worker = (name: string): URL => new URL(`./workers/${name}.mjs`, import.meta.url);
const job = (evidence = 'x'): PoolJob => ({ type: 'simulated', evidence: new TextEncoder().encode(evidence), certificates: [], nowMs: Date.now() });
// The real worker runs compiled code (a worker thread does not go through vitest's TypeScript transform).
const BUILT = resolve('dist/broker/verify-worker.js');
const hasBuild = existsSync(BUILT);
if (!hasBuild) console.warn('SKIPPED part of test/broker/verify-pool.test.ts: dist/broker/verify-worker.js is not built (npm run build)');

describe('verifier pool: no answer is never an accept', () => {
  for (const [name, why] of [['exits', /exited \(code 7\)/], ['throws', /verifier bug/]] as const) {
    it(`a thread that ${name} fails its job with VerifierUnavailableError, and so does the next one (a fresh thread), without hanging`, async () => {
      const errors: unknown[] = [];
      const pool = new VerifyPool({ issuers: [] }, { threads: 1, workerUrl: worker(name), onError: (e) => errors.push(e) });
      try {
        for (let i = 0; i < 2; i++) {
          const err = await pool.verify(job()).then(() => undefined, (e: unknown) => e);
          expect(err).toBeInstanceOf(VerifierUnavailableError);
          expect((err as Error).message).toMatch(why);
          expect((err as Error).message).toMatch(/not verified/);
        }
      } finally {
        await pool.close();
      }
    });
  }

  it('a thread that does not answer fails its job after the timeout', async () => {
    const pool = new VerifyPool({ issuers: [] }, { threads: 1, workerUrl: worker('silent'), timeoutMs: 300 });
    try {
      await expect(pool.verify(job())).rejects.toThrow(/did not answer within 300 ms/);
    } finally {
      await pool.close();
    }
  });

  it('a crash fails the crashed thread\'s jobs only; later jobs get a fresh thread; close() fails what is left', async () => {
    const pool = new VerifyPool({ issuers: [] }, { threads: 1, workerUrl: worker('accepts') });
    try {
      await expect(pool.verify(job())).resolves.toMatchObject({ tee: 'simulated' });
      await expect(pool.verify(job('crash'))).rejects.toBeInstanceOf(VerifierUnavailableError);
      await expect(pool.verify(job())).resolves.toMatchObject({ tee: 'simulated' });
    } finally {
      await pool.close();
    }
    await expect(pool.verify(job())).rejects.toThrow(/closed/);
  });

  it('refuses a thread count out of range', () => {
    for (const threads of [0, 17, 1.5]) expect(() => new VerifyPool({ issuers: [] }, { threads })).toThrow(/from 1 to 16/);
  });
});

describe('broker with verifier threads', () => {
  const fixture = useFixtures();

  it('a verifier thread that crashes denies the attestation (403, audited), and no session is made', async () => {
    const f = await fixture({ verifyThreads: { threads: 1, workerUrl: worker('exits') } });
    const { cookie, nonce } = await auth(f);
    const { jwk } = await teeKeyPair();
    const r = await attest(f, cookie, await attestBody(f, nonce, jwk));
    expect(r.status).toBe(403);
    expect((r.json as { reasons: string[] }).reasons.join('\n')).toMatch(/^verifier: the verifier thread exited/);
    expect(f.audit.entries.at(-1)).toMatchObject({ verdict: 'deny' });
    expect((await resource(f, { cookie })).status).toBe(401);
  });

  it.skipIf(!hasBuild)('with the real verifier thread: valid evidence is accepted and released; a modified report is still denied', async () => {
    const f = await fixture({ verifyThreads: { threads: 2, workerUrl: new URL(`file://${BUILT}`) } });
    {
      const { cookie, nonce } = await auth(f);
      const { jwk } = await teeKeyPair();
      const r = await attest(f, cookie, await attestBody(f, nonce, jwk));
      expect(r.status).toBe(200);
      expect((await resource(f, { cookie })).status).toBe(200);
    }
    {
      const { cookie, nonce } = await auth(f);
      const { jwk } = await teeKeyPair();
      const body = await attestBody(f, nonce, jwk);
      const pe = (body['tee-evidence'] as { primary_evidence: { evidence: string } }).primary_evidence;
      const ev = Buffer.from(pe.evidence, 'base64');
      ev[ev.length - 10]! ^= 1; // inside the signature
      pe.evidence = ev.toString('base64');
      const r = await attest(f, cookie, body);
      expect(r.status).toBe(403);
      expect((r.json as { reasons: string[] }).reasons.join('\n')).toMatch(/ERR_EVIDENCE_(SIGNATURE|FORMAT)/);
      expect((await resource(f, { cookie })).status).toBe(401);
    }
    {
      // Bound to another nonce: the thread verifies the evidence, the main thread's binding check denies.
      const { cookie, nonce } = await auth(f);
      const { jwk } = await teeKeyPair();
      const r = await attest(f, cookie, await attestBody(f, nonce, jwk, { bindNonce: Buffer.alloc(32, 1).toString('base64') }));
      expect(r.status).toBe(403);
    }
  });
});
