/**
 * `sealed-tensors/owner`: the model owner's tooling, which holds data keys directly. Sealing, and
 * reading sealed weights with a key in hand to check them (`verify`), debug them or convert them.
 * Inference inside a TEE does not use this entry point: it opens models through an EnclaveSession,
 * which gets its keys from the broker only after attestation (docs/PROTOCOL.md).
 */
export { writeNewKeyFile, readKeyFile, type DataKey } from './keys/key-file.js';
export { sealFile, type SealOptions, type SealedFileSummary } from './seal/seal-file.js';
export { sealModelDirectory, type SealedModelSummary } from './seal/seal-model.js';
export { SealedFileReader, readPublicHeader, type TensorInfo, type TensorCheck, type ReaderOptions } from './reader/sealed-file.js';
export { SealedModelReader, type ShardCheck } from './reader/sealed-model.js';
export { FileSource, MemorySource, type ByteSource } from './reader/source.js';
export { nativeStatus, requireHardened, type NativeStatus } from './native/addon.js';
export { SecureBuffer } from './native/secure-buffer.js';
export { importKey, type NativeKeyHandle } from './native/key.js';
export { NativeSealedFileReader, type NativeReaderOptions, type SecureTensor, type LoadedTensors, type NativeTensorCheck, type TensorSelection } from './reader/native-file.js';
export { sealedSource, FileSealedSource, HttpRangeSource, type HttpSourceOptions, type SealedSource, type OpenedSource } from './sources/index.js';
export { NativeSealedModelReader, type NativeShardCheck } from './reader/native-model.js';
export { openSealedModel, type OpenedModel, type OpenModelOptions } from './reader/native-open.js';
