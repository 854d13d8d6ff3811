/**
 * Additional (device) evidence at /attest: each device verified by our verifier (signature, chain to
 * the pinned root, FWID) and bound to this run by its SPDM requester nonce, as Trustee binds it.
 * What passes is kept with the session; each key's policy judges it at /resource.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import { SealedTensorsError, type ErrorCode } from '../errors.js';
import type { Check, Claims, TeeType } from '../attestation/types.js';
import type { VerifyEvidenceOptions } from '../attestation/verify.js';
import { kbsDeviceNonce } from '../protocol/binding.js';
import type { DecodedDeviceEvidence } from '../protocol/device-evidence.js';
import type { BrokerVerifyOptions } from './options.js';
import { checkDeviceBinding } from './evidence-binding.js';

/** The device a simulated kind stands for. */
const SIMULATES: Readonly<Partial<Record<DecodedDeviceEvidence['tee'], TeeType>>> = { 'simulated-nvidia': 'nvidia' };

/** Errors that mean the evidence is bad (a denial), not that the broker failed; attest.ts uses them too. */
export const EVIDENCE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_CHAIN']);

/** A device the session attested with: verified, bound, its claims for the key policies. */
export interface AttestedDevice {
  /** `nvidia[0]`: the kbs-types name and the position in its list. */
  label: string;
  tee: TeeType;
  uuid: string;
  claims: Claims;
  /** The 32 bytes its requester nonce holds (kbsDeviceNonce): what a policy checks report data against. */
  binding: Uint8Array;
  evidenceDigest: string;
}

export interface DeviceVerification {
  devices: AttestedDevice[];
  checks: Check[];
  /** Evidence errors (a device that did not verify), one reason each. */
  errors: string[];
}

export interface DeviceVerifyContext {
  /** Simulated devices (`simulated-nvidia`) are refused unless this is true. */
  allowSimulated: boolean;
  /** Roots trusted for simulated evidence (the broker's simulatedRoots). */
  simulatedRoots: readonly string[];
  nonce: string;
  teePubkeyRaw: object;
  now: Date;
  verifyOptions: BrokerVerifyOptions;
  /** DER -> X509Certificate (the broker's cache); throws on what is not a certificate. */
  certificate: (der: Uint8Array) => X509Certificate;
  verify: (type: TeeType, evidence: Uint8Array, opts: VerifyEvidenceOptions) => Promise<{ claims: Claims; checks: Check[] }>;
}

/**
 * A simulated device's claims as the device it stands for: `tee` is that device's (so a policy's
 * requireDevices and its section judge it), `simulated` stays true (so only allowSimulated passes
 * it), its one measurement is block `m1`, and its report data is the 32-byte binding when the
 * rest of its 64 bytes is zero (otherwise kept whole, and the binding check fails).
 */
function asSimulatedDevice(c: Claims, device: TeeType): Claims {
  const rd = c.reportData;
  const tail = rd.slice(64);
  return {
    ...c,
    tee: device,
    simulated: true,
    measurements: { m1: c.measurement },
    reportData: rd.length === 128 && /^0+$/.test(tail) ? rd.slice(0, 64) : rd,
    platform: { ...c.platform, simulated: 'true', simulates: device },
  };
}

/** Verifies every device; a device that fails verification is an error, an unbound one a failed check. */
export async function verifyDevices(decoded: readonly DecodedDeviceEvidence[], ctx: DeviceVerifyContext): Promise<DeviceVerification> {
  const out: DeviceVerification = { devices: [], checks: [], errors: [] };
  if (decoded.length === 0) return out;
  const deviceNonce = kbsDeviceNonce(ctx.nonce, ctx.teePubkeyRaw);
  for (const d of decoded) {
    const label = `${d.tee}[${d.index}]`;
    const simulated = d.type === 'simulated';
    if (simulated && !ctx.allowSimulated) {
      out.errors.push(`broker.${label}.simulated: ${label} is SIMULATED (software only) and this broker does not allow simulated evidence`);
      continue;
    }
    let certificates: X509Certificate[];
    try {
      certificates = d.certificates.map((der) => ctx.certificate(der));
    } catch {
      out.errors.push(`ERR_EVIDENCE_FORMAT: ${label}: a certificate in ${d.path}.certificate is not X.509`);
      continue;
    }
    const roots = simulated ? [...ctx.simulatedRoots, ...(ctx.verifyOptions.trustedRoots?.simulated ?? [])] : ctx.verifyOptions.trustedRoots?.[d.type];
    let verified: { claims: Claims; checks: Check[] };
    try {
      verified = await ctx.verify(d.type, d.evidence, { now: ctx.now, certificates: [...certificates, ...(ctx.verifyOptions.certificates ?? [])], ...(roots !== undefined ? { trustedRoots: roots } : {}) });
    } catch (err) {
      if (err instanceof SealedTensorsError && EVIDENCE_CODES.has(err.code)) {
        out.errors.push(`${err.code}: ${label}: ${err.message}`);
        continue;
      }
      throw err;
    }
    for (const c of verified.checks) out.checks.push({ ...c, check: `${label}.${c.check}` });
    const sameType = verified.claims.tee === d.type;
    out.checks.push({ check: `broker.${label}.tee`, ok: sameType, detail: sameType ? `${label} evidence is "${d.type}"` : `${label} evidence is "${verified.claims.tee}", not "${d.type}"` });
    const claims = simulated ? asSimulatedDevice(verified.claims, SIMULATES[d.tee] ?? d.type) : verified.claims;
    out.checks.push(checkDeviceBinding(claims, deviceNonce, label));
    out.devices.push({
      label,
      tee: claims.tee,
      uuid: d.uuid,
      claims,
      binding: deviceNonce,
      evidenceDigest: createHash('sha256').update(d.evidence).digest('hex'),
    });
  }
  return out;
}
