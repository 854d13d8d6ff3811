import { FormatError, InvalidArgumentError, UnsupportedVersionError } from '../errors.js';
import { assertBytes } from '../bytes.js';
import {
  BUNDLE_ID_LENGTH,
  CHUNK_SIZE_GRANULE,
  COMMITMENT_LENGTH,
  FIXED_HEADER_LENGTH,
  FORMAT_VERSION,
  FileKind,
  type FileKindId,
  KEY_ID_PATTERN,
  MAGIC,
  MAX_CHUNK_SIZE,
  MAX_PAYLOAD_LENGTH,
  MAX_SHARDS,
  MIN_CHUNK_SIZE,
  SALT_LENGTH,
  Suite,
  type SuiteId,
  TAG_LENGTH,
} from './constants.js';
import { isTableBucket } from './padding.js';

/** The public header: all a storage system or key broker needs, nothing about the model's architecture. */
export interface PublicHeader {
  version: number;
  suite: SuiteId;
  kind: FileKindId;
  chunkSize: number;
  shardIndex: number;
  shardCount: number;
  tableLength: number;
  payloadLength: number;
  bundleId: Uint8Array;
  salt: Uint8Array;
  keyCommitment: Uint8Array;
  keyId: string;
}

export function validateChunkSize(chunkSize: number): void {
  if (
    !Number.isSafeInteger(chunkSize) ||
    chunkSize < MIN_CHUNK_SIZE ||
    chunkSize > MAX_CHUNK_SIZE ||
    chunkSize % CHUNK_SIZE_GRANULE !== 0
  ) {
    throw new InvalidArgumentError(
      `chunk size must be a multiple of 4 KiB between 4 KiB and 256 MiB, got ${chunkSize}`,
    );
  }
}

export function validateKeyId(keyId: string): void {
  if (typeof keyId !== 'string' || !KEY_ID_PATTERN.test(keyId)) {
    throw new InvalidArgumentError(
      'key id must be 1 to 255 characters from A-Z a-z 0-9 . _ : / -',
    );
  }
}

export function headerLength(keyId: string): number {
  return FIXED_HEADER_LENGTH + Buffer.byteLength(keyId, 'utf8');
}

