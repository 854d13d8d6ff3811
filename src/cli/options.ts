import { InvalidArgumentError } from '../errors.js';
import { Suite, type SuiteId } from '../format/constants.js';

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3 };

/** "4MiB", "4M", "512KiB", "65536" -> bytes. Bare K/M/G are binary, as people mean for chunk sizes. */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new InvalidArgumentError(`${what} "${text}" is not a size like 4MiB, 512KiB or 65536`);
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${what} "${text}" is too large`);
  return n;
}

export function parseSuite(text: string): SuiteId {
  if (text === 'aes-256-gcm') return Suite.AES_256_GCM;
  if (text === 'chacha20-poly1305') return Suite.CHACHA20_POLY1305;
  throw new InvalidArgumentError(`--suite must be aes-256-gcm or chacha20-poly1305, got "${text}"`);
}

export function parseThreads(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError(`--threads must be an integer from 1 to 256, got "${text}"`);
  return n;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
