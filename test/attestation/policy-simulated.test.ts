import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { parseSimulatedEvidence, verifySimulatedEvidence } from '../../src/attestation/verifiers/simulated.js';
import { parsePolicy, validatePolicy } from '../../src/attestation/policy/policy.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import type { Claims } from '../../src/attestation/types.js';
import { flip, outcome, typedError } from './helpers.js';
import { snpClaims } from './helpers.js';

const rd = (b: number) => new Uint8Array(64).fill(b);

describe('simulated TEE', () => {
  it('round-trips: evidence verifies only with its root pinned, and says simulated everywhere', async () => {
    const tee = new SimulatedTee({ now: () => new Date('2026-01-02T03:04:05Z') });
    const ev = await tee.getEvidence(rd(9));
    expect(Buffer.from(ev.subarray(0, 8)).toString()).toBe('STSIMEV1');
    const e = await typedError(() => verifySimulatedEvidence(ev), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toContain(tee.rootFingerprint);
    const r = verifySimulatedEvidence(ev, { trustedRoots: [tee.rootFingerprint] });
    expect(r.tee).toBe('simulated');
    expect(r.claims).toMatchObject({ tee: 'simulated', simulated: true, reportData: '09'.repeat(64), debug: false, issuedAt: '2026-01-02T03:04:05.000Z' });
    expect(r.claims.platform.simulated).toBe('true');
    expect(r.checks[0]!.detail).toMatch(/SIMULATED/);
  });

  it('a different root key, even with the same layout, is not trusted', async () => {
    const a = new SimulatedTee();
    const b = new SimulatedTee();
    await typedError(async () => verifySimulatedEvidence(await b.getEvidence(rd(1)), { trustedRoots: [a.rootFingerprint] }), ['ERR_EVIDENCE_CHAIN']);
  });

  it('every bit of the evidence is covered by the signature or fails parsing', async () => {
    const tee = new SimulatedTee({ rootKey: generateKeyPairSync('ed25519').privateKey });
    const ev = await tee.getEvidence(rd(2));
    let cases = 0;
    for (let i = 0; i < ev.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const o = outcome(() => verifySimulatedEvidence(flip(ev, i, bit), { trustedRoots: [tee.rootFingerprint] }));
        if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_CHAIN'].includes(o)) throw new Error(`byte ${i} bit ${bit}: ${o}`);
        cases++;
      }
    }
    expect(cases).toBe(ev.length * 8);
  });

  it('is refused by any policy without allowSimulated; debug is refused too', async () => {
    const tee = new SimulatedTee({ debug: true });
    const c = verifySimulatedEvidence(await tee.getEvidence(rd(3)), { trustedRoots: [tee.rootFingerprint] }).claims;
    const opts = { expectedReportData: rd(3), now: new Date(c.issuedAt!) };
    const measurements = { measurement: [c.measurement] };
    const v = evaluatePolicy(validatePolicy({ version: 1, tees: { snp: { measurements } } }), c, opts);
    expect(v.allowed).toBe(false);
    expect(v.reasons).toEqual([
      'policy.simulated: evidence is SIMULATED (software only) and the policy does not set allowSimulated',
      'policy.tee: policy has no section for "simulated" evidence; TEEs not listed are refused',
    ]);
    expect(() => validatePolicy({ version: 1, tees: { simulated: {} } })).toThrow(/allowSimulated.*so many words/);
    const allow = validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements } } });
    expect(evaluatePolicy(allow, c, opts).reasons).toEqual([expect.stringMatching(/^policy\.debug/)]);
    const allowDebug = validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements, allowDebug: true } } });
    expect(evaluatePolicy(allowDebug, c, opts).allowed).toBe(true);
  });

  it('checks its arguments', async () => {
    const tee = new SimulatedTee();
    await typedError(() => tee.getEvidence(new Uint8Array(63)), ['ERR_INVALID_ARGUMENT']);
    await typedError(() => new SimulatedTee({ measurement: new Uint8Array(47) }), ['ERR_INVALID_ARGUMENT']);
    await typedError(() => new SimulatedTee({ rootKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey }), ['ERR_INVALID_ARGUMENT']);
    await typedError(() => parseSimulatedEvidence(new Uint8Array(10)), ['ERR_EVIDENCE_FORMAT']);
  });
});

const claims = snpClaims;

