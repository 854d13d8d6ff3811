/**
 * The preamble the EnclaveSession tests share: fake brokers closed after each test (and real
 * timers restored), a session established against one over loopback with the simulated TEE.
 * Import it after the test file's vi.mock of ephemeral.js (vi.mock is hoisted, so the mock holds).
 */
import { afterEach, expect, vi } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { EnclaveSession, type EnclaveSessionOptions } from '../../src/session/enclave-session.js';
import { FakeKbs, type FakeKey } from './fake-kbs.js';

export const tee = new SimulatedTee();

/** A `broker()` that starts a FakeKbs and closes it after each test. Call once at a file's top level. */
export function useFakeKbs(): (keys?: Record<string, FakeKey>, extra?: Parameters<typeof FakeKbs.start>[0]) => Promise<FakeKbs> {
  const servers: FakeKbs[] = [];
  afterEach(async () => {
    vi.useRealTimers();
    for (const s of servers.splice(0)) await s.close();
  });
  return async (keys = {}, extra = {}) => {
    const k = await FakeKbs.start({ keys, ...extra });
    servers.push(k);
    return k;
  };
}

export function establish(kbs: FakeKbs, keys: string[], extra: Partial<EnclaveSessionOptions> = {}): Promise<EnclaveSession> {
  return EnclaveSession.establish({ broker: kbs.url, allowPlainHttpOnLoopback: true, provider: tee, keys, ...extra });
}

/** What `p` rejected with, or null when it resolved. */
export function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}

/** The typed error `p` rejected with (fails the test when it resolved or threw something untyped). */
export async function failure(p: Promise<unknown>): Promise<SealedTensorsError> {
  const err = await rejectionOf(p);
  expect(err).toBeInstanceOf(SealedTensorsError);
  return err as SealedTensorsError;
}
