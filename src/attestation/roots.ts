/**
 * Pinned roots of trust, by SHA-256 of the DER certificate. The certificates themselves are not
 * shipped: they arrive with the evidence (TDX PCK chain, Nitro cabundle) or from the caller
 * (AMD's cert_chain from KDS). A chain is accepted only if it ends at one of these.
 *
 * How each was obtained: computed (openssl x509 -fingerprint -sha256) from the certificate files in
 * the project's shared attestation vectors, each taken from an upstream project that ships the
 * genuine root (see docs/ATTESTATION.md), and cross-checked against an independent source:
 * AMD ARKs against virtee/sev's built-in KDS certificates and go-sev-guest's trust bundle (same
 * fingerprints), the Nitro root against the fingerprint AWS publishes in its Nitro Enclaves
 * documentation, the Intel root against two independent copies (dcap-qvl and go-tdx-guest) that
 * are byte-identical, the NVIDIA root against the copy in confidential-containers/trustee.
 */

export interface PinnedRoot {
  /** Lower-case hex SHA-256 of the DER certificate. */
  sha256: string;
  subject: string;
  notAfter: string;
  source: string;
}

export const AMD_ARK_MILAN: PinnedRoot = {
  sha256: '69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd',
  subject: 'CN=ARK-Milan, O=Advanced Micro Devices',
  notAfter: '2045-10-22T17:23:05Z',
  source: 'AMD KDS https://kdsintf.amd.com/vcek/v1/Milan/cert_chain, as kept by google/go-sev-guest verify/trust/ask_ark_milan.pem',
};

export const AMD_ARK_GENOA: PinnedRoot = {
  sha256: '4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1',
  subject: 'CN=ARK-Genoa, O=Advanced Micro Devices',
  notAfter: '2047-01-26T15:34:37Z',
  source: 'AMD KDS https://kdsintf.amd.com/vcek/v1/Genoa/cert_chain, as kept by google/go-sev-guest verify/trust/ask_ark_genoa.pem',
};

export const INTEL_SGX_ROOT_CA: PinnedRoot = {
  sha256: '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3',
  subject: 'CN=Intel SGX Root CA, O=Intel Corporation',
  notAfter: '2049-12-31T23:59:59Z',
  source: 'Intel PCS https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.cer, as kept by Phala-Network/dcap-qvl and google/go-tdx-guest',
};

export const AWS_NITRO_ROOT_G1: PinnedRoot = {
  sha256: '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b',
  subject: 'CN=aws.nitro-enclaves, O=Amazon, OU=AWS',
  notAfter: '2049-10-28T14:28:05Z',
  source: 'AWS https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip (fingerprint published in the Nitro Enclaves user guide)',
};

export const NVIDIA_DEVICE_IDENTITY_CA: PinnedRoot = {
  sha256: '102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48',
  subject: 'CN=NVIDIA Device Identity CA, O=NVIDIA',
  notAfter: '9999-12-31T23:59:59Z',
  source: 'NVIDIA device identity root as shipped by confidential-containers/trustee deps/verifier/src/nvidia/nvidia_device_root.pem',
};

/** Which pinned roots each verifier accepts by default. */
export const DEFAULT_ROOTS = {
  snp: [AMD_ARK_MILAN, AMD_ARK_GENOA],
  tdx: [INTEL_SGX_ROOT_CA],
  nitro: [AWS_NITRO_ROOT_G1],
  nvidia: [NVIDIA_DEVICE_IDENTITY_CA],
} as const;

export function rootSet(roots: readonly (PinnedRoot | string)[]): ReadonlySet<string> {
  return new Set(roots.map((r) => (typeof r === 'string' ? r.toLowerCase().replace(/[^0-9a-f]/g, '') : r.sha256)));
}
