import { nodeCrypto } from './crypto-builtin.js';
import { InvalidArgumentError } from './errors.js';

export function assertBytes(value: unknown, name: string, length?: number): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new InvalidArgumentError(`${name} must be a Uint8Array, got ${describe(value)}`);
  }
  if (length !== undefined && value.length !== length) {
    throw new InvalidArgumentError(`${name} must be ${length} bytes, got ${value.length}`);
  }
}

export function assertSafeInteger(value: unknown, name: string, min: number, max: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}], got ${describe(value)}`);
  }
}

/** Constant-time equality for secrets and MACs; length is not secret. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return nodeCrypto().timingSafeEqual(a, b);
}

/** Overwrite a buffer that held a secret. Best effort on the JS heap: native secure memory is the real home of secrets. */
export function wipe(...buffers: (Uint8Array | undefined | null)[]): void {
  for (const b of buffers) b?.fill(0);
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

export function fromHex(hex: string, name: string): Uint8Array {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new InvalidArgumentError(`${name} must be an even-length hex string`);
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value instanceof Uint8Array) return `Uint8Array(${value.length})`;
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return `string(${value.length})`;
  return typeof value;
}
