import { SealedTensorsError } from '../../src/errors.js';

/**
 * How many fast-check cases a property runs: a default sized for `npm test` on 2 cores, or
 * FUZZ_RUNS (`npm run fuzz` sets it) for the long runs.
 */
export function fuzzRuns(defaultRuns: number): number {
  const raw = process.env.FUZZ_RUNS;
  if (raw === undefined || raw === '') return defaultRuns;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw new SealedTensorsError('ERR_INVALID_ARGUMENT', `FUZZ_RUNS must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** True under FUZZ_RUNS (`npm run fuzz`): exhaustive sweeps flip every bit, not one per byte. */
export const LONG_RUN = (process.env.FUZZ_RUNS ?? '') !== '';

/**
 * The bits a bit-flip sweep flips in byte `byte`: all eight in the long run; otherwise one,
 * rotating with the position (byte i flips bit i mod 8), so every bit position and every byte is
 * still covered by the default run at an eighth of the cost.
 */
export function bitsToFlip(byte: number): number[] {
  return LONG_RUN ? [0, 1, 2, 3, 4, 5, 6, 7] : [byte % 8];
}
