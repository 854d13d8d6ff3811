import { SafetensorsError, UnsupportedError } from '../errors.js';
import { DTYPE_BITS, type Dtype, MAX_NAME_BYTES, MAX_RANK, MAX_TENSORS, isDtype } from '../format/constants.js';
import { isPlainFileName, isPlainObject, parseJsonObjectBytes } from '../format/table.js';
import { JsonSyntaxError, isJsonNumber, isJsonObject, parseStrictJson, type JsonNumber, type JsonValue } from './strict-json.js';

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

/**
 * Reads the 8-byte little-endian header length and checks it against the file size.
 * Rules and their order follow `SafeTensors::read_metadata` of the Rust crate (see
 * test/vectors/safetensors/README.md for the version and lines).
 */
export function parseHeaderLength(prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new SafetensorsError(`not a safetensors file: ${fileSize} bytes is too short for the 8-byte header length`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_SAFETENSORS_HEADER)) {
    throw new SafetensorsError(`not a safetensors file: its header claims ${n} bytes, more than the 100,000,000 safetensors allows`);
  }
  if (8n + n > BigInt(fileSize)) {
    throw new SafetensorsError(`not a safetensors file, or truncated: its header claims ${n} bytes, but only ${fileSize - 8} follow the length`);
  }
  return Number(n);
}

const U64_MAX = (1n << 64n) - 1n;

interface RawTensor {
  name: string;
  dtype: Dtype;
  shape: bigint[];
  begin: bigint;
  end: bigint;
}

/**
 * Parses and validates a safetensors JSON header against the size of the byte buffer behind it:
 * accepts what the reference reader accepts, rejects (ERR_SAFETENSORS) what it rejects. A file the
 * reference loads but sealed format v1 cannot hold is ERR_UNSUPPORTED.
 */
export function parseSafetensorsHeader(headerBytes: Uint8Array, fileSize: number): SafetensorsLayout {
  const dataStart = 8 + headerBytes.length;
  const dataLength = fileSize - dataStart;
  let text: string;
  try {
    // A byte-order mark is not JSON whitespace to serde_json: keep it so the parser refuses it.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch (cause) {
    throw new SafetensorsError('not a safetensors file: its header is not valid UTF-8', { cause });
  }
  let root: JsonValue;
  try {
    root = parseStrictJson(text);
  } catch (cause) {
    if (!(cause instanceof JsonSyntaxError)) throw cause;
    throw new SafetensorsError(`not a safetensors file: its header is not valid JSON (${cause.message})`, { cause });
  }
  if (!isJsonObject(root)) throw new SafetensorsError('not a safetensors file: its header is not a JSON object');

  // serde: `__metadata__` is a named field (a second one is an error); tensors are a flattened
  // map, where a repeated name replaces the earlier entry.
  let metadata: Record<string, string> | null = null;
  let sawMetadata = false;
  const byName = new Map<string, RawTensor>();
  for (const [name, value] of root.entries) {
    if (name === '__metadata__') {
      if (sawMetadata) throw new SafetensorsError('the header has "__metadata__" twice');
      sawMetadata = true;
      metadata = parseMetadata(value);
      continue;
    }
    byName.delete(name);
    byName.set(name, parseTensor(name, value));
  }

  // Sorted by (begin, end), then contiguous from 0, each exactly as long as dtype and shape say.
  const raw = [...byName.values()].sort((a, b) => cmp(a.begin, b.begin) || cmp(a.end, b.end));
  let cursor = 0n;
  for (const t of raw) {
    const where = `tensor "${t.name.slice(0, 80)}"`;
    if (t.begin !== cursor || t.end < t.begin) {
      throw new SafetensorsError(
        t.end < t.begin
          ? `${where} has data_offsets [${t.begin}, ${t.end}] that end before they begin`
          : t.begin < cursor
            ? `${where} overlaps the tensor before it (starts at ${t.begin}, previous ends at ${cursor})`
            : `the byte buffer has a hole before ${where} (${cursor}..${t.begin})`,
      );
    }
    cursor = t.end;
    let elements = 1n;
    for (const d of t.shape) {
      elements *= d;
      if (elements > U64_MAX) throw new SafetensorsError(`${where} has a shape whose element count overflows 64 bits`);
    }
    const bits = elements * BigInt(DTYPE_BITS[t.dtype]!);
    if (bits > U64_MAX) throw new SafetensorsError(`${where} has a shape whose size in bits overflows 64 bits`);
    if (bits % 8n !== 0n) throw new SafetensorsError(`${where} (${t.dtype}${formatShape(t.shape)}) does not end on a byte boundary`);
    if (t.end - t.begin !== bits / 8n) {
      throw new SafetensorsError(`${where} is ${t.end - t.begin} bytes, but ${t.dtype}${formatShape(t.shape)} needs ${bits / 8n}`);
    }
  }
  if (cursor !== BigInt(dataLength)) {
    throw new SafetensorsError(`tensors cover ${cursor} bytes of a ${dataLength}-byte buffer: the file is truncated or has trailing bytes`);
  }

  // The reference would load this file; now what sealed format v1 can hold.
  if (raw.length > MAX_TENSORS) throw new UnsupportedError(`the file has ${raw.length} tensors; sealed format v1 holds at most ${MAX_TENSORS}`);
  const tensors = raw.map((t): SafetensorsTensor => {
    const where = `tensor "${t.name.slice(0, 80)}"`;
    if (Buffer.byteLength(t.name) > MAX_NAME_BYTES) throw new UnsupportedError(`${where}... has a name longer than the ${MAX_NAME_BYTES} bytes sealed format v1 allows`);
    if (t.shape.length > MAX_RANK) throw new UnsupportedError(`${where} has ${t.shape.length} dimensions; sealed format v1 allows ${MAX_RANK}`);
    if (t.shape.some((d) => d > BigInt(Number.MAX_SAFE_INTEGER))) {
      throw new UnsupportedError(`${where} has a dimension above 2^53 - 1, which sealed format v1 cannot record`);
    }
    return { name: t.name, dtype: t.dtype, shape: t.shape.map(Number), begin: Number(t.begin), end: Number(t.end) };
  });
  return { dataStart, dataLength, tensors, metadata };
}

