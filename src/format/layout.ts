import { FormatError } from '../errors.js';
import { TAG_LENGTH } from './constants.js';

/** Where things are in a sealed file, from the public header alone (section 2 and 5.2). */
export interface Layout {
  headerLength: number;
  tableLength: number;
  chunkSize: number;
  payloadLength: number;
}

export function chunkCount(payloadLength: number, chunkSize: number): number {
  return Math.max(1, Math.ceil(payloadLength / chunkSize));
}

export function expectedFileLength(l: Layout): number {
  const total = l.headerLength + l.tableLength + l.payloadLength + TAG_LENGTH * chunkCount(l.payloadLength, l.chunkSize);
  if (!Number.isSafeInteger(total)) throw new FormatError('sealed file length overflows: the header lengths are corrupt');
  return total;
}

export function payloadStart(l: Layout): number {
  return l.headerLength + l.tableLength;
}

/** Plaintext length of chunk i. */
export function chunkPlainLength(l: Layout, index: number): number {
  const start = index * l.chunkSize;
  return Math.max(0, Math.min(l.chunkSize, l.payloadLength - start));
}

/** File offset of sealed chunk i (ciphertext followed by its tag). */
export function chunkFileOffset(l: Layout, index: number): number {
  return payloadStart(l) + index * (l.chunkSize + TAG_LENGTH);
}

/** Chunks [first, last] (inclusive) that hold payload bytes [begin, end); empty ranges touch no chunk. */
export function chunksCovering(l: Layout, begin: number, end: number): { first: number; last: number } | null {
  if (end <= begin) return null;
  return { first: Math.floor(begin / l.chunkSize), last: Math.floor((end - 1) / l.chunkSize) };
}
