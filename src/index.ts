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

// Owner tooling: keys, sealing, and the key-in-hand reference reader (not the loading API for inference).
export { writeNewKeyFile, readKeyFile, type DataKey } from './keys/key-file.js';
export { sealFile, type SealOptions, type SealedFileSummary } from './seal/seal-file.js';
export { sealModelDirectory, type SealedModelSummary } from './seal/seal-model.js';
export { SealedFileReader, readPublicHeader, type TensorInfo, type TensorCheck, type ReaderOptions } from './reader/sealed-file.js';
export { SealedModelReader, type ShardCheck } from './reader/sealed-model.js';
export { FileSource, MemorySource, type ByteSource } from './reader/source.js';

// The hardened native path (docs/NATIVE.md): secure memory, key handles, the native readers.
export { nativeStatus, requireHardened, type NativeStatus } from './native/addon.js';
export { SecureBuffer } from './native/secure-buffer.js';
export { importKey, type NativeKeyHandle } from './native/key.js';
export { NativeSealedFileReader, type NativeReaderOptions, type SecureTensor, type LoadedTensors, type NativeTensorCheck } from './reader/native-file.js';
export { NativeSealedModelReader, type NativeShardCheck } from './reader/native-model.js';
export { openSealedModel, type OpenedModel, type OpenModelOptions } from './reader/native-open.js';
export * from './attestation/index.js';
