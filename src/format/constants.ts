/** Fixed values of sealed format v1 (docs/FORMAT.md). Changing any of them is a new format version. */

export const MAGIC = Uint8Array.of(0x89, 0x53, 0x54, 0x53, 0x0d, 0x0a, 0x1a, 0x0a);
export const FORMAT_VERSION = 1;
export const FIXED_HEADER_LENGTH = 120;
export const TAG_LENGTH = 16;
export const NONCE_LENGTH = 12;
export const DATA_KEY_LENGTH = 32;
export const SALT_LENGTH = 32;
export const BUNDLE_ID_LENGTH = 16;
export const COMMITMENT_LENGTH = 32;
export const DIGEST_LENGTH = 32;

export const KIB = 1024;
export const MIB = 1024 * KIB;
export const DEFAULT_CHUNK_SIZE = 4 * MIB;
export const MIN_CHUNK_SIZE = 4 * KIB;
export const MAX_CHUNK_SIZE = 256 * MIB;
export const CHUNK_SIZE_GRANULE = 4 * KIB;

/** Largest (padded) table plaintext; the largest table bucket. */
export const MAX_TABLE_PLAINTEXT = 100 * MIB;
/** Smallest table bucket: table plaintexts are padded to powers of two from here (section 5.1). */
export const MIN_TABLE_BUCKET = 4 * KIB;
/** The padded table starts with u32le(JSON length). */
export const TABLE_LENGTH_PREFIX = 4;
export const MAX_TENSORS = 1_000_000;
export const MAX_RANK = 64;
export const MAX_SHARDS = 100_000;
export const MAX_NAME_BYTES = 1024;
export const MAX_PAYLOAD_LENGTH = Number.MAX_SAFE_INTEGER;

export const Suite = {
  AES_256_GCM: 1,
  CHACHA20_POLY1305: 2,
} as const;
export type SuiteId = (typeof Suite)[keyof typeof Suite];
export const SUITE_NAMES: Record<SuiteId, SuiteName> = {
  1: 'aes-256-gcm',
  2: 'chacha20-poly1305',
};
export type SuiteName = 'aes-256-gcm' | 'chacha20-poly1305';
export function suiteIdFromName(name: SuiteName): SuiteId {
  return name === 'aes-256-gcm' ? Suite.AES_256_GCM : Suite.CHACHA20_POLY1305;
}

export const FileKind = {
  MODEL: 1,
  SHARD: 2,
  INDEX: 3,
} as const;
export type FileKindId = (typeof FileKind)[keyof typeof FileKind];
export const FILE_KIND_NAMES: Record<FileKindId, 'model' | 'shard' | 'index'> = {
  1: 'model',
  2: 'shard',
  3: 'index',
};

/** Element sizes in bits of every safetensors dtype; F4 and F6_* pack elements below a byte. */
export const DTYPE_BITS = {
  F64: 64,
  F32: 32,
  F16: 16,
  BF16: 16,
  F8_E4M3: 8,
  F8_E5M2: 8,
  F8_E8M0: 8,
  F6_E2M3: 6,
  F6_E3M2: 6,
  F4: 4,
  C64: 64,
  I64: 64,
  I32: 32,
  I16: 16,
  I8: 8,
  U64: 64,
  U32: 32,
  U16: 16,
  U8: 8,
  BOOL: 8,
} as const;
export type Dtype = keyof typeof DTYPE_BITS;
export function isDtype(value: unknown): value is Dtype {
  return typeof value === 'string' && Object.hasOwn(DTYPE_BITS, value);
}

/** Element sizes in bytes of the dtypes with whole-byte elements. */
export const DTYPE_SIZES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  C64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
} as const satisfies Partial<Record<Dtype, number>>;

/** What each per-file subkey is for (section 4). */
export type KeyPurpose = 'key commitment' | 'table key' | 'payload key';

/**
 * HKDF info (section 4), ASCII: the purpose bound to the format version, suite and file kind, so
 * no two of them ever share a subkey even under one data key and salt.
 */
export function hkdfInfo(purpose: KeyPurpose, context: { version: number; suite: number; kind: number }): string {
  return `sealed-tensors/v${context.version} suite ${context.suite} kind ${context.kind} ${purpose}`;
}

/** Key ids are printed in logs and file names: a conservative alphabet keeps them safe there. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9._:/-]{1,255}$/;
