/**
 * Composite evidence: a key whose policy requires an NVIDIA GPU goes only to a session that presented
 * CPU evidence plus GPU evidence bound to the same nonce and accepted by the policy's nvidia section.
 * The GPU is the real Hopper report re-signed under a test root (forged-gpu.ts) so that it can carry a
 * fresh nonce; everything else (decoding Trustee's shape, the verifier, the binding, the policy) is
 * the product's.
 */
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { decodeJwt, flattenedDecrypt } from 'jose';
import { validatePolicy, type Policy } from '../../src/attestation/policy/policy.js';
import { verifyNvidiaReport } from '../../src/attestation/verifiers/nvidia.js';
import { parseCertificates } from '../../src/attestation/certs.js';
import { kbsDeviceNonce, kbsReportData } from '../../src/protocol/binding.js';
import { DEVICE_LIMITS, encodeNvidiaAdditionalEvidence } from '../../src/protocol/device-evidence.js';
import { MAX_TOKEN_CHARS, parseFlattenedJwe } from '../../src/protocol/messages.js';
import type { Reply } from './client.js';
import { attest, auth, DATA_KEY, type Fixture, resource, SIM_MEASUREMENT, startFixture, teeKeyPair } from './fixture.js';
import { testGpu, type TestGpu } from './forged-gpu.js';

vi.setConfig({ testTimeout: 60_000 });

let gpu: TestGpu;
let gpuMeasurements: Record<string, string[]>;
beforeAll(async () => {
  gpu = await testGpu();
  const c = verifyNvidiaReport(gpu.report(new Uint8Array(32).fill(1)), { certificates: parseCertificates(gpu.chainPem, 'test gpu'), trustedRoots: [gpu.rootFingerprint] }).claims;
  // Every block pinned: NVIDIA reports do not attest CC vs DevTools mode, so only full pinning allows them.
  gpuMeasurements = Object.fromEntries(Object.entries(c.measurements).map(([k, v]) => [k, [v]]));
});

let fixtures: Fixture[] = [];
afterEach(async () => {
  await Promise.all(fixtures.map((f) => f.broker.close()));
  fixtures = [];
});

function gpuPolicy(over: Record<string, unknown> = {}, nvidia: Record<string, unknown> = {}): Policy {
  return validatePolicy({
    version: 1,
    allowSimulated: true,
    requireDevices: ['nvidia'],
    tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } }, nvidia: { measurements: gpuMeasurements, ...nvidia } },
    ...over,
  });
}

async function fixture(policy: Policy): Promise<Fixture> {
  const f = await startFixture({ verifyOptions: { trustedRoots: { nvidia: [gpu.rootFingerprint] } } });
  fixtures.push(f);
  f.policies.policies.set('default', policy);
  return f;
}

/** /auth then /attest with simulated CPU evidence and, unless `gpus` is 0, test GPUs bound as asked. */
async function session(f: Fixture, o: { gpus?: number; bindNonce?: (nonce: string, jwk: object) => Uint8Array } = {}) {
  const a = await auth(f);
  const { jwk, privateKey } = await teeKeyPair();
  const n = o.gpus ?? 1;
  const deviceNonce = (o.bindNonce ?? ((nonce, k) => kbsDeviceNonce(nonce, k)))(a.nonce, jwk);
  const additional = n === 0 ? '' : encodeNvidiaAdditionalEvidence(Array.from({ length: n }, (_, i) => ({ evidence: gpu.report(deviceNonce), certificatesPem: gpu.chainPem, uuid: `GPU-${i}` })));
  const cpu = await f.tee.getEvidence(kbsReportData(a.nonce, jwk, additional));
  const r = await attest(f, a.cookie, {
    'runtime-data': { nonce: a.nonce, 'tee-pubkey': jwk },
    'tee-evidence': { primary_evidence: { evidence: Buffer.from(cpu).toString('base64') }, additional_evidence: additional },
  });
  return { cookie: a.cookie, privateKey, reply: r, token: (r.json as { token?: string }).token };
}

