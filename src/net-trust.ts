/**
 * Transport checks shared by the key-release client (src/session) and HTTP sources (src/sources):
 * what counts as loopback for plain HTTP, and a `ca` option that must be a real PEM certificate.
 */
import { nodeCrypto } from './crypto-builtin.js';
import { InvalidArgumentError } from './errors.js';
import { isIP } from './net-builtins.js';

/** A loopback literal (or "localhost"), as plain HTTP requires. */
export function isLoopback(hostname: string): boolean {
  const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

/** The `ca` option as PEM text, refused unless it parses as an X.509 certificate. */
export function checkCaPem(ca: string | Uint8Array, what = 'a CA certificate'): string {
  const pem = typeof ca === 'string' ? ca : Buffer.from(ca.buffer, ca.byteOffset, ca.byteLength).toString('utf8');
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new InvalidArgumentError(`ca must be PEM text holding ${what} (-----BEGIN CERTIFICATE-----)`);
  try {
    new (nodeCrypto().X509Certificate)(pem);
  } catch (cause) {
    throw new InvalidArgumentError('ca does not parse as an X.509 certificate in PEM', { cause });
  }
  return pem;
}

/** The host to connect to for `url`: plain HTTP to "localhost" goes to the loopback address itself, not wherever a resolver points it. */
export function connectHost(url: URL): string {
  const literal = url.hostname.replace(/^\[|\]$/g, '');
  return url.protocol === 'http:' && literal === 'localhost' ? '127.0.0.1' : literal;
}
