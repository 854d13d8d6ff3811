import { validatePolicy, type Policy } from '../../src/attestation/policy/policy.js';
import type { EvaluateOptions } from '../../src/attestation/policy/evaluate.js';
import type { Claims } from '../../src/attestation/types.js';

/**
 * The narrowest policy a broker could write for one piece of evidence: every measurement it carries
 * pinned to its value, and its own report data as the expected nonce (time: its own timestamp). What it
 * still refuses comes from the defaults (debug, TCB floors, VMPL, TDX status), which is what tests check.
 */
export function pinnedTo(c: Claims, extra: Record<string, unknown> = {}): { policy: Policy; opts: EvaluateOptions } {
  const measurements = Object.fromEntries(Object.entries(c.measurements).map(([k, v]) => [k, [v]]));
  const policy = validatePolicy({ version: 1, ...(c.simulated ? { allowSimulated: true } : {}), tees: { [c.tee]: { measurements, ...extra } } });
  const opts: EvaluateOptions = { expectedReportData: new Uint8Array(Buffer.from(c.reportData, 'hex')), ...(c.issuedAt ? { now: new Date(c.issuedAt) } : {}) };
  return { policy, opts };
}
