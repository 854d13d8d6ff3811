/**
 * Transport checks shared by the key-release client (src/session) and HTTP sources (src/sources):
 * what counts as loopback for plain HTTP, and a `ca` option that must be a real PEM certificate.
 */
import { X509Certificate } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';
import { isIP, nodeNet } from './net-builtins.js';

let loopbackList: import('node:net').BlockList | undefined;

/**
 * A loopback address or "localhost", as plain HTTP requires; the one check the session, the HTTP
 * sources and the broker share. Addresses go through node:net's BlockList, so every spelling counts:
 * 127.0.0.0/8, ::1 in any form (0:0:0:0:0:0:0:1, [::1]), and IPv4-mapped IPv6 of 127.0.0.0/8
 * (::ffff:127.0.0.1, ::ffff:7f00:1, which a dual-stack socket reaches as IPv4 loopback). Not
 * loopback: other names, ::127.0.0.1 (IPv4-compatible, deprecated), NAT64 forms, zone ids.
 */
export function isLoopback(hostname: string): boolean {
  const host = (hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname).toLowerCase();
  if (host === 'localhost') return true;
  // A zone id names an interface, not an address: nothing to trust as loopback.
  if (host.includes('%')) return false;
  const family = isIP(host);
  if (family === 0) return false;
  if (!loopbackList) {
    const list = new (nodeNet().BlockList)();
    list.addSubnet('127.0.0.0', 8, 'ipv4');
    list.addAddress('::1', 'ipv6');
    loopbackList = list;
  }
  try {
    // An IPv6 check also matches IPv4-mapped addresses against the IPv4 subnet.
    return loopbackList.check(host, family === 4 ? 'ipv4' : 'ipv6');
  } catch {
    return false; // a form BlockList does not take is not trusted as loopback
  }
}

/** The `ca` option as PEM text, refused unless it parses as an X.509 certificate. */
export function checkCaPem(ca: string | Uint8Array, what = 'a CA certificate'): string {
  const pem = typeof ca === 'string' ? ca : Buffer.from(ca.buffer, ca.byteOffset, ca.byteLength).toString('utf8');
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new InvalidArgumentError(`ca must be PEM text holding ${what} (-----BEGIN CERTIFICATE-----)`);
  try {
    new X509Certificate(pem);
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
