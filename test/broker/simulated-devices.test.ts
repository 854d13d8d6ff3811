/**
 * The simulated GPU (`simulated-nvidia`, software only) is accepted only where simulated evidence is:
 * by a broker with allowSimulated (at /attest, and again at /resource for a token that outlived a
 * broker restart) and a key policy with allowSimulated. Its wire shape round-trips and is parsed
 * strictly.
 */
import { createHash } from 'node:crypto';
import { decodeJwt, SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { verifyEvidence } from '../../src/attestation/verify.js';
import { SimulatedGpu, SIMULATED_GPU_MEASUREMENT } from '../../src/attestation/providers/simulated-gpu.js';
import { kbsDeviceNonce, kbsReportData } from '../../src/protocol/binding.js';
import { decodeAdditionalEvidence, encodeAdditionalEvidence } from '../../src/protocol/device-evidence.js';
import { verifyDevices } from '../../src/broker/devices.js';
import { EvidenceFormatError } from '../../src/errors.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { attest, auth, resource, SIM_MEASUREMENT, teeKeyPair, useFixtures } from './fixture.js';

const fixture = useFixtures();

async function simulatedGpuText(gpu: SimulatedGpu, nonce: string, jwk: object): Promise<string> {
  const devices = await gpu.getDeviceEvidence(kbsDeviceNonce(nonce, jwk));
  return encodeAdditionalEvidence(devices.map((d) => ({ tee: 'simulated-nvidia', ...d })));
}

describe('simulated-nvidia device evidence', () => {
  it('the default simulated GPU measurement is SHA-384 of its label', () => {
    expect(SIMULATED_GPU_MEASUREMENT).toBe(createHash('sha384').update('sealed-tensors simulated GPU').digest('hex'));
  });

  it('round-trips through additional_evidence; malformed entries are refused naming the member', async () => {
    const gpu = new SimulatedGpu({ count: 2 });
    const text = await simulatedGpuText(gpu, 'bm9uY2U=', { kty: 'EC' });
    const d = decodeAdditionalEvidence(text);
    expect(d.map((x) => [x.tee, x.type, x.arch, x.uuid, x.path])).toEqual([
      ['simulated-nvidia', 'simulated', 'simulated', 'SIMULATED-GPU-0', 'tee-evidence.additional_evidence.simulated-nvidia.device_evidence_list[0]'],
      ['simulated-nvidia', 'simulated', 'simulated', 'SIMULATED-GPU-1', 'tee-evidence.additional_evidence.simulated-nvidia.device_evidence_list[1]'],
    ]);
    for (const [bad, re] of [
      ['{"simulated-nvidia": {"device_evidence_list": [{"evidence": "@@"}]}}', /device_evidence_list\[0\]\.evidence must be standard base64/],
      ['{"simulated-nvidia": {"device_evidence_list": [{"evidence": "AA==", "certificate": "x"}]}}', /\[0\]\.certificate is not a member/],
      ['{"simulated-nvidia": {"device_evidence_list": []}}', /must hold 1 to 16 devices/],
    ] as const) {
      expect(() => decodeAdditionalEvidence(bad)).toThrow(EvidenceFormatError);
      expect(() => decodeAdditionalEvidence(bad)).toThrow(re);
    }
    expect(() => encodeAdditionalEvidence([{ tee: 'nvidia', evidence: new Uint8Array(4) }])).toThrow(/PEM certificate chain/);
  });

  it('a broker that does not allow simulated evidence refuses a simulated GPU by name, before verifying it', async () => {
    const gpu = new SimulatedGpu();
    const text = await simulatedGpuText(gpu, 'bm9uY2U=', { kty: 'EC' });
    const ctx = { nonce: 'bm9uY2U=', teePubkeyRaw: { kty: 'EC' }, now: new Date(), verifyOptions: {}, simulatedRoots: [gpu.rootFingerprint], certificate: () => { throw new Error('no certificates'); }, verify: verifyEvidence };
    const refused = await verifyDevices(decodeAdditionalEvidence(text), { ...ctx, allowSimulated: false });
    expect(refused.errors).toEqual(['broker.simulated-nvidia[0].simulated: simulated-nvidia[0] is SIMULATED (software only) and this broker does not allow simulated evidence']);
    expect(refused.devices).toEqual([]);
    const ok = await verifyDevices(decodeAdditionalEvidence(text), { ...ctx, allowSimulated: true });
    expect(ok.errors).toEqual([]);
    expect(ok.checks.every((c) => c.ok)).toBe(true);
    // Judged as the NVIDIA GPU it stands for, and still labelled simulated.
    expect(ok.devices[0]!.claims).toMatchObject({ tee: 'nvidia', simulated: true, measurements: { m1: SIMULATED_GPU_MEASUREMENT }, platform: { simulated: 'true', simulates: 'nvidia' } });
    expect(ok.devices[0]!.claims.reportData).toHaveLength(64);
    // Under a root the broker does not trust: a chain error, not a device.
    const untrusted = await verifyDevices(decodeAdditionalEvidence(text), { ...ctx, allowSimulated: true, simulatedRoots: [] });
    expect(untrusted.errors).toEqual([expect.stringMatching(/^ERR_EVIDENCE_CHAIN: simulated-nvidia\[0\]: simulated evidence is signed by root key/)]);
  });

  it('a token carrying a simulated GPU is refused at /resource by a broker (same key and issuer) that no longer allows simulated evidence', async () => {
    const policy = validatePolicy({ version: 1, allowSimulated: true, requireDevices: ['nvidia'], tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } }, nvidia: { measurements: { m1: [SIMULATED_GPU_MEASUREMENT] } } } });
    const f = await fixture({ issuer: 'one-broker' });
    // The same simulated root as the CPU's, which the fixture's broker trusts.
    const gpu = new SimulatedGpu({ rootKey: f.tee.rootKey, now: () => new Date(f.clock.ms) });
    f.policies.policies.set('default', policy);
    const ch = await auth(f);
    const { jwk } = await teeKeyPair();
    const additional = await simulatedGpuText(gpu, ch.nonce, jwk);
    const cpu = await f.tee.getEvidence(kbsReportData(ch.nonce, jwk, additional));
    const r = await attest(f, ch.cookie, { 'runtime-data': { nonce: ch.nonce, 'tee-pubkey': jwk }, 'tee-evidence': { primary_evidence: { evidence: Buffer.from(cpu).toString('base64') }, additional_evidence: additional } });
    expect(r.status, r.text).toBe(200);
    const token = (r.json as { token: string }).token;
    const granted = await resource(f, { token });
    expect(granted.status, granted.text).toBe(200);
    const g = await fixture({ issuer: 'one-broker', signingKey: f.signing, allowSimulated: false });
    g.policies.policies.set('default', policy);
    const denied = await resource(g, { token });
    expect(denied.status).toBe(403);
    expect((denied.json as { reasons: string[] }).reasons).toEqual(expect.arrayContaining(['broker.simulated-nvidia[0].simulated: simulated-nvidia[0] is SIMULATED and this broker does not allow simulated evidence']));
    expect(g.keystore.handedOut).toHaveLength(0);
  });
});