function expectReleaseDenied(f: Fixture, r: Reply, reason: RegExp): void {
  expect(r.status, r.text).toBe(403);
  expect((r.json as { reasons: string[] }).reasons).toEqual(expect.arrayContaining([expect.stringMatching(reason)]));
  expect(r.headers['sealed-tensors-receipt']).toBeUndefined();
  expect(f.keystore.handedOut).toHaveLength(0);
  const last = f.audit.entries.at(-1)!;
  expect(last.verdict).toBe('deny');
  expect(last.reasons).toEqual(expect.arrayContaining([expect.stringMatching(reason)]));
  expect(f.audit.entries.some((e) => e.event === 'release')).toBe(false);
}

describe('broker: a key whose policy requires an NVIDIA GPU', () => {
  it('is denied to a session with CPU evidence only: the reason says the GPU evidence is missing', async () => {
    const f = await fixture(gpuPolicy());
    const s = await session(f, { gpus: 0 });
    expect(s.reply.status, s.reply.text).toBe(200);
    const r = await resource(f, { cookie: s.cookie });
    expectReleaseDenied(f, r, /^policy\.requireDevices\.nvidia: the policy requires NVIDIA GPU evidence \(additional evidence bound to the same nonce\) and the session presented none/);
    expect((r.json as { reasons: string[] }).reasons).toHaveLength(1);
  });

  it('is granted to CPU + GPU evidence that verifies, binds the same nonce and tee-pubkey, and meets the nvidia section; the audit names the GPU', async () => {
    const f = await fixture(gpuPolicy());
    const s = await session(f, { gpus: 2 });
    expect(s.reply.status, s.reply.text).toBe(200);
    const attestEntry = f.audit.entries.at(-1)!;
    expect(attestEntry).toMatchObject({ event: 'attest', verdict: 'allow' });
    const r = await resource(f, { cookie: s.cookie });
    expect(r.status, r.text).toBe(200);
    const { plaintext } = await flattenedDecrypt(parseFlattenedJwe(r.json), s.privateKey);
    expect(Buffer.from(plaintext.subarray(4, 36))).toEqual(Buffer.from(DATA_KEY));
    const release = f.audit.entries.at(-1)!;
    expect(release.verdict).toBe('allow');
    const detail = release.detail as { devices: { device: string; uuid: string }[]; checks: { check: string; ok: boolean }[] };
    expect(detail.devices.map((d) => [d.device, d.uuid])).toEqual([['nvidia[0]', 'GPU-0'], ['nvidia[1]', 'GPU-1']]);
    const names = detail.checks.map((c) => c.check);
    expect(names).toContain('policy.requireDevices.nvidia');
    for (const i of [0, 1]) expect(names).toEqual(expect.arrayContaining([`nvidia[${i}].policy.tee`, `nvidia[${i}].policy.debug`, `nvidia[${i}].policy.expectedReportData`, `nvidia[${i}].policy.measurements.m1`]));
    expect(detail.checks.every((c) => c.ok)).toBe(true);
  });

  it('by bearer token it is granted too: the token carries each device as a gpu<i> submod, judged like the cookie session', async () => {
    const f = await fixture(gpuPolicy());
    const s = await session(f, { gpus: 2 });
    expect(s.reply.status).toBe(200);
    const submods = (decodeJwt(s.token!) as unknown as { submods: Record<string, { 'ear.status': string; 'ear.veraison.annotated-evidence': { tee: string; device: { label: string; uuid: string }; claims: { reportData: string } } }> }).submods;
    expect(Object.keys(submods)).toEqual(['cpu0', 'gpu0', 'gpu1']);
    expect(submods.gpu1!['ear.veraison.annotated-evidence']).toMatchObject({ tee: 'nvidia', device: { label: 'nvidia[1]', uuid: 'GPU-1' } });
    // NVIDIA reports do not attest their debug state: verified, but only a warning.
    expect(submods.gpu0!['ear.status']).toBe('warning');
    const r = await resource(f, { token: s.token! });
    expect(r.status, r.text).toBe(200);
    const { plaintext } = await flattenedDecrypt(parseFlattenedJwe(r.json), s.privateKey);
    expect(Buffer.from(plaintext.subarray(4, 36))).toEqual(Buffer.from(DATA_KEY));
    const detail = f.audit.entries.at(-1)!.detail as { devices: { device: string }[] };
    expect(detail.devices.map((d) => d.device)).toEqual(['nvidia[0]', 'nvidia[1]']);
  });

  it('the largest session (16 GPUs, the device limit) gets a token within MAX_TOKEN_CHARS that works as a Bearer', async () => {
    const f = await fixture(gpuPolicy());
    const s = await session(f, { gpus: DEVICE_LIMITS.devices });
    expect(s.reply.status, s.reply.text).toBe(200);
    expect(s.token!.length).toBeLessThanOrEqual(MAX_TOKEN_CHARS);
    const r = await resource(f, { token: s.token! });
    expect(r.status, r.text).toBe(200);
  });

  it('by bearer token of a session without GPU evidence it is denied, naming the missing GPU', async () => {
    const f = await fixture(gpuPolicy());
    const s = await session(f, { gpus: 0 });
    expect(s.reply.status).toBe(200);
    expect(Object.keys((decodeJwt(s.token!) as unknown as { submods: object }).submods)).toEqual(['cpu0']);
    expectReleaseDenied(f, await resource(f, { token: s.token! }), /^policy\.requireDevices\.nvidia: the policy requires NVIDIA GPU evidence/);
  });

  it('by bearer token, a GPU the nvidia section does not accept is denied as with the cookie', async () => {
    const other = { ...gpuMeasurements, m1: ['00'.repeat(48).replace(/^00/, '11')] };
    const f = await fixture(gpuPolicy({}, { measurements: other }));
    const s = await session(f);
    expectReleaseDenied(f, await resource(f, { token: s.token! }), /^nvidia\[0\]\.policy\.measurements\.m1: /);
  });

  it('the requirement may sit in the CPU section instead: same refusal without a GPU', async () => {
    const policy = validatePolicy({
      version: 1,
      allowSimulated: true,
      tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] }, requireDevices: ['nvidia'] }, nvidia: { measurements: gpuMeasurements } },
    });
    const f = await fixture(policy);
    const s = await session(f, { gpus: 0 });
    expectReleaseDenied(f, await resource(f, { cookie: s.cookie }), /^policy\.requireDevices\.nvidia: /);
  });

  it('a GPU the nvidia section does not accept (another measurement) is denied, naming the device and the check', async () => {
    const other = { ...gpuMeasurements, m1: ['00'.repeat(48).replace(/^00/, '11')] };
    const f = await fixture(gpuPolicy({}, { measurements: other }));
    const s = await session(f);
    expect(s.reply.status).toBe(200);
    expectReleaseDenied(f, await resource(f, { cookie: s.cookie }), /^nvidia\[0\]\.policy\.measurements\.m1: m1 [0-9a-f]+ is not among the 1 allowed value/);
  });

  it('a GPU bound to another nonce or another key is refused at /attest for its binding alone', async () => {
    const f = await fixture(gpuPolicy());
    const { jwk: otherKey } = await teeKeyPair();
    for (const bindNonce of [(_n: string, k: object) => kbsDeviceNonce(Buffer.alloc(32, 7).toString('base64'), k), (n: string) => kbsDeviceNonce(n, otherKey)]) {
      const s = await session(f, { bindNonce });
      expect(s.reply.status).toBe(403);
      expect((s.reply.json as { reasons: string[] }).reasons).toEqual([expect.stringMatching(/^broker\.nvidia\[0\]\.nonce: nvidia\[0\] SPDM requester nonce is not /)]);
    }
    expect(f.keystore.handedOut).toHaveLength(0);
  });

  it('a GPU under a root the broker does not trust is refused at /attest with the chain error', async () => {
    const f = await startFixture();
    fixtures.push(f);
    const s = await session(f);
    expect(s.reply.status).toBe(403);
    expect((s.reply.json as { reasons: string[] }).reasons).toEqual([expect.stringMatching(/^ERR_EVIDENCE_CHAIN: nvidia\[0\]: /)]);
  });

  it('a GPU presented to a key whose policy has no nvidia section is judged too: refused, as any TEE the policy does not list', async () => {
    const f = await fixture(validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } } } }));
    const s = await session(f);
    expectReleaseDenied(f, await resource(f, { cookie: s.cookie }), /^nvidia\[0\]\.policy\.tee: policy has no section for "nvidia" evidence/);
  });
});
