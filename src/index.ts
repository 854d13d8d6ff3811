// The public API: named exports only.
export * from './errors.js';

// Sealed format v1 (docs/FORMAT.md).
export {
  Suite,
  FileKind,
  DEFAULT_CHUNK_SIZE,
  DTYPE_SIZES,
  DTYPE_BITS,
  type Dtype,
  type SuiteId,
  type SuiteName,
  type FileKindId,
} from './format/constants.js';
export { parseHeader, type PublicHeader } from './format/header.js';

// Owner tooling that never decrypts: keys and sealing. Reading sealed weights with a key in hand
// (the reference and native readers, importKey, openSealedModel) is owner tooling too, and lives
// only in `sealed-tensors/owner`: for inference, the one public way to decrypt is an EnclaveSession.
export { writeNewKeyFile, readKeyFile, type DataKey } from './keys/key-file.js';
export { sealFile, type SealOptions, type SealedFileSummary } from './seal/seal-file.js';
export { sealModelDirectory, type SealedModelSummary } from './seal/seal-model.js';
export { readPublicHeader } from './reader/sealed-file.js';

// Whether the hardened native path (docs/NATIVE.md) is available; sessions use it.
export { nativeStatus, requireHardened, type NativeStatus } from './native/addon.js';
export { SecureBuffer } from './native/secure-buffer.js';
export type { SecureTensor, LoadedTensors, NativeTensorCheck } from './reader/native-file.js';

// Where sealed bytes come from (no decryption here): a local file, or an HTTP(S) URL read with range requests.
export { sealedSource, FileSealedSource, HttpRangeSource, type HttpSourceOptions, type SealedSource, type OpenedSource } from './sources/index.js';

// Attested key release: the loading API for inference. A session proves its TEE to a key broker
// (KBS attestation protocol), receives data keys wrapped to its ephemeral key, and opens only the
// sealed models the release names; keys and plaintext stay in native secure memory.
export {
  EnclaveSession,
  type EnclaveSessionOptions,
  type SessionOpenOptions,
  type SessionInfo,
  type SessionVerdict,
  type SessionKeyInfo,
} from './session/enclave-session.js';
export type { BrokerKeyInput, BrokerPublicJwk } from './session/broker-trust.js';
export { SessionModel, type TensorSelection, type LoadedModel, type ProgressEvent, type SessionTensorInfo, type SessionModelInfo } from './session/session-model.js';

// Attestation. The verifiers parse X.509 and ASN.1 with @peculiar/x509 (and reflect-metadata),
// which take about half a second to load and which sealing, `verify` and loading never use: here
// they load on first call, behind async wrappers, so importing this package stays fast; so does
// TEE detection (the Nitro provider's CBOR codec). Policy, pinned roots, the configfs/ioctl
// providers and the simulated TEE are cheap and load eagerly. The same API with the parsers and
// `providerFor` synchronous, and the `NitroNsmProvider` class: `sealed-tensors/attestation`
// (loads everything at import).
export type * from './attestation/index.js';
export { TEE_TYPES } from './attestation/types.js';
export { bindReportData } from './attestation/report-data.js';
export {
  AMD_ARK_MILAN,
  AMD_ARK_GENOA,
  INTEL_SGX_ROOT_CA,
  AWS_NITRO_ROOT_G1,
  NVIDIA_DEVICE_IDENTITY_CA,
  DEFAULT_ROOTS,
} from './attestation/roots.js';
export { parseSimulatedEvidence, verifySimulatedEvidence } from './attestation/verifiers/simulated.js';
export {
  parsePolicy,
  validatePolicy,
  DEFAULT_SNP_MIN_TCB,
  DEFAULT_TDX_TCB_STATUS,
  DEFAULT_MAX_AGE_SECONDS,
  DEFAULT_CLOCK_SKEW_SECONDS,
} from './attestation/policy/policy.js';
export { evaluatePolicy, MIN_NONCE_BYTES } from './attestation/policy/evaluate.js';
export { SimulatedTee } from './attestation/providers/simulated.js';
export { SimulatedGpu, SIMULATED_GPU_MEASUREMENT } from './attestation/providers/simulated-gpu.js';
export { NvidiaGpus } from './attestation/providers/nvidia-gpus.js';
export { ConfigfsTsmProvider, tsmReport } from './attestation/providers/configfs-tsm.js';
export { SevGuestIoctlProvider, TdxGuestIoctlProvider, tdxGetTdReport } from './attestation/providers/ioctl.js';
export { parseSnpCertTable } from './attestation/providers/snp-certs.js';

type Attestation = typeof import('./attestation/index.js');
type FunctionName = { [K in keyof Attestation]: Attestation[K] extends (...args: never[]) => unknown ? K : never }[keyof Attestation];
type Promisified<F> = F extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never;
let attestation: Promise<Attestation> | undefined;

/** An async stand-in for one attestation function that imports the verifiers on first use. */
function lazy<K extends FunctionName>(name: K): Promisified<Attestation[K]> {
  const call = async (...args: unknown[]): Promise<unknown> => {
    attestation ??= import('./attestation/index.js');
    return await ((await attestation)[name] as (...a: unknown[]) => unknown)(...args);
  };
  return call as Promisified<Attestation[K]>;
}

export const verifyEvidence = lazy('verifyEvidence');
export const appraiseEvidence = lazy('appraiseEvidence');
export const parseCertificates = lazy('parseCertificates');
export const toPem = lazy('toPem');
export const certificateFingerprint = lazy('certificateFingerprint');
export const parseSnpReport = lazy('parseSnpReport');
export const verifySnpReport = lazy('verifySnpReport');
export const decodeSnpTcb = lazy('decodeSnpTcb');
export const parseTdxQuote = lazy('parseTdxQuote');
export const verifyTdxQuote = lazy('verifyTdxQuote');
export const parseTdxCollateral = lazy('parseTdxCollateral');
export const parseNitroDocument = lazy('parseNitroDocument');
export const verifyNitroDocument = lazy('verifyNitroDocument');
export const parseAzureEvidence = lazy('parseAzureEvidence');
export const verifyAzureEvidence = lazy('verifyAzureEvidence');
export const parseHclReport = lazy('parseHclReport');
export const parseTpmsAttest = lazy('parseTpmsAttest');
export const parseNvidiaReport = lazy('parseNvidiaReport');
export const verifyNvidiaReport = lazy('verifyNvidiaReport');
export const detectTee = lazy('detectTee');
export const providerFor = lazy('providerFor');
export const defaultProvider = lazy('defaultProvider');
