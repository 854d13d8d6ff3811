/**
 * Builds the safetensors leniency vectors: one small file per rule of the reference reader (the
 * Rust `safetensors` crate, v0.7.0, which Python's safetensors 0.7.0 uses). README.md gives each
 * rule with the crate's file and line; `test/format/safetensors-vectors.test.ts` seals every file
 * and rebuilds them all, demanding the committed bytes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

export interface SafetensorsVector {
  file: string;
  /** `ok`: the reference loads it and so must `seal`; ERR_SAFETENSORS: the reference rejects it; ERR_UNSUPPORTED: it loads, sealed format v1 cannot hold it. */
  expect: 'ok' | 'ERR_SAFETENSORS' | 'ERR_UNSUPPORTED';
  rule: string;
  tensors?: { name: string; dtype: string; shape: number[]; sha256: string }[];
  metadata?: Record<string, string> | null;
}

const enc = new TextEncoder();

/** A file from a raw header text and data bytes; `lengthOverride` writes another header length. */
function file(header: string | Uint8Array, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const h = typeof header === 'string' ? enc.encode(header) : header;
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const bytes = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const A = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
const B = '{"dtype":"U8","shape":[4],"data_offsets":[4,8]}';
const DATA8 = bytes(8);
const tensorA = { name: 'a', dtype: 'F32', shape: [1], sha256: sha(DATA8.subarray(0, 4)) };
const tensorB = { name: 'b', dtype: 'U8', shape: [4], sha256: sha(DATA8.subarray(4, 8)) };

export function buildSafetensorsVectors(dir: string): SafetensorsVector[] {
  mkdirSync(dir, { recursive: true });
  const list: SafetensorsVector[] = [];
  const add = (name: string, content: Uint8Array, v: Omit<SafetensorsVector, 'file'>): void => {
    writeFileSync(join(dir, `${name}.safetensors`), content);
    list.push({ file: `${name}.safetensors`, ...v });
  };
  const ok = (name: string, header: string, rule: string, tensors = [tensorA, tensorB], metadata: Record<string, string> | null = null, data = DATA8) =>
    add(name, file(header, data), { expect: 'ok', rule, tensors, metadata });
  const bad = (name: string, content: Uint8Array | string, rule: string, data = DATA8) =>
    add(name, typeof content === 'string' ? file(content, data) : content, { expect: 'ERR_SAFETENSORS', rule });

  // Accepted by the reference.
  ok('metadata-null', `{"__metadata__":null,"a":${A},"b":${B}}`, '"__metadata__": null means no metadata');
  ok('keys-any-order', `{"b":${B},"a":${A},"__metadata__":{"format":"pt"}}`, 'members in any order: tensors are sorted by data_offsets, __metadata__ may come last', [tensorA, tensorB], { format: 'pt' });
  ok('header-not-aligned', `{"a":${A},"b":${B}} `, 'the header length need not be a multiple of 8 (this one is 107 bytes)');
  ok('header-trailing-whitespace', `{"a":${A},"b":${B}}\r \t\n`, 'JSON whitespace (space, tab, CR, LF) may pad the header');
  ok('header-leading-whitespace', `\n\t {"a":${A},"b":${B}}`, 'JSON whitespace may also precede the object (the "must start with {" check is commented out)');
  ok('duplicate-tensor-last-wins', `{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":${B},"a":${A}}`, 'a repeated tensor name: the last entry replaces the earlier one (serde flattens tensors into a HashMap)');
  ok('duplicate-metadata-key', `{"__metadata__":{"k":"1","k":"2"},"a":${A},"b":${B}}`, 'a repeated key inside __metadata__: the last value wins (HashMap)', [tensorA, tensorB], { k: '2' });
  ok('unknown-tensor-member', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"note":[1,{"x":null}],"x":1e300},"b":${B}}`, 'unknown members of a tensor entry are ignored (TensorInfo has no deny_unknown_fields)');
  ok('tensor-as-list', `{"a":["F32",[1],[0,4]],"b":${B}}`, 'a tensor entry may be a 3-element list [dtype, shape, data_offsets] (serde derive accepts a struct as a sequence)');
  ok('scalar-and-empty', `{"s":{"dtype":"I32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"I32","shape":[2,0],"data_offsets":[4,4]}}`, 'shape [] is a scalar of one element; a 0-sized tensor has data_offsets [k, k]', [
    { name: 's', dtype: 'I32', shape: [], sha256: sha(DATA8.subarray(0, 4)) },
    { name: 'z', dtype: 'I32', shape: [2, 0], sha256: sha(new Uint8Array(0)) },
  ], null, DATA8.subarray(0, 4));
  ok('no-tensors', '{}', 'a header with no tensors and an empty buffer', [], null, new Uint8Array(0));
  ok('empty-name', `{"":${A},"b":${B}}`, 'the empty string is a tensor name', [{ ...tensorA, name: '' }, tensorB]);
  ok('escaped-name', `{"caf\\u00e9\\ud83d\\ude00":${A},"b":${B}}`, 'names with \\u escapes, surrogate pairs included', [{ ...tensorA, name: 'caf\u00e9\u{1f600}' }, tensorB]);
  ok('sub-byte-dtypes', `{"f4":{"dtype":"F4","shape":[2,2],"data_offsets":[0,2]},"f6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[2,5]}}`, 'F4 and F6_* pack elements below a byte; a tensor of whole bytes loads', [
    { name: 'f4', dtype: 'F4', shape: [2, 2], sha256: sha(bytes(5).subarray(0, 2)) },
    { name: 'f6', dtype: 'F6_E2M3', shape: [4], sha256: sha(bytes(5).subarray(2, 5)) },
  ], null, bytes(5));
  const nest = (n: number): string => '['.repeat(n) + ']'.repeat(n);
  ok('nesting-127', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"deep":${nest(125)}},"b":${B}}`, 'JSON nested 127 levels deep (the root object counts) is within serde_json\'s recursion limit');

  // Rejected by the reference.
  bad('bom', `\ufeff{"a":${A},"b":${B}}`, 'a UTF-8 byte-order mark is not JSON whitespace');
  bad('nul-padded-header', `{"a":${A},"b":${B}}\0\0\0`, 'NUL bytes after the JSON are trailing characters');
  bad('duplicate-metadata', `{"__metadata__":{"k":"1"},"a":${A},"b":${B},"__metadata__":null}`, 'a second __metadata__ is a duplicate field');
  bad('duplicate-field', `{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":${B}}`, 'a repeated member inside a tensor entry is a duplicate field');
  bad('duplicate-tensor-hole', `{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, 'the repeated name replaces the first entry, which leaves a hole at 0..4');
  bad('metadata-not-string', `{"__metadata__":{"k":1},"a":${A},"b":${B}}`, '__metadata__ values must be strings');
  bad('metadata-list', `{"__metadata__":[],"a":${A},"b":${B}}`, '__metadata__ must be an object or null');
  bad('shape-float', `{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]},"b":${B}}`, 'a dimension written 1.0 is a float, not a usize');
  bad('offset-exponent', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4e0]},"b":${B}}`, 'an offset written 4e0 is a float, not a usize');
  bad('offset-negative-zero', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]},"b":${B}}`, '-0 is parsed as a float, not a usize');
  bad('offsets-three', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]},"b":${B}}`, 'data_offsets is a pair: three elements are an invalid length');
  bad('tensor-list-short', `{"a":["F32",[1]],"b":${B}}`, 'a tensor entry as a list needs exactly 3 elements');
  bad('missing-shape', `{"a":{"dtype":"F32","data_offsets":[0,4]},"b":${B}}`, 'dtype, shape and data_offsets are all required');
  bad('unknown-dtype', `{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]},"b":${B}}`, 'dtype names are case-sensitive and from a fixed list');
  bad('overlap', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 'overlapping tensors: each tensor must start where the previous ends (InvalidOffset)', new Uint8Array(6));
  bad('hole', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}`, 'a gap between tensors (InvalidOffset)');
  bad('size-mismatch', `{"a":{"dtype":"I32","shape":[2,2],"data_offsets":[0,8]}}`, 'data_offsets must span exactly the bytes of dtype x shape (TensorInvalidInfo)');
  bad('trailing-bytes', `{"a":${A},"b":${B}}`, 'bytes after the last tensor: the buffer must be exactly covered (MetadataIncompleteBuffer)', bytes(10));
  bad('missing-bytes', `{"a":${A},"b":${B}}`, 'a buffer shorter than the last tensor end (MetadataIncompleteBuffer)', bytes(6));
  bad('shape-overflow', `{"a":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,8]}}`, 'an element count that overflows 64 bits (ValidationOverflow)');
  bad('f4-misaligned', `{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, 'a sub-byte dtype whose size is not whole bytes (MisalignedSlice)', bytes(2));
  bad('header-too-large', file('{}', new Uint8Array(0), 100_000_001n), 'a header length above 100,000,000 (HeaderTooLarge)');
  bad('header-past-end', file(`{"a":${A}}`, bytes(4), 1000n), 'a header length past the end of the file (InvalidHeaderLength)');
  bad('too-short', Uint8Array.of(2, 0, 0), 'fewer than 8 bytes (HeaderTooSmall)');
  bad('header-empty', file('', new Uint8Array(0)), 'an empty header is not JSON (InvalidHeaderDeserialization)');
  bad('not-utf8', file(Uint8Array.of(0x7b, 0xff, 0x7d), new Uint8Array(0)), 'a header that is not UTF-8 (InvalidHeader)');
  bad('not-object', '[]', 'the header must be a JSON object', new Uint8Array(0));
  bad('lone-surrogate', `{"\\ud800":${A},"b":${B}}`, 'a \\u escape of a lone surrogate is refused by serde_json');
  bad('number-out-of-range', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1e400},"b":${B}}`, 'a number beyond f64, even in an ignored member, is refused by serde_json');
  bad('nesting-128', `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"deep":${nest(126)}},"b":${B}}`, 'JSON nested 128 levels deep exceeds serde_json\'s recursion limit');

  // Loaded by the reference, but sealed format v1 cannot hold them.
  const unsupported = (name: string, header: string, rule: string, data: Uint8Array) =>
    add(name, file(header, data), { expect: 'ERR_UNSUPPORTED', rule });
  unsupported('huge-zero-sized', `{"a":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}`, 'a 0-sized tensor may have a dimension up to 2^64 - 1; the sealed table records dimensions up to 2^53 - 1', new Uint8Array(0));
  const rank = Array.from({ length: 65 }, () => 1).join(',');
  unsupported('rank-65', `{"a":{"dtype":"U8","shape":[${rank}],"data_offsets":[0,1]}}`, 'the reference has no limit on dimensions; sealed format v1 allows 64', bytes(1));

  writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify(list, null, 2)}\n`);
  return list;
}
