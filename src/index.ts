// The public API: named exports only.
export * from './errors.js';

// Sealed format v1 (docs/FORMAT.md).
export {
  Suite,
  FileKind,
  DEFAULT_CHUNK_SIZE,
  DTYPE_SIZES,
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
export * from './attestation/index.js';
