/**
 * The session's half of `tee-evidence`: which KBS tee name a provider attests as, and its evidence
 * gathered for a report data and put in Trustee's wire shape (src/protocol/evidence.ts).
 */
import { UnsupportedError } from '../errors.js';
import type { TeeType } from '../attestation/types.js';
import type { EvidenceProvider } from '../attestation/providers/types.js';
import { encodeTeeEvidence, type SnpCertType } from '../protocol/evidence.js';

/** Our TEE type -> the `tee` name of the KBS auth request (Trustee's names, plus our extensions). */
export const KBS_TEE_NAMES: Readonly<Partial<Record<TeeType, string>>> = {
  snp: 'snp',
  tdx: 'tdx',
  'azure-snp': 'az-snp-vtpm',
  nitro: 'nitro',
  simulated: 'simulated',
};

type Encodable = Parameters<typeof encodeTeeEvidence>[0];
const ENCODABLE: readonly TeeType[] = ['snp', 'tdx', 'nitro', 'simulated'] satisfies Encodable[];

export function kbsTeeName(tee: TeeType): string {
  const name = KBS_TEE_NAMES[tee];
  if (name === undefined) throw new UnsupportedError(`a ${tee} provider cannot be a session's primary evidence (no KBS tee name)`);
  return name;
}

/** The KBS tee name a session attests as; refused before any request when its evidence cannot be sent. */
export function sessionTeeName(tee: TeeType): string {
  const name = kbsTeeName(tee);
  if (!ENCODABLE.includes(tee)) {
    throw new UnsupportedError(`${tee} evidence cannot be sent to a broker from this library (no provider gathers it); sessions attest as snp, tdx, nitro or simulated`);
  }
  return name;
}

const SNP_CERT_TYPES: readonly string[] = ['VCEK', 'VLEK', 'ASK', 'ARK'] satisfies SnpCertType[];

interface WithCertificates {
  getEvidenceWithCertificates(reportData: Uint8Array): Promise<{ evidence: Uint8Array; certificates: { name: string; der: Uint8Array }[] }>;
}

/**
 * The provider's evidence for `reportData` as `tee-evidence`. An SNP provider that hands over the
 * host's certificates (configfs-tsm auxblob: VCEK or VLEK, ASK, ARK) sends them in `cert_chain`, so
 * the broker need not fetch them from AMD.
 */
export async function gatherTeeEvidence(provider: EvidenceProvider, reportData: Uint8Array, additionalEvidence = ''): Promise<{ primary_evidence: Record<string, unknown>; additional_evidence: string }> {
  const tee = provider.tee as Encodable;
  sessionTeeName(tee);
  const withCerts = provider as Partial<WithCertificates>;
  if (tee === 'snp' && typeof withCerts.getEvidenceWithCertificates === 'function') {
    const { evidence, certificates } = await withCerts.getEvidenceWithCertificates(reportData);
    const snpCertificates = certificates.filter((c) => SNP_CERT_TYPES.includes(c.name)).map((c) => ({ type: c.name as SnpCertType, der: c.der }));
    return encodeTeeEvidence(tee, evidence, { snpCertificates, additionalEvidence });
  }
  return encodeTeeEvidence(tee, await provider.getEvidence(reportData), { additionalEvidence });
}
