import { EvidenceFormatError } from '../errors.js';

/** One DER TLV. Only what the TEE certificate extensions need: tag, contents, children on demand. */
export interface Tlv {
  tag: number;
  value: Uint8Array;
  /** Offset just past this element in the parent buffer. */
  end: number;
}

export function readTlv(buf: Uint8Array, at: number, what: string): Tlv {
  const fail = (why: string): never => {
    throw new EvidenceFormatError(`${what}: malformed DER at offset ${at} (${why}); the certificate extension is corrupt`);
  };
  if (at + 2 > buf.length) fail('truncated header');
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) fail('multi-byte tags are not used here');
  let len = buf[at + 1]!;
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) fail('unsupported length encoding');
    if (p + n > buf.length) fail('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    p += n;
  }
  if (p + len > buf.length) fail(`length ${len} runs past the end`);
  return { tag, value: buf.subarray(p, p + len), end: p + len };
}

export function readChildren(tlv: Tlv, what: string): Tlv[] {
  const out: Tlv[] = [];
  let at = 0;
  while (at < tlv.value.length) {
    const child = readTlv(tlv.value, at, what);
    out.push(child);
    at = child.end;
  }
  return out;
}

/** Decodes a DER INTEGER that fits a JS number (TCB components are small). */
export function derInteger(tlv: Tlv, what: string): number {
  if (tlv.tag !== 0x02 || tlv.value.length === 0 || tlv.value.length > 6) {
    throw new EvidenceFormatError(`${what}: expected a small DER INTEGER, got tag 0x${tlv.tag.toString(16)} of ${tlv.value.length} bytes`);
  }
  let v = 0;
  for (const b of tlv.value) v = v * 256 + b;
  if (tlv.value[0]! & 0x80) v -= 2 ** (8 * tlv.value.length);
  return v;
}

/** Dotted-decimal form of a DER OBJECT IDENTIFIER's contents. */
export function derOid(tlv: Tlv, what: string): string {
  if (tlv.tag !== 0x06 || tlv.value.length === 0) throw new EvidenceFormatError(`${what}: expected an OBJECT IDENTIFIER`);
  const parts: number[] = [];
  let v = 0;
  for (const b of tlv.value) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift() ?? 0;
  const a = first < 80 ? Math.floor(first / 40) : 2;
  return [a, first - a * 40, ...parts].join('.');
}
