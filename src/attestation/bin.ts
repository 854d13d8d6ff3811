import { EvidenceFormatError } from '../errors.js';

/**
 * Bounds-checked little-endian reader for TEE structures. Every overrun becomes an
 * EvidenceFormatError naming the structure, the field and the offset, never a RangeError.
 */
export class ByteReader {
  readonly view: DataView;
  offset = 0;

  constructor(
    readonly bytes: Uint8Array,
    readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.bytes.length - this.offset;
  }

  private need(n: number, field: string): number {
    if (n < 0 || this.offset + n > this.bytes.length) {
      throw new EvidenceFormatError(
        `${this.what} is truncated: field ${field} needs ${n} bytes at offset ${this.offset}, ` +
          `only ${Math.max(0, this.bytes.length - this.offset)} left; the evidence is incomplete or not a ${this.what}`,
      );
    }
    const at = this.offset;
    this.offset += n;
    return at;
  }

  u8(field: string): number {
    return this.view.getUint8(this.need(1, field));
  }
  u16(field: string): number {
    return this.view.getUint16(this.need(2, field), true);
  }
  u32(field: string): number {
    return this.view.getUint32(this.need(4, field), true);
  }
  u64(field: string): bigint {
    return this.view.getBigUint64(this.need(8, field), true);
  }
  u16be(field: string): number {
    return this.view.getUint16(this.need(2, field), false);
  }
  u32be(field: string): number {
    return this.view.getUint32(this.need(4, field), false);
  }
  u64be(field: string): bigint {
    return this.view.getBigUint64(this.need(8, field), false);
  }
  /** A copy, so parsed structures never alias the caller's buffer. */
  bytesOf(n: number, field: string): Uint8Array {
    const at = this.need(n, field);
    return this.bytes.slice(at, at + n);
  }
  skip(n: number, field: string): void {
    this.need(n, field);
  }
  seek(offset: number): void {
    if (offset < 0 || offset > this.bytes.length) {
      throw new EvidenceFormatError(`${this.what}: offset ${offset} is outside the ${this.bytes.length}-byte input`);
    }
    this.offset = offset;
  }
}

export function isAllZero(b: Uint8Array): boolean {
  let acc = 0;
  for (const x of b) acc |= x;
  return acc === 0;
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}
