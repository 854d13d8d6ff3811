import { SafetensorsError } from '../errors.js';
import { type Dtype, MAX_NAME_BYTES, MAX_RANK, MAX_TENSORS, isDtype } from '../format/constants.js';
import { isPlainFileName, isPlainObject, parseJsonObjectBytes, tensorByteLength } from '../format/table.js';

/** safetensors caps its JSON header at 100 MB; so do we, before allocating it. */
export const MAX_SAFETENSORS_HEADER = 100_000_000;

export interface SafetensorsTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Offsets into the byte buffer that follows the header. */
  begin: number;
  end: number;
}

export interface SafetensorsLayout {
  /** Bytes before the byte buffer: 8 + header length. */
  dataStart: number;
  dataLength: number;
  /** In byte-buffer order. */
  tensors: SafetensorsTensor[];
  metadata: Record<string, string> | null;
}

/** Reads the 8-byte little-endian header length and checks it against the file size. */
export function parseHeaderLength(prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new SafetensorsError(`file is ${fileSize} bytes, too short for a safetensors header`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_SAFETENSORS_HEADER)) {
    throw new SafetensorsError(`safetensors header claims ${n} bytes, more than the 100 MB safetensors allows`);
  }
  if (n < 2n || 8n + n > BigInt(fileSize)) {
    throw new SafetensorsError(`safetensors header claims ${n} bytes, but the file holds only ${fileSize - 8} after the length`);
  }
  return Number(n);
}

/** Parses and validates a safetensors JSON header against the size of the byte buffer behind it. */
export function parseSafetensorsHeader(headerBytes: Uint8Array, fileSize: number): SafetensorsLayout {
  const dataStart = 8 + headerBytes.length;
  const dataLength = fileSize - dataStart;
  const root = parseJsonObjectBytes(headerBytes, 'safetensors header', 'the file is not safetensors or is damaged', SafetensorsError);
  const entries = Object.entries(root);
  if (entries.length > MAX_TENSORS + 1) throw new SafetensorsError(`safetensors header lists more than ${MAX_TENSORS} tensors`);

  let metadata: Record<string, string> | null = null;
  const tensors: SafetensorsTensor[] = [];
  for (const [name, value] of entries) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value);
      continue;
    }
    tensors.push(parseTensor(name, value, dataLength));
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of tensors) {
    if (t.begin !== cursor) {
      throw new SafetensorsError(
        t.begin < cursor
          ? `tensor "${t.name}" overlaps the tensor before it (starts at ${t.begin}, previous ends at ${cursor})`
          : `the byte buffer has a hole before tensor "${t.name}" (${cursor}..${t.begin})`,
      );
    }
    cursor = t.end;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(`tensors cover ${cursor} bytes of a ${dataLength}-byte buffer: the file is truncated or has trailing bytes`);
  }
  return { dataStart, dataLength, tensors, metadata };
}

function parseTensor(name: string, value: unknown, dataLength: number): SafetensorsTensor {
  if (name.length === 0 || Buffer.byteLength(name) > MAX_NAME_BYTES) {
    throw new SafetensorsError(`tensor names must be 1 to ${MAX_NAME_BYTES} bytes`);
  }
  const where = `tensor "${name.slice(0, 80)}"`;
  if (!isPlainObject(value)) throw new SafetensorsError(`${where} must be an object`);
  for (const k of Object.keys(value)) {
    if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') throw new SafetensorsError(`${where} has unknown field "${k}"`);
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isDtype(dtype)) {
    throw new SafetensorsError(
      `${where} has dtype ${JSON.stringify(dtype)}; supported: F64 F32 F16 BF16 F8_E4M3 F8_E5M2 F8_E8M0 C64 I64 I32 I16 I8 U64 U32 U16 U8 BOOL`,
    );
  }
  if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every(isCount)) {
    throw new SafetensorsError(`${where} has a shape that is not a list of at most ${MAX_RANK} non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw new SafetensorsError(`${where} needs data_offsets [begin, end] as non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin || end > dataLength) {
    throw new SafetensorsError(`${where} has data_offsets [${begin}, ${end}] outside the ${dataLength}-byte buffer`);
  }
  const need = tensorByteLength(dtype, shape);
  if (need !== end - begin) {
    throw new SafetensorsError(`${where} is ${end - begin} bytes, but ${dtype}${JSON.stringify(shape)} needs ${need}`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function parseMetadata(value: unknown): Record<string, string> {
  if (!isPlainObject(value)) throw new SafetensorsError('__metadata__ must be an object of strings');
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new SafetensorsError(`__metadata__["${k.slice(0, 80)}"] must be a string`);
  }
  return value as Record<string, string>;
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** A sharded model's `model.safetensors.index.json`. */
export interface ShardIndex {
  metadata: Record<string, unknown> | null;
  weightMap: Record<string, string>;
  /** Shard file names, sorted, each named at least once by weight_map. */
  shardFiles: string[];
}

export function parseShardIndex(bytes: Uint8Array): ShardIndex {
  const root = parseJsonObjectBytes(bytes, 'shard index', 'is it a model.safetensors.index.json?', SafetensorsError);
  const metadata = root['metadata'] ?? null;
  if (metadata !== null && !isPlainObject(metadata)) throw new SafetensorsError('shard index "metadata" must be an object');
  const wm = root['weight_map'];
  if (!isPlainObject(wm) || Object.keys(wm).length === 0) {
    throw new SafetensorsError('shard index needs a non-empty "weight_map" object of tensor name to shard file');
  }
  const files = new Set<string>();
  for (const [name, file] of Object.entries(wm)) {
    if (!isPlainFileName(file) || !file.endsWith('.safetensors')) {
      throw new SafetensorsError(`weight_map["${name.slice(0, 80)}"] must name a .safetensors file in the same folder`);
    }
    files.add(file);
  }
  return {
    metadata: metadata as Record<string, unknown> | null,
    weightMap: wm as Record<string, string>,
    shardFiles: [...files].sort(),
  };
}
