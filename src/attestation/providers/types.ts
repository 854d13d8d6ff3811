import type { TeeType } from '../types.js';

/** Gathers evidence inside a TEE, binding 64 caller bytes (nonce, key hash) into the hardware signature. */
export interface EvidenceProvider {
  readonly tee: TeeType;
  /** `reportData` must be exactly 64 bytes. Returns the evidence in the form its verifier reads. */
  getEvidence(reportData: Uint8Array): Promise<Uint8Array>;
}
