import type { TeeType } from '../types.js';

/** Gathers evidence inside a TEE, binding 64 caller bytes (nonce, key hash) into the hardware signature. */
export interface EvidenceProvider {
  readonly tee: TeeType;
  /** `reportData` must be exactly 64 bytes. Returns the evidence in the form its verifier reads. */
  getEvidence(reportData: Uint8Array): Promise<Uint8Array>;
}

/**
 * Which `additional_evidence` member a device provider's evidence goes under: Trustee's kbs-types
 * name (`nvidia`), or our software stand-in `simulated-nvidia` (docs/PROTOCOL.md).
 */
export type DeviceKind = 'nvidia' | 'simulated-nvidia';

/** One device's evidence: an NVIDIA GPU's SPDM GET_MEASUREMENTS request and signed response, and its PEM chain. */
export interface DeviceEvidence {
  evidence: Uint8Array;
  /** The device's certificate chain, PEM (required for `nvidia`). */
  certificatesPem?: string;
  /** The device's id (an NVIDIA GPU's UUID), for the broker's audit. */
  uuid?: string;
}

/** The KBS runtime data a device binding is computed from, for providers that show it (tests, logs). */
export interface DeviceBindingContext {
  nonce: string;
  teePubkey: object;
}

/**
 * Gathers the evidence of devices attached to this TEE (GPUs), each bound to `nonce`: the 32 bytes
 * the session computes from the challenge and its key (SHA-384(JCS({nonce, tee-pubkey})) truncated,
 * as Trustee binds the SPDM requester nonce). Resolves with one entry per device, never none: a
 * provider that finds no device throws, so a session never sends less than it was asked to.
 */
export interface DeviceEvidenceProvider {
  readonly kind: DeviceKind;
  getDeviceEvidence(nonce: Uint8Array, context: DeviceBindingContext): Promise<DeviceEvidence[]>;
}
