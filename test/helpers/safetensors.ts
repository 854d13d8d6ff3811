import { writeFileSync } from 'node:fs';
import type { Dtype } from '../../src/format/constants.js';
import { tensorByteLength } from '../../src/format/table.js';

export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Defaults to deterministic pseudo-random bytes. */
  data?: Uint8Array;
}

/** Deterministic bytes (xorshift): reproducible test data without committing big files. */
export function patternBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export function byteLength(t: TensorSpec): number {
  return tensorByteLength(t.dtype, t.shape);
}

/** Serialize tensors the way the safetensors library does: 8-byte LE length, JSON header padded with spaces to 8 bytes, data. */
export function buildSafetensors(tensors: TensorSpec[], metadata?: Record<string, string>): { bytes: Uint8Array; data: Map<string, Uint8Array> } {
  const header: Record<string, unknown> = {};
  if (metadata) header['__metadata__'] = metadata;
  const data = new Map<string, Uint8Array>();
  let offset = 0;
  tensors.forEach((t, i) => {
    const bytes = t.data ?? patternBytes(byteLength(t), i + 7);
    if (bytes.length !== byteLength(t)) throw new Error(`test data for ${t.name} has the wrong length`);
    data.set(t.name, bytes);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
  });
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const jsonBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + jsonBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(jsonBytes.length), true);
  out.set(jsonBytes, 8);
  let at = 8 + jsonBytes.length;
  for (const t of tensors) {
    const bytes = data.get(t.name)!;
    out.set(bytes, at);
    at += bytes.length;
  }
  return { bytes: out, data };
}

export function writeSafetensors(path: string, tensors: TensorSpec[], metadata?: Record<string, string>): Map<string, Uint8Array> {
  const { bytes, data } = buildSafetensors(tensors, metadata);
  writeFileSync(path, bytes);
  return data;
}
