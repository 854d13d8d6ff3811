import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/attestation/policy/policy.js';
import { appraiseEvidence, type AppraiseOptions } from '../../src/attestation/verify.js';
import { parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import type { TeeType } from '../../src/attestation/types.js';
import { certs, vec } from './helpers.js';

const POLICIES = resolve(dirname(fileURLToPath(import.meta.url)), '../../docs/policies');

/** Each worked policy in docs/policies, the real evidence it was written for, and how to verify it. */
const CASES: { file: string; type: TeeType; evidence: string; opts: () => Omit<AppraiseOptions, 'policy' | 'expectedReportData'> }[] = [
  { file: 'snp.json', type: 'snp', evidence: 'sev-snp/azure_genoa_report.bin', opts: () => ({ now: new Date('2026-01-01T00:00:00Z'), certificates: certs('sev-snp/azure_genoa_vcek.pem', 'sev-snp/ask_ark_genoa.pem') }) },
  { file: 'tdx.json', type: 'tdx', evidence: 'tdx/dcapqvl_quote_v4.bin', opts: () => ({ now: new Date(1752919234 * 1000), collateral: parseTdxCollateral([{ name: 'dcapqvl', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]) }) },
  { file: 'nitro.json', type: 'nitro', evidence: 'nitro/evervault_doc_20221013.cose.bin', opts: () => ({ now: new Date(1665651482136 + 30_000) }) },
  { file: 'azure-snp.json', type: 'azure-snp', evidence: 'azure-vtpm/az_snp_genoa_evidence.json', opts: () => ({ now: new Date('2026-01-01T00:00:00Z'), certificates: certs('azure-vtpm/ask_ark_genoa.pem') }) },
  { file: 'nvidia.json', type: 'nvidia', evidence: 'nvidia/hopper_report_1.bin', opts: () => ({ certificates: certs('nvidia/hopper_cert_chain_1.pem') }) },
];

describe('worked policies in docs/policies', () => {
  it('every file parses, has one section for its TEE, pins measurements and allows no debug or simulated evidence', () => {
    for (const { file, type } of CASES) {
      const p = parsePolicy(readFileSync(join(POLICIES, file), 'utf8'), file);
      expect(Object.keys(p.tees), file).toEqual([type]);
      expect(Object.keys(p.tees[type]!.measurements ?? {}).length, file).toBeGreaterThan(0);
      expect(p.allowSimulated, file).toBe(false);
      expect(p.tees[type]!.allowDebug, file).toBe(false);
    }
  });

  it(`each allows its real evidence with the right nonce, and denies another nonce or another measurement`, async () => {
    for (const { file, type, evidence, opts } of CASES) {
      const text = readFileSync(join(POLICIES, file), 'utf8');
      const policy = parsePolicy(text, file);
      const ev = vec(evidence);
      // The vector's own report data stands in for the nonce the broker sent with its challenge.
      const first = await appraiseEvidence(type, ev, { ...opts(), policy, expectedReportData: new Uint8Array(32).fill(1) });
      expect(first.verified, file).toBe(true);
      expect(first.verdict.reasons, file).toEqual([expect.stringMatching(/^policy\.expectedReportData: .*stale or replayed/)]);
      const nonce = new Uint8Array(Buffer.from(first.claims!.reportData, 'hex'));
      const a = await appraiseEvidence(type, ev, { ...opts(), policy, expectedReportData: nonce });
      expect(a.verdict.reasons, file).toEqual([]);
      expect(a.verified && a.verdict.allowed, file).toBe(true);
      // One hex digit of the first pinned measurement changed: denied.
      const [name, [value]] = Object.entries(policy.tees[type]!.measurements!)[0]! as [string, string[]];
      const other = parsePolicy(text.replace(value!, `${value![0] === '0' ? '1' : '0'}${value!.slice(1)}`), file);
      const b = await appraiseEvidence(type, ev, { ...opts(), policy: other, expectedReportData: nonce });
      expect(b.verdict.reasons, file).toEqual([expect.stringMatching(new RegExp(`^policy\\.measurements\\.${name}: `))]);
    }
  });
});
