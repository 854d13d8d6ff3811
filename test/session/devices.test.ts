// Composite evidence from the session's side, against the project's own broker on loopback: a key
// whose policy requires an NVIDIA GPU is released to a session that sends (simulated) GPU evidence
// bound to the same nonce and key, and refused, with the broker's reasons, without it or with
// device evidence bound to another nonce or another tee-pubkey.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { existsSync } from 'node:fs';
import { DeniedError, InvalidArgumentError, NoTeeError, SealedTensorsError } from '../../src/errors.js';
import { NvidiaGpus } from '../../src/attestation/providers/nvidia-gpus.js';
import { testGpu } from '../broker/forged-gpu.js';
import { verifyNvidiaReport } from '../../src/attestation/verifiers/nvidia.js';
import { parseCertificates } from '../../src/attestation/certs.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { SIMULATED_GPU_MEASUREMENT, SimulatedGpu } from '../../src/attestation/providers/simulated-gpu.js';
import type { DeviceEvidenceProvider } from '../../src/attestation/providers/types.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { kbsDeviceNonce } from '../../src/protocol/binding.js';
import { startBroker, type RunningBroker } from '../../src/broker/server.js';
import { EnclaveSession } from '../../src/session/enclave-session.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from '../broker/memory.js';
import { signingKey, SIM_MEASUREMENT, teeKeyPair } from '../broker/fixture.js';
import { handles, made } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { TEST_KEY } from '../helpers/tmp.js';

const MODEL = { bundleId: 'ab'.repeat(16), headerDigest: 'cd'.repeat(32) };
const running: RunningBroker[] = [];
afterEach(async () => {
  for (const b of running.splice(0)) await b.close();
});

const gpuPolicy = (over: Record<string, unknown> = {}) =>
  validatePolicy({
    version: 1,
    allowSimulated: true,
    requireDevices: ['nvidia'],
    tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } }, nvidia: { measurements: { m1: [SIMULATED_GPU_MEASUREMENT] } } },
    ...over,
  });

async function setup(o: { policy?: ReturnType<typeof gpuPolicy>; allowSimulated?: boolean; nvidiaRoots?: string[] } = {}) {
  const tee = new SimulatedTee();
  const gpu = new SimulatedGpu({ count: 2 });
  const keystore = new MemoryKeystore();
  const policies = new MemoryPolicies();
  const audit = new MemoryAudit();
  policies.policies.set('default', o.policy ?? gpuPolicy());
  await keystore.add(TEST_KEY, { keyId: 'gpu-key', models: [MODEL], policy: 'default' });
  const broker = await startBroker({
    keystore,
    policies,
    audit,
    signingKey: await signingKey(),
    receiptKey: await signingKey('receipt'),
    host: '127.0.0.1',
    port: 0,
    allowPlainHttpOnLoopback: true,
    allowSimulated: o.allowSimulated ?? true,
    simulatedRoots: [tee.rootFingerprint, gpu.rootFingerprint],
    ...(o.nvidiaRoots ? { verifyOptions: { trustedRoots: { nvidia: o.nvidiaRoots } } } : {}),
  });
  running.push(broker);
  const establish = (devices?: readonly DeviceEvidenceProvider[]) =>
    EnclaveSession.establish({ broker: broker.url, allowPlainHttpOnLoopback: true, provider: tee, keys: ['gpu-key'], ...(devices ? { devices } : {}) });
  return { tee, gpu, keystore, audit, broker, establish };
}

async function denied(p: Promise<unknown>): Promise<DeniedError> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(DeniedError);
  return err as DeniedError;
}

/** The simulated GPUs, bound as `bind` says instead of to the session's own binding. */
function misbound(gpu: SimulatedGpu, bind: (ctx: { nonce: string; teePubkey: object }) => Uint8Array): DeviceEvidenceProvider {
  return { kind: gpu.kind, getDeviceEvidence: (_n, ctx) => gpu.getDeviceEvidence(bind(ctx)) };
}

