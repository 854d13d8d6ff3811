import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { SealedTensorsError, type ErrorCode } from '../../src/errors.js';
import { parseCertificates } from '../../src/attestation/certs.js';
import type { Claims } from '../../src/attestation/types.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Real evidence committed with the tests (provenance in each folder's README.md). */
export const VECTORS = resolve(here, '../vectors/attestation');

export function vec(path: string): Uint8Array {
  return new Uint8Array(readFileSync(join(VECTORS, path)));
}

export function certs(...paths: string[]) {
  return paths.flatMap((p) => parseCertificates(vec(p), p));
}

export const EVIDENCE_ERRORS: readonly ErrorCode[] = ['ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_CHAIN', 'ERR_POLICY'];

/** Runs fn and returns the typed error it throws; fails the test if it returns or throws anything else. */
export async function typedError(fn: () => unknown, codes: readonly ErrorCode[] = EVIDENCE_ERRORS): Promise<SealedTensorsError> {
  let result: unknown;
  try {
    result = await fn();
  } catch (err) {
    if (!(err instanceof SealedTensorsError)) throw new Error(`expected a SealedTensorsError, got ${String(err)}`, { cause: err });
    expect(codes).toContain(err.code);
    return err;
  }
  throw new Error(`expected a typed error, but it returned ${typeof result}`);
}

/** A copy with one bit flipped. */
export function flip(bytes: Uint8Array, byte: number, bit: number): Uint8Array {
  const c = bytes.slice();
  c[byte]! ^= 1 << bit;
  return c;
}

/** Synchronous variant for hot loops: returns the error code, or 'accepted' if it did not throw. */
export function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'accepted';
  } catch (err) {
    return err instanceof SealedTensorsError ? err.code : `untyped: ${String(err)}`;
  }
}

export async function outcomeAsync(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'accepted';
  } catch (err) {
    return err instanceof SealedTensorsError ? err.code : `untyped: ${String(err)}`;
  }
}

/** Synthetic SEV-SNP claims (Genoa, VMPL 0, at the built-in TCB floor; report data 0xab x 32 then zeros). */
export const snpClaims = (over: Partial<Claims> = {}): Claims => ({
  tee: 'snp',
  simulated: false,
  measurement: 'aa'.repeat(48),
  measurements: { measurement: 'aa'.repeat(48), hostData: '00'.repeat(32) },
  reportData: `${'ab'.repeat(32)}${'00'.repeat(32)}`,
  debug: false,
  tcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 },
  platform: { product: 'Genoa', vmpl: '0' },
  ...over,
});
