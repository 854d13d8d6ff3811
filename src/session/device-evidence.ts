/**
 * The session's additional (device) evidence: each provider's devices bound to this run's device
 * binding (SHA-384(JCS({nonce, tee-pubkey})) truncated to the 32-byte SPDM requester nonce, as
 * Trustee binds it), put in `additional_evidence`'s wire shape. The primary evidence's report data
 * then covers that text, so the broker sees CPU and devices bound to one nonce and one key.
 */
import { EvidenceFormatError, InvalidArgumentError } from '../errors.js';
import type { DeviceEvidenceProvider } from '../attestation/providers/types.js';
import { kbsDeviceNonce } from '../protocol/binding.js';
import { DEVICE_KBS_TEES, encodeAdditionalEvidence, type DeviceEvidenceEntry } from '../protocol/device-evidence.js';

/** What the session sent, device by device, for session.info. */
export interface SentDevice {
  /** `nvidia[0]`, `simulated-nvidia[0]`: the label the broker's reasons and audit use. */
  label: string;
  kind: DeviceEvidenceProvider['kind'];
  uuid?: string;
  /** True for a software stand-in (simulated-nvidia). */
  simulated: boolean;
}

export function checkDeviceProviders(devices: unknown): readonly DeviceEvidenceProvider[] {
  if (devices === undefined) return [];
  if (!Array.isArray(devices)) throw new InvalidArgumentError('devices must be an array of DeviceEvidenceProviders (e.g. [new NvidiaGpus()])');
  for (const [i, d] of devices.entries()) {
    const p = d as Partial<DeviceEvidenceProvider> | null;
    if (typeof p !== 'object' || p === null || typeof p.getDeviceEvidence !== 'function' || !(DEVICE_KBS_TEES as readonly unknown[]).includes(p.kind)) {
      throw new InvalidArgumentError(`devices[${i}] must be a DeviceEvidenceProvider whose kind is one of ${DEVICE_KBS_TEES.join(', ')}`);
    }
  }
  const kinds = devices.map((d: DeviceEvidenceProvider) => d.kind);
  if (new Set(kinds).size !== kinds.length) throw new InvalidArgumentError(`devices lists the kind ${kinds.find((k, i) => kinds.indexOf(k) !== i)} twice: one provider per kind gathers all its devices`);
  return devices as readonly DeviceEvidenceProvider[];
}

/** Gathers every provider's devices bound to (nonce, teePubkey); '' and none when there are no providers. */
export async function gatherDeviceEvidence(providers: readonly DeviceEvidenceProvider[], nonce: string, teePubkey: object): Promise<{ additionalEvidence: string; sent: SentDevice[] }> {
  if (providers.length === 0) return { additionalEvidence: '', sent: [] };
  const binding = kbsDeviceNonce(nonce, teePubkey);
  const entries: DeviceEvidenceEntry[] = [];
  const sent: SentDevice[] = [];
  for (const p of providers) {
    const got: unknown = await p.getDeviceEvidence(binding.slice(), { nonce, teePubkey });
    if (!Array.isArray(got) || got.length === 0) throw new EvidenceFormatError(`the ${p.kind} device provider returned no device evidence (it must throw when it finds no device)`);
    for (const [i, d] of got.entries()) {
      entries.push({ tee: p.kind, evidence: d.evidence, ...(d.certificatesPem !== undefined ? { certificatesPem: d.certificatesPem } : {}), ...(d.uuid !== undefined ? { uuid: d.uuid } : {}) });
      sent.push({ label: `${p.kind}[${i}]`, kind: p.kind, ...(d.uuid !== undefined ? { uuid: d.uuid } : {}), simulated: p.kind.startsWith('simulated') });
    }
  }
  return { additionalEvidence: encodeAdditionalEvidence(entries), sent };
}
