import { describe, expect, it } from 'vitest';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { evaluateDevices, requiredDevices } from '../../src/attestation/policy/evaluate.js';
import { snpClaims } from './helpers.js';
import type { Claims } from '../../src/attestation/types.js';

const nvidia = { measurements: { m1: ['aa'.repeat(48)] } };
const snp = { measurements: { measurement: ['aa'.repeat(48)] } };

describe('policy requireDevices (composite evidence)', () => {
  it('is valid at the top level or in a CPU section, with a section for the device; default none', () => {
    expect(validatePolicy({ version: 1, tees: { snp } }).requireDevices).toBeUndefined();
    expect(requiredDevices(validatePolicy({ version: 1, tees: { snp } }), 'snp')).toEqual([]);
    const top = validatePolicy({ version: 1, requireDevices: ['nvidia'], tees: { snp, nvidia } });
    expect(top.requireDevices).toEqual(['nvidia']);
    expect(requiredDevices(top, 'snp')).toEqual(['nvidia']);
    const per = validatePolicy({ version: 1, tees: { snp: { ...snp, requireDevices: ['nvidia'] }, tdx: { measurements: { mrTd: ['bb'.repeat(48)], rtmr1: ['cc'.repeat(48)] } }, nvidia } });
    expect(requiredDevices(per, 'snp')).toEqual(['nvidia']);
    expect(requiredDevices(per, 'tdx')).toEqual([]);
  });

  it('refuses what cannot mean anything, each with its path', () => {
    const bad: [unknown, RegExp][] = [
      [{ version: 1, requireDevices: [], tees: { snp, nvidia } }, /requireDevices: must be a non-empty list of device kinds/],
      [{ version: 1, requireDevices: ['snp'], tees: { snp, nvidia } }, /requireDevices: must be a non-empty list of device kinds, each once \(nvidia\)/],
      [{ version: 1, requireDevices: ['nvidia', 'nvidia'], tees: { snp, nvidia } }, /requireDevices: must be a non-empty list/],
      [{ version: 1, requireDevices: 'nvidia', tees: { snp, nvidia } }, /requireDevices: must be a non-empty list/],
      [{ version: 1, requireDevices: ['nvidia'], tees: { snp } }, /tees\.nvidia: is missing: requireDevices names "nvidia"/],
      [{ version: 1, tees: { snp: { ...snp, requireDevices: ['nvidia'] } } }, /tees\.nvidia: is missing/],
      [{ version: 1, tees: { snp, nvidia: { ...nvidia, requireDevices: ['nvidia'] } } }, /tees\.nvidia\.requireDevices: belongs in a CPU TEE section/],
    ];
    for (const [p, re] of bad) expect(() => validatePolicy(p)).toThrow(re);
  });

  it('evaluateDevices: a required device missing is one reason; each device is judged by its section with its own binding', () => {
    const policy = validatePolicy({ version: 1, requireDevices: ['nvidia'], tees: { snp, nvidia: { ...nvidia, allowDebug: true } } });
    expect(evaluateDevices(policy, 'snp', []).reasons).toEqual([expect.stringMatching(/^policy\.requireDevices\.nvidia: the policy requires NVIDIA GPU evidence .* presented none/)]);
    const nonce = new Uint8Array(32).fill(3);
    const gpu = { ...snpClaims(), tee: 'nvidia', measurement: 'x', measurements: { m1: 'aa'.repeat(48) }, reportData: Buffer.from(nonce).toString('hex'), debug: true, debugAttested: false, tcb: {}, platform: {} } as Claims;
    const ok = evaluateDevices(policy, 'snp', [{ label: 'nvidia[0]', claims: gpu, expectedReportData: nonce }]);
    expect(ok.reasons).toEqual([]);
    expect(ok.checks.map((c) => c.check)).toContain('nvidia[0].policy.expectedReportData');
    const other = evaluateDevices(policy, 'snp', [{ label: 'nvidia[0]', claims: gpu, expectedReportData: new Uint8Array(32).fill(4) }]);
    expect(other.reasons).toEqual([expect.stringMatching(/^nvidia\[0\]\.policy\.expectedReportData: /)]);
  });
});