export function encodeHeader(h: PublicHeader): Uint8Array {
  validateKeyId(h.keyId);
  validateChunkSize(h.chunkSize);
  assertBytes(h.bundleId, 'bundleId', BUNDLE_ID_LENGTH);
  assertBytes(h.salt, 'salt', SALT_LENGTH);
  assertBytes(h.keyCommitment, 'keyCommitment', COMMITMENT_LENGTH);
  checkSemantics(h, InvalidArgumentError);

  const keyId = Buffer.from(h.keyId, 'utf8');
  const out = Buffer.alloc(FIXED_HEADER_LENGTH + keyId.length);
  out.set(MAGIC, 0);
  out.writeUInt16LE(h.version, 8);
  out.writeUInt16LE(h.suite, 10);
  out.writeUInt8(h.kind, 12);
  out.writeUInt8(keyId.length, 13);
  out.writeUInt16LE(0, 14);
  out.writeUInt32LE(h.chunkSize, 16);
  out.writeUInt32LE(h.shardIndex, 20);
  out.writeUInt32LE(h.shardCount, 24);
  out.writeUInt32LE(h.tableLength, 28);
  out.writeBigUInt64LE(BigInt(h.payloadLength), 32);
  out.set(h.bundleId, 40);
  out.set(h.salt, 56);
  out.set(h.keyCommitment, 88);
  out.set(keyId, 120);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Length of the whole header, given its first FIXED_HEADER_LENGTH bytes (checks the magic first). */
export function headerLengthFromPrefix(prefix: Uint8Array): number {
  checkMagic(prefix);
  if (prefix.length < 14) throw new FormatError('sealed header is cut short: not a sealed-tensors file, or truncated');
  return FIXED_HEADER_LENGTH + prefix[13]!;
}

/** Parse and validate a public header; `bytes` must hold at least the whole header. */
export function parseHeader(bytes: Uint8Array): { header: PublicHeader; length: number } {
  checkMagic(bytes);
  if (bytes.length < FIXED_HEADER_LENGTH) {
    throw new FormatError(`sealed header needs ${FIXED_HEADER_LENGTH} bytes, file has ${bytes.length}: truncated or not a sealed file`);
  }
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = b.readUInt16LE(8);
  if (version !== FORMAT_VERSION) {
    throw new UnsupportedVersionError(
      `sealed file has format version ${version}; this build reads version ${FORMAT_VERSION}: upgrade sealed-tensors or re-seal the model`,
    );
  }
  const suite = b.readUInt16LE(10);
  if (suite !== Suite.AES_256_GCM && suite !== Suite.CHACHA20_POLY1305) {
    throw new UnsupportedVersionError(`sealed file uses cipher suite ${suite}, which this build does not implement`);
  }
  const kind = b.readUInt8(12);
  if (kind !== FileKind.MODEL && kind !== FileKind.SHARD && kind !== FileKind.INDEX) {
    throw new FormatError(`sealed header has unknown file kind ${kind}: the file is damaged`);
  }
  const keyIdLength = b.readUInt8(13);
  if (keyIdLength === 0) throw new FormatError('sealed header has an empty key id: the file is damaged');
  const flags = b.readUInt16LE(14);
  if (flags !== 0) throw new FormatError(`sealed header has flags 0x${flags.toString(16)} set; version 1 defines none`);
  const length = FIXED_HEADER_LENGTH + keyIdLength;
  if (bytes.length < length) {
    throw new FormatError(`sealed header needs ${length} bytes, file has ${bytes.length}: truncated`);
  }
  const payloadBig = b.readBigUInt64LE(32);
  if (payloadBig > BigInt(MAX_PAYLOAD_LENGTH)) {
    throw new FormatError('sealed header declares a payload longer than 2^53 - 1 bytes: the file is damaged');
  }
  const keyIdBytes = b.subarray(FIXED_HEADER_LENGTH, length);
  const keyId = keyIdBytes.toString('utf8');
  if (!KEY_ID_PATTERN.test(keyId) || Buffer.byteLength(keyId) !== keyIdLength) {
    throw new FormatError('sealed header has a key id with characters outside A-Z a-z 0-9 . _ : / -: the file is damaged');
  }
  const header: PublicHeader = {
    version,
    suite,
    kind,
    chunkSize: b.readUInt32LE(16),
    shardIndex: b.readUInt32LE(20),
    shardCount: b.readUInt32LE(24),
    tableLength: b.readUInt32LE(28),
    payloadLength: Number(payloadBig),
    bundleId: new Uint8Array(bytes.subarray(40, 56)),
    salt: new Uint8Array(bytes.subarray(56, 88)),
    keyCommitment: new Uint8Array(bytes.subarray(88, 120)),
    keyId,
  };
  const c = header.chunkSize;
  if (c < MIN_CHUNK_SIZE || c > MAX_CHUNK_SIZE || c % CHUNK_SIZE_GRANULE !== 0) {
    throw new FormatError(`sealed header has chunk size ${c}, outside what version 1 allows: the file is damaged`);
  }
  checkSemantics(header, FormatError);
  return { header, length };
}

function checkMagic(bytes: Uint8Array): void {
  const n = Math.min(bytes.length, MAGIC.length);
  for (let i = 0; i < n; i++) {
    if (bytes[i] !== MAGIC[i]) {
      throw new FormatError('not a sealed-tensors file (bad magic): check the path, or the file was altered in transfer');
    }
  }
  if (bytes.length < MAGIC.length) throw new FormatError('file is too short to be a sealed-tensors file');
}

function checkSemantics(h: PublicHeader, Err: new (message: string) => Error): void {
  if (!isTableBucket(h.tableLength - TAG_LENGTH)) {
    throw new Err(`table length ${h.tableLength} is not 16 more than a padded table size (a power of two from 4 KiB, or 100 MiB)`);
  }
  if (h.shardCount < 1 || h.shardCount > MAX_SHARDS) throw new Err(`shard count ${h.shardCount} is outside [1, ${MAX_SHARDS}]`);
  if (h.kind === FileKind.MODEL && (h.shardIndex !== 0 || h.shardCount !== 1)) {
    throw new Err('a model file must be shard 0 of 1');
  }
  if (h.kind === FileKind.INDEX && (h.shardIndex !== 0 || h.payloadLength !== 0)) {
    throw new Err('an index file must have shard index 0 and no payload');
  }
  if (h.kind === FileKind.SHARD && h.shardIndex >= h.shardCount) {
    throw new Err(`shard index ${h.shardIndex} is not below shard count ${h.shardCount}`);
  }
  if (!Number.isSafeInteger(h.payloadLength) || h.payloadLength < 0) throw new Err('payload length must be a safe integer');
}