describe('device submods in a Bearer token', () => {
  it('a token signed by this broker whose device submods are not gpu0..gpuN-1 of device claims is 401 (shape)', async () => {
    const f = await fixture();
    f.policies.policies.set('default', validatePolicy({ version: 1, allowSimulated: true, requireDevices: ['nvidia'], tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } }, nvidia: { measurements: { m1: [SIMULATED_GPU_MEASUREMENT] } } } }));
    const gpu = new SimulatedGpu({ rootKey: f.tee.rootKey, now: () => new Date(f.clock.ms) });
    const ch = await auth(f);
    const { jwk } = await teeKeyPair();
    const additional = await simulatedGpuText(gpu, ch.nonce, jwk);
    const cpu = await f.tee.getEvidence(kbsReportData(ch.nonce, jwk, additional));
    const r = await attest(f, ch.cookie, { 'runtime-data': { nonce: ch.nonce, 'tee-pubkey': jwk }, 'tee-evidence': { primary_evidence: { evidence: Buffer.from(cpu).toString('base64') }, additional_evidence: additional } });
    expect(r.status, r.text).toBe(200);
    const payload = decodeJwt((r.json as { token: string }).token) as JWTPayload & { submods: Record<string, { 'ear.veraison.annotated-evidence': { claims: Record<string, unknown> } }> };
    const { cpu0, gpu0 } = payload.submods;
    const sign = (submods: object) => new SignJWT({ ...payload, submods }).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: f.signing.kid }).sign(f.signing.privateKey);
    // As issued, re-signed: accepted.
    const ok = await resource(f, { token: await sign({ cpu0, gpu0 }) });
    expect(ok.status, ok.text).toBe(200);
    const claims = gpu0!['ear.veraison.annotated-evidence'].claims;
    const withClaims = (c: Record<string, unknown>) => ({ ...gpu0, 'ear.veraison.annotated-evidence': { ...gpu0!['ear.veraison.annotated-evidence'], claims: c } });
    for (const submods of [
      { cpu0, gpu1: gpu0 },
      { cpu0, device: gpu0 },
      { cpu0, gpu0: { ...gpu0, 'ear.status': 'contraindicated' } },
      { cpu0, gpu0: withClaims({ ...claims, tee: 'snp' }) },
      { cpu0, gpu0: withClaims({ ...claims, reportData: `${String(claims.reportData)}00` }) },
      { cpu0, gpu0: { ...gpu0, 'ear.veraison.annotated-evidence': { ...gpu0!['ear.veraison.annotated-evidence'], device: undefined } } },
    ]) {
      const denied = await resource(f, { token: await sign(submods) });
      expect(denied.status, JSON.stringify(Object.keys(submods))).toBe(401);
      expect((denied.json as { reasons: string[] }).reasons).toEqual(['token: not a token this broker issues (shape)']);
    }
  });
});
