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
