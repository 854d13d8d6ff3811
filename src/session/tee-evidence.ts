/**
 * SEAM (lead: replace with src/protocol/evidence.ts `encodeTeeEvidence` once branch
 * trustee-evidence lands). The `tee-evidence` member of /attest for each of our TEE types, and the
 * KBS tee name each one goes by.
 *
 * Here only our extension types, as CONTRACTS.md writes them: {"evidence": base64(our bytes)}. The
 * Trustee shapes (snp, tdx, az-snp-vtpm) belong to src/protocol/evidence.ts; until it lands they
 * are refused with a clear message rather than sent in a shape a Trustee verifier would misread.
 */
import { UnsupportedError } from '../errors.js';
import type { TeeType } from '../attestation/types.js';

/** Our TEE type -> the `tee` name of the KBS auth request (Trustee's names, plus our extensions). */
export const KBS_TEE_NAMES: Readonly<Partial<Record<TeeType, string>>> = {
  snp: 'snp',
  tdx: 'tdx',
  'azure-snp': 'az-snp-vtpm',
  nitro: 'nitro',
  simulated: 'simulated',
};

export function kbsTeeName(tee: TeeType): string {
  const name = KBS_TEE_NAMES[tee];
  if (name === undefined) throw new UnsupportedError(`a ${tee} provider cannot be a session's primary evidence (no KBS tee name)`);
  return name;
}

export function encodeTeeEvidence(tee: TeeType, evidence: Uint8Array): unknown {
  if (tee === 'simulated' || tee === 'nitro') return { evidence: Buffer.from(evidence.buffer, evidence.byteOffset, evidence.byteLength).toString('base64') };
  throw new UnsupportedError(
    `sending ${tee} evidence in Trustee's wire shape needs src/protocol/evidence.ts (not in this build yet); only simulated and nitro evidence can be sent`,
  );
}
