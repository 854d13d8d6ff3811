import { FormatError } from '../errors.js';
import { unpadTable } from './padding.js';
import {
  DIGEST_LENGTH,
  FileKind,
  DTYPE_BITS,
  type Dtype,
  MAX_NAME_BYTES,
  MAX_RANK,
  MAX_SHARDS,
  MAX_TENSORS,
  isDtype,
} from './constants.js';

/** One tensor in the (encrypted) table; offsets are into the payload plaintext. */
export interface TensorEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
  /** Tree digest (section 6), 32 bytes as lowercase hex. */
  digest: string;
}

export interface TensorTable {
  tensors: TensorEntry[];
  metadata: Record<string, string> | null;
  /** Zero bytes after the last tensor (opt-in payload padding, section 5.3); 0 if none. */
  payloadPadding: number;
}

export interface ShardEntry {
  file: string;
  source: string;
  headerDigest: string;
}

export interface IndexTable {
  shards: ShardEntry[];
  indexMetadata: Record<string, unknown> | null;
  weightMap: Record<string, string>;
}

const HEX_DIGEST = new RegExp(`^[0-9a-f]{${DIGEST_LENGTH * 2}}$`);

/** Bytes of a tensor of this dtype and shape (exact), or NaN when its bits are not whole bytes. */
export function tensorByteLength(dtype: Dtype, shape: readonly number[]): number {
  let bits = BigInt(DTYPE_BITS[dtype]);
  for (const d of shape) bits *= BigInt(d);
  return bits % 8n === 0n ? Number(bits / 8n) : Number.NaN;
}

export function encodeTensorTable(t: TensorTable): Uint8Array {
  const json = {
    tensors: t.tensors.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, offsets: [e.begin, e.end], digest: e.digest })),
    metadata: t.metadata,
    payload_padding: t.payloadPadding,
  };
  return new TextEncoder().encode(JSON.stringify(json));
}

export function encodeIndexTable(t: IndexTable): Uint8Array {
  const json = {
    shards: t.shards.map((s) => ({ file: s.file, source: s.source, header_digest: s.headerDigest })),
    index_metadata: t.indexMetadata,
    weight_map: t.weightMap,
  };
  return new TextEncoder().encode(JSON.stringify(json));
}

/** Unpad (section 5.1) and parse a decrypted table, of the kind its header says. */
export function parseSealedTable(
  plain: Uint8Array,
  header: { kind: number; payloadLength: number; shardCount: number },
): { tensorTable: TensorTable | null; indexTable: IndexTable | null } {
  const json = unpadTable(plain);
  if (header.kind === FileKind.INDEX) return { tensorTable: null, indexTable: parseIndexTable(json, header.shardCount) };
  return { tensorTable: parseTensorTable(json, header.payloadLength), indexTable: null };
}

/** Parse the JSON of a model or shard table and check every rule of FORMAT.md section 7. */
export function parseTensorTable(bytes: Uint8Array, payloadLength: number): TensorTable {
  const root = parseJsonObject(bytes);
  onlyKeys(root, ['tensors', 'metadata', 'payload_padding'], 'table');
  const tensorsRaw = root['tensors'];
  if (!Array.isArray(tensorsRaw)) fail('table.tensors must be an array');
  if (tensorsRaw.length > MAX_TENSORS) fail(`table lists ${tensorsRaw.length} tensors, more than ${MAX_TENSORS}`);
  const names = new Set<string>();
  const tensors: TensorEntry[] = [];
  let cursor = 0;
  for (let i = 0; i < tensorsRaw.length; i++) {
    const raw = tensorsRaw[i];
    const where = `table.tensors[${i}]`;
    if (!isPlainObject(raw)) fail(`${where} must be an object`);
    onlyKeys(raw, ['name', 'dtype', 'shape', 'offsets', 'digest'], where);
    const { name, dtype, shape, offsets, digest } = raw;
    // The empty name is a valid safetensors tensor name.
    if (typeof name !== 'string' || Buffer.byteLength(name) > MAX_NAME_BYTES) {
      fail(`${where}.name must be a string of at most ${MAX_NAME_BYTES} bytes`);
    }
    if (names.has(name)) fail(`${where}.name "${name}" appears twice`);
    names.add(name);
    if (!isDtype(dtype)) fail(`${where}.dtype ${JSON.stringify(dtype)} is not a supported dtype`);
    const dims = parseShape(shape, `${where}.shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInt)) {
      fail(`${where}.offsets must be two non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin !== cursor) fail(`${where} starts at ${begin}, but the previous tensor ended at ${cursor}: tensors must be contiguous and in order`);
    if (end < begin) fail(`${where} ends before it begins`);
    if (tensorByteLength(dtype, dims) !== end - begin) {
      fail(`${where} is ${end - begin} bytes, but ${dtype}${JSON.stringify(dims)} needs ${tensorByteLength(dtype, dims)}`);
    }
    if (typeof digest !== 'string' || !HEX_DIGEST.test(digest)) fail(`${where}.digest must be 64 lowercase hex characters`);
    cursor = end;
    tensors.push({ name, dtype, shape: dims, begin, end, digest });
  }
  const payloadPadding = root['payload_padding'];
  if (!isNonNegativeSafeInt(payloadPadding)) fail('table.payload_padding must be a non-negative integer');
  if (cursor + payloadPadding !== payloadLength) {
    fail(`tensors cover ${cursor} bytes and padding ${payloadPadding}, but the payload is ${payloadLength} bytes`);
  }
  return { tensors, metadata: parseMetadata(root['metadata'], 'table.metadata'), payloadPadding };
}