describe('EnclaveSession with device evidence (composite), against the real broker', () => {
  it('a key requiring nvidia is released to a session that sends simulated GPU evidence bound to its nonce and key', async () => {
    const s = await setup();
    const session = await s.establish([s.gpu]);
    try {
      expect(session.info.keys.map((k) => k.keyId)).toEqual(['gpu-key']);
      expect(session.info.devices).toEqual([
        { label: 'simulated-nvidia[0]', kind: 'simulated-nvidia', uuid: 'SIMULATED-GPU-0', simulated: true },
        { label: 'simulated-nvidia[1]', kind: 'simulated-nvidia', uuid: 'SIMULATED-GPU-1', simulated: true },
      ]);
      expect(session.info.verdict.devices).toEqual([
        { submod: 'gpu0', status: 'warning', label: 'simulated-nvidia[0]', tee: 'nvidia' },
        { submod: 'gpu1', status: 'warning', label: 'simulated-nvidia[1]', tee: 'nvidia' },
      ]);
    } finally {
      session.close();
    }
    const attest = s.audit.entries.find((e) => e.event === 'attest')!;
    expect(attest.verdict).toBe('allow');
    // The session sends its Bearer token with the cookie, and a broker judges only the token when one
    // is sent: the GPUs were judged from the token's gpu<i> submods.
    const release = s.audit.entries.at(-1)!;
    expect(release).toMatchObject({ event: 'release', verdict: 'allow' });
    const detail = release.detail as { devices: { device: string; uuid: string }[]; checks: { check: string; ok: boolean }[] };
    expect(detail.devices.map((d) => [d.device, d.uuid])).toEqual([['simulated-nvidia[0]', 'SIMULATED-GPU-0'], ['simulated-nvidia[1]', 'SIMULATED-GPU-1']]);
    // Judged as NVIDIA GPUs, and labelled simulated: only allowSimulated lets them through.
    expect(detail.checks.filter((c) => /^simulated-nvidia\[0\]\.policy\.(simulated|tee|measurements\.m1|expectedReportData)$/.test(c.check)).map((c) => [c.check, c.ok])).toEqual([
      ['simulated-nvidia[0].policy.simulated', true],
      ['simulated-nvidia[0].policy.tee', true],
      ['simulated-nvidia[0].policy.measurements.m1', true],
      ['simulated-nvidia[0].policy.expectedReportData', true],
    ]);
    expect(made.every((e) => e.released) && handles.every((h) => h.released)).toBe(true);
  });

  it('without device evidence it is refused with the broker\'s reason', async () => {
    const s = await setup();
    const err = await denied(s.establish());
    expect(err.status).toBe(403);
    expect(err.reasons).toEqual([expect.stringMatching(/^policy\.requireDevices\.nvidia: the policy requires NVIDIA GPU evidence/)]);
    expect(s.keystore.handedOut).toHaveLength(0);
  });

  it('device evidence bound to another nonce, or to another tee-pubkey, is refused at /attest naming the device', async () => {
    const s = await setup();
    const { jwk: otherKey } = await teeKeyPair();
    const otherNonce = Buffer.alloc(32, 7).toString('base64');
    for (const bind of [(c: { teePubkey: object }) => kbsDeviceNonce(otherNonce, c.teePubkey), (c: { nonce: string }) => kbsDeviceNonce(c.nonce, otherKey)]) {
      const err = await denied(s.establish([misbound(s.gpu, bind as (c: { nonce: string; teePubkey: object }) => Uint8Array)]));
      expect(err.status).toBe(403);
      expect(err.reasons).toEqual([
        expect.stringMatching(/^broker\.simulated-nvidia\[0\]\.nonce: simulated-nvidia\[0\] SPDM requester nonce is not SHA-384\(JCS\(\{nonce, tee-pubkey\}\)\)/),
        expect.stringMatching(/^broker\.simulated-nvidia\[1\]\.nonce: /),
      ]);
    }
    expect(s.keystore.handedOut).toHaveLength(0);
    expect(s.audit.entries.filter((e) => e.event === 'attest').map((e) => e.verdict)).toEqual(['deny', 'deny']);
  });

  it('devices must be providers of known kinds, one per kind', async () => {
    const s = await setup();
    for (const devices of [[{ kind: 'amd', getDeviceEvidence: async () => [] }], [s.gpu, s.gpu], 'gpu']) {
      await expect(s.establish(devices as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    const empty: DeviceEvidenceProvider = { kind: 'simulated-nvidia', getDeviceEvidence: async () => [] };
    await expect(s.establish([empty])).rejects.toThrow(/returned no device evidence/);
  });
});

describe('NvidiaGpus: the real GPU provider', () => {
  it('sends what NVML returns in Trustee\'s nvidia shape, bound to the session: a Hopper report (re-signed under a test root) is released to', async () => {
    const forged = await testGpu();
    const c = verifyNvidiaReport(forged.report(new Uint8Array(32).fill(1)), { certificates: parseCertificates(forged.chainPem, 'test gpu'), trustedRoots: [forged.rootFingerprint] }).claims;
    const measurements = Object.fromEntries(Object.entries(c.measurements).map(([k, v]) => [k, [v]]));
    const s = await setup({ policy: gpuPolicy({ tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } }, nvidia: { measurements } } }), nvidiaRoots: [forged.rootFingerprint] });
    const nonces: Uint8Array[] = [];
    // NVML's part (the driver's report for the requester nonce) is the double; the rest is the product's.
    const gpus = new NvidiaGpus({ nvml: async (nonce) => (nonces.push(nonce), [{ uuid: 'GPU-test-0', architecture: 9, evidence: forged.report(nonce), certificatesPem: forged.chainPem }]) });
    const session = await s.establish([gpus]);
    session.close();
    expect(nonces).toHaveLength(1);
    expect(session.info.devices).toEqual([{ label: 'nvidia[0]', kind: 'nvidia', uuid: 'GPU-test-0', simulated: false }]);
    const release = s.audit.entries.at(-1)!;
    expect(release).toMatchObject({ event: 'release', verdict: 'allow' });
    expect((release.detail as { devices: { device: string }[] }).devices.map((d) => d.device)).toEqual(['nvidia[0]']);
  });

  it('NVML failures are typed errors, and the session sends nothing', async () => {
    const s = await setup();
    const failing = new NvidiaGpus({ nvml: async () => { throw Object.assign(new Error('nvmlDeviceGetConfComputeGpuAttestationReport failed: Not Supported (3)'), { code: 'ERR_NO_TEE' }); } });
    await expect(s.establish([failing])).rejects.toBeInstanceOf(NoTeeError);
    await expect(s.establish([new NvidiaGpus({ nvml: async () => [] })])).rejects.toThrow(/NVML found no NVIDIA GPU/);
    expect(s.audit.entries.filter((e) => e.event === 'attest')).toHaveLength(0);
  });

  it('on this machine: NVML\'s answer, or a NoTeeError saying why there is none (never a fake)', async () => {
    const err = await new NvidiaGpus().getDeviceEvidence(new Uint8Array(32).fill(3)).then((ev) => ev, (e: unknown) => e);
    if (Array.isArray(err)) {
      // A confidential VM with Hopper GPUs in CC mode: real reports, each with a PEM chain.
      for (const d of err) expect(d.certificatesPem).toMatch(/-----BEGIN CERTIFICATE-----/);
      return;
    }
    expect(err).toBeInstanceOf(SealedTensorsError);
    const hasNvml = ['/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1', '/usr/lib64/libnvidia-ml.so.1', '/usr/lib/libnvidia-ml.so.1'].some((p) => existsSync(p));
    if (!hasNvml) {
      expect(err).toBeInstanceOf(NoTeeError);
      expect((err as Error).message).toMatch(/libnvidia-ml\.so\.1.*NVIDIA's driver/);
    }
  });
});