describe('policy', () => {
  it('validates with every problem listed at once, each with its path', () => {
    let err: unknown;
    try {
      validatePolicy({
        version: 2,
        extra: 1,
        tees: {
          snp: { measurements: { measurement: ['zz'] }, minTcb: { snp: -1 }, allowDebug: 'no', reportData: 'abc', maxAgeSeconds: 0, bogus: true, tcbStatus: ['Fine'], requireReportData: false },
          sgx: {},
        },
      });
    } catch (e) {
      err = e;
    }
    expect((err as { code: string }).code).toBe('ERR_POLICY');
    const m = (err as Error).message;
    for (const part of [
      'extra: unknown key',
      'version: must be 1',
      'tees.snp.bogus: unknown key',
      'tees.snp.measurements.measurement: must be a non-empty list of hex strings',
      'tees.snp.minTcb.snp: must be a non-negative integer',
      'tees.snp.tcbStatus: must be a non-empty list',
      'tees.snp.allowDebug: must be true or false',
      'tees.snp.reportData: a fixed report-data value is not freshness',
      'tees.snp.requireReportData: report data is always required',
      'tees.snp.maxAgeSeconds: must be an integer from 1 to 86400',
      'tees.sgx: unknown TEE type',
      'docs/ATTESTATION.md',
    ]) {
      expect(m).toContain(part);
    }
    expect(() => parsePolicy('{ not json', 'p.json')).toThrow(/p\.json is not valid JSON/);
    expect(() => validatePolicy([])).toThrow(/must be a JSON object/);
  });

  it('lists every check, passing and failing, and every failure with its reason', () => {
    const p = validatePolicy({
      version: 1,
      tees: {
        snp: {
          measurements: { measurement: ['AA'.repeat(48)], hostData: ['11'.repeat(32)] },
          minTcb: { snp: 24, microcode: 84, fmc: 1 },
          platform: { product: ['Genoa', 'Milan'] },
          requireReportData: true,
        },
      },
    });
    const v = evaluatePolicy(p, claims(), { expectedReportData: new Uint8Array(32).fill(0xab) });
    expect(v.allowed).toBe(false);
    expect(v.checks.map((c) => [c.check, c.ok])).toEqual([
      ['policy.tee', true],
      ['policy.debug', true],
      ['policy.measurements.measurement', true],
      ['policy.measurements.hostData', false],
      ['policy.minTcb.snp', false],
      ['policy.minTcb.microcode', true],
      ['policy.minTcb.fmc', false],
      ['policy.platform.vmpl', true],
      ['policy.platform.product', true],
      ['policy.expectedReportData', true],
    ]);
    expect(v.reasons).toEqual([
      `policy.measurements.hostData: hostData ${'00'.repeat(32)} is not among the 1 allowed value(s)`,
      'policy.minTcb.snp: snp 23 is below the minimum 24; the platform needs a firmware update',
      'policy.minTcb.fmc: evidence has no numeric TCB component "fmc"',
    ]);
  });

  it('report data: the caller\'s value, prefix then zeros, always required', () => {
    const p = validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: ['aa'.repeat(48)] } } } });
    expect(evaluatePolicy(p, claims()).reasons).toEqual([expect.stringMatching(/^policy\.expectedReportData: no expected report data/)]);
    const good = new Uint8Array(32).fill(0xab);
    expect(evaluatePolicy(p, claims(), { expectedReportData: good }).allowed).toBe(true);
    const bad = good.slice();
    bad[31] = 0xac;
    expect(evaluatePolicy(p, claims(), { expectedReportData: bad }).reasons.join()).toMatch(/stale or replayed/);
    // Extra non-zero bytes after the expected prefix are a mismatch, not a match.
    expect(evaluatePolicy(p, claims({ reportData: `${'ab'.repeat(32)}01${'00'.repeat(31)}` }), { expectedReportData: good }).allowed).toBe(false);
    expect(evaluatePolicy(p, claims(), { expectedReportData: new Uint8Array(65) }).allowed).toBe(false);
  });

  it('denies TEEs without a section, and maxAge without a timestamp', () => {
    const p = validatePolicy({ version: 1, tees: { tdx: {}, snp: { maxAgeSeconds: 60 } } });
    expect(evaluatePolicy(p, claims({ tee: 'nitro' }), { expectedReportData: new Uint8Array(32).fill(0xab) }).reasons).toEqual(['policy.tee: policy has no section for "nitro" evidence; TEEs not listed are refused']);
    expect(evaluatePolicy(p, claims()).reasons.join()).toMatch(/carries no timestamp/);
    const future = evaluatePolicy(p, claims({ issuedAt: '2030-01-01T00:00:00Z' }), { now: new Date('2029-01-01T00:00:00Z') });
    expect(future.reasons.join()).toMatch(/in the future/);
  });
});

describe('a timestamp a Date cannot hold is a format error in the parser', () => {
  it('simulated evidence: above 8.64e15 ms is refused, the last representable instant parses', async () => {
    const ev = await new SimulatedTee().getEvidence(rd(3));
    const at = (ms: bigint) => {
      const b = ev.slice();
      new DataView(b.buffer).setBigUint64(16, ms, true); // after magic, version, flags, reserved
      return b;
    };
    expect(parseSimulatedEvidence(at(8_640_000_000_000_000n)).timestamp).toBe(8.64e15);
    for (const ms of [8_640_000_000_000_001n, BigInt(Number.MAX_SAFE_INTEGER)]) {
      const e = await typedError(() => parseSimulatedEvidence(at(ms)), ['ERR_EVIDENCE_FORMAT']);
      expect(e.message).toMatch(/timestamp is out of range/);
    }
  });
});
