// Public attestation API: gather evidence (providers), verify it (verifiers), judge it (policy).
export type { TeeType, Claims, Check, VerifiedEvidence, VerifyOptions } from './types.js';
export { TEE_TYPES } from './types.js';
export { verifyEvidence, appraiseEvidence, type VerifyEvidenceOptions, type AppraiseOptions, type Appraisal } from './verify.js';
export { bindReportData } from './report-data.js';
export { parseCertificates, toPem, fingerprint as certificateFingerprint } from './certs.js';
export {
  AMD_ARK_MILAN,
  AMD_ARK_GENOA,
  INTEL_SGX_ROOT_CA,
  AWS_NITRO_ROOT_G1,
  NVIDIA_DEVICE_IDENTITY_CA,
  DEFAULT_ROOTS,
  type PinnedRoot,
} from './roots.js';
export { parseSnpReport, verifySnpReport, decodeSnpTcb, type SnpReport, type SnpTcb, type SnpVerifyOptions } from './verifiers/snp.js';
export { parseTdxQuote, verifyTdxQuote, type TdxQuote, type TdReportBody, type TdxVerifyOptions, type TdxVerified } from './verifiers/tdx.js';
export { parseTdxCollateral, type TdxCollateral, type TdxCollateralResult, type TcbStatus } from './verifiers/tdx-collateral.js';
export { parseNitroDocument, verifyNitroDocument, type NitroDocument } from './verifiers/nitro.js';
export { parseAzureEvidence, verifyAzureEvidence, parseHclReport, parseTpmsAttest, type AzureEvidence } from './verifiers/azure.js';
export { parseNvidiaReport, verifyNvidiaReport, type NvidiaReport } from './verifiers/nvidia.js';
export { parseSimulatedEvidence, verifySimulatedEvidence, type SimulatedEvidence } from './verifiers/simulated.js';
export {
  parsePolicy,
  validatePolicy,
  DEFAULT_SNP_MIN_TCB,
  DEFAULT_TDX_TCB_STATUS,
  DEFAULT_MAX_AGE_SECONDS,
  DEFAULT_CLOCK_SKEW_SECONDS,
  type Policy,
  type TeePolicy,
} from './policy/policy.js';
export { evaluatePolicy, MIN_NONCE_BYTES, type Verdict, type EvaluateOptions } from './policy/evaluate.js';
export type { DeviceEvidence, DeviceEvidenceProvider, DeviceKind, EvidenceProvider } from './providers/types.js';
export { SimulatedTee, type SimulatedTeeOptions } from './providers/simulated.js';
export { SimulatedGpu, SIMULATED_GPU_MEASUREMENT, type SimulatedGpuOptions } from './providers/simulated-gpu.js';
export { NvidiaGpus, type NvidiaGpusOptions } from './providers/nvidia-gpus.js';
export { detectTee, providerFor, defaultProvider, type DetectedTee } from './providers/detect.js';
export { ConfigfsTsmProvider, tsmReport } from './providers/configfs-tsm.js';
export { SevGuestIoctlProvider, TdxGuestIoctlProvider, tdxGetTdReport } from './providers/ioctl.js';
export { NitroNsmProvider } from './providers/nsm.js';
export { parseSnpCertTable } from './providers/snp-certs.js';