export function parseIndexTable(bytes: Uint8Array, shardCount: number): IndexTable {
  const root = parseJsonObject(bytes);
  onlyKeys(root, ['shards', 'index_metadata', 'weight_map'], 'index table');
  const shardsRaw = root['shards'];
  if (!Array.isArray(shardsRaw) || shardsRaw.length === 0 || shardsRaw.length > MAX_SHARDS) {
    fail(`index table.shards must be an array of 1 to ${MAX_SHARDS} shards`);
  }
  if (shardsRaw.length !== shardCount) fail(`index lists ${shardsRaw.length} shards, its header says ${shardCount}`);
  const files = new Set<string>();
  const shards: ShardEntry[] = shardsRaw.map((raw, i) => {
    const where = `index table.shards[${i}]`;
    if (!isPlainObject(raw)) fail(`${where} must be an object`);
    onlyKeys(raw, ['file', 'source', 'header_digest'], where);
    const { file, source, header_digest: headerDigest } = raw;
    if (!isPlainFileName(file)) fail(`${where}.file must be a plain file name`);
    if (!isPlainFileName(source)) fail(`${where}.source must be a plain file name`);
    if (files.has(file)) fail(`${where}.file "${file}" appears twice`);
    files.add(file);
    if (typeof headerDigest !== 'string' || !HEX_DIGEST.test(headerDigest)) fail(`${where}.header_digest must be 64 lowercase hex characters`);
    return { file, source, headerDigest };
  });
  const im = root['index_metadata'];
  if (im !== null && !isPlainObject(im)) fail('index table.index_metadata must be an object or null');
  const wm = root['weight_map'];
  if (!isPlainObject(wm)) fail('index table.weight_map must be an object');
  const sources = new Set(shards.map((s) => s.source));
  const weightMap: Record<string, string> = {};
  for (const [name, source] of Object.entries(wm)) {
    if (typeof source !== 'string' || !sources.has(source)) fail(`index table.weight_map["${name}"] names no shard of this index`);
    weightMap[name] = source;
  }
  return { shards, indexMetadata: (im as Record<string, unknown> | null) ?? null, weightMap };
}

function parseShape(shape: unknown, where: string): number[] {
  if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every(isNonNegativeSafeInt)) {
    fail(`${where} must be an array of at most ${MAX_RANK} non-negative integers`);
  }
  return shape as number[];
}

function parseMetadata(value: unknown, where: string): Record<string, string> | null {
  if (value === null) return null;
  if (!isPlainObject(value)) fail(`${where} must be an object or null`);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') fail(`${where}["${k}"] must be a string`);
  }
  return value as Record<string, string>;
}

function parseJsonObject(bytes: Uint8Array): Record<string, unknown> {
  return parseJsonObjectBytes(bytes, 'the decrypted table', 'the file was written by a broken sealer', FormatError);
}

/** Strict UTF-8 JSON that must be an object; errors of the caller's class, saying what and why. */
export function parseJsonObjectBytes(
  bytes: Uint8Array,
  what: string,
  hint: string,
  Err: new (message: string, options?: { cause?: unknown }) => Error,
): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new Err(`${what} is not valid UTF-8 JSON: ${hint}`, { cause });
  }
  if (!isPlainObject(value)) throw new Err(`${what} must be a JSON object`);
  return value;
}

function onlyKeys(obj: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) fail(`${where} has unknown member "${k}": written by a newer sealer?`);
  }
  for (const k of allowed) {
    if (!Object.hasOwn(obj, k)) fail(`${where} lacks member "${k}"`);
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeSafeInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export function isPlainFileName(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value.length > 0 &&
    value.length <= 255 &&
    value !== '.' &&
    value !== '..' &&
    !value.includes('/') &&
    !value.includes('\\') &&
    !value.includes('\0')
  );
}

function fail(message: string): never {
  throw new FormatError(message);
}
