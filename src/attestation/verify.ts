import type { X509Certificate } from 'node:crypto';
import { InvalidArgumentError } from '../errors.js';
import { TEE_TYPES, type TeeType, type VerifiedEvidence, type VerifyOptions } from './types.js';
import { verifyAzureEvidence } from './verifiers/azure.js';
import { verifyNitroDocument } from './verifiers/nitro.js';
import { verifyNvidiaReport } from './verifiers/nvidia.js';
import { verifySimulatedEvidence } from './verifiers/simulated.js';
import { verifySnpReport } from './verifiers/snp.js';
import type { TdxCollateral } from './verifiers/tdx-collateral.js';
import { verifyTdxQuote } from './verifiers/tdx.js';

export interface VerifyEvidenceOptions extends VerifyOptions {
  /** Certificates from the caller: VCEK/VLEK and ASK/ARK for SNP, the GPU chain for NVIDIA, extra issuers. */
  certificates?: readonly X509Certificate[];
  /** Intel PCS collateral for TDX. */
  collateral?: TdxCollateral;
}

/** Verifies evidence of any supported type; throws a typed error when a signature or chain fails. */
export async function verifyEvidence(type: TeeType, evidence: Uint8Array, opts: VerifyEvidenceOptions = {}): Promise<VerifiedEvidence> {
  const base: VerifyOptions = {};
  if (opts.now) base.now = opts.now;
  if (opts.trustedRoots) base.trustedRoots = opts.trustedRoots;
  const certificates = opts.certificates ?? [];
  switch (type) {
    case 'snp':
      return verifySnpReport(evidence, { ...base, certificates });
    case 'tdx':
      return verifyTdxQuote(evidence, { ...base, certificates, ...(opts.collateral ? { collateral: opts.collateral } : {}) });
    case 'nitro':
      return verifyNitroDocument(evidence, base);
    case 'azure-snp':
      return verifyAzureEvidence(evidence, { ...base, certificates });
    case 'nvidia':
      return verifyNvidiaReport(evidence, { ...base, certificates });
    case 'simulated':
      return verifySimulatedEvidence(evidence, base);
    default:
      throw new InvalidArgumentError(`evidence type must be one of ${TEE_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  }
}