/** serde's TensorInfo: a map (unknown members ignored, repeated ones refused) or a 3-element sequence. */
function parseTensor(name: string, value: JsonValue): RawTensor {
  const where = `tensor "${name.slice(0, 80)}"`;
  let dtype: JsonValue | undefined;
  let shape: JsonValue | undefined;
  let offsets: JsonValue | undefined;
  if (Array.isArray(value)) {
    if (value.length !== 3) throw new SafetensorsError(`${where} must be an object with dtype, shape and data_offsets`);
    [dtype, shape, offsets] = value;
  } else if (isJsonObject(value)) {
    for (const [k, v] of value.entries) {
      if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') continue; // the reference ignores other members
      if ((k === 'dtype' ? dtype : k === 'shape' ? shape : offsets) !== undefined) throw new SafetensorsError(`${where} has "${k}" twice`);
      if (k === 'dtype') dtype = v;
      else if (k === 'shape') shape = v;
      else offsets = v;
    }
  } else {
    throw new SafetensorsError(`${where} must be an object with dtype, shape and data_offsets`);
  }
  for (const [k, v] of [['dtype', dtype], ['shape', shape], ['data_offsets', offsets]] as const) {
    if (v === undefined) throw new SafetensorsError(`${where} lacks "${k}"`);
  }
  if (!isDtype(dtype)) {
    throw new SafetensorsError(`${where} has dtype ${describe(dtype!)}; safetensors knows ${Object.keys(DTYPE_BITS).join(' ')}`);
  }
  if (!Array.isArray(shape) || !shape.every(isU64)) {
    throw new SafetensorsError(`${where} has a shape that is not a list of unsigned integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isU64)) {
    throw new SafetensorsError(`${where} needs data_offsets [begin, end] as two unsigned integers`);
  }
  const u = (v: JsonValue): bigint => (v as JsonNumber).u64!;
  return { name, dtype, shape: shape.map(u), begin: u(offsets[0]!), end: u(offsets[1]!) };
}

/** serde's Option<HashMap<String, String>>: null, or an object of strings (a repeated key replaces the earlier). */
function parseMetadata(value: JsonValue): Record<string, string> | null {
  if (value === null) return null;
  if (!isJsonObject(value)) throw new SafetensorsError('__metadata__ must be an object of strings, or null');
  const out: Record<string, string> = Object.create(null);
  for (const [k, v] of value.entries) {
    if (typeof v !== 'string') throw new SafetensorsError(`__metadata__["${k.slice(0, 80)}"] must be a string`);
    out[k] = v;
  }
  // A plain object again, with members in first-seen order, as the table stores it.
  return Object.fromEntries(Object.entries(out));
}

function isU64(v: JsonValue): boolean {
  return isJsonNumber(v) && v.u64 !== null;
}

function cmp(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function formatShape(shape: bigint[]): string {
  return `[${shape.join(', ')}]`;
}

function describe(v: JsonValue): string {
  if (typeof v === 'string') return JSON.stringify(v.slice(0, 40));
  if (isJsonNumber(v)) return 'a number';
  if (Array.isArray(v)) return 'a list';
  if (isJsonObject(v)) return 'an object';
  return String(v);
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
