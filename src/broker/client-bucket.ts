/**
 * The unit every per-client limit of the broker counts in (request rate, open connections,
 * pending challenges, grouped audit of malformed requests): an IPv4 address, or the /64 of an IPv6
 * address. One host usually holds a whole /64 (SLAAC, privacy addresses), so counting single IPv6
 * addresses would let it rotate around every limit. IPv4-mapped IPv6 (::ffff:a.b.c.d, what a
 * dual-stack socket reports for an IPv4 peer) counts as its IPv4 address; a zone id is ignored.
 * Parsing is ipaddr.js's, not ours.
 */
import ipaddr from 'ipaddr.js';
import { isIP } from 'node:net';

export function clientBucket(ip: string): string {
  const addr = ip.split('%', 1)[0]!;
  // Only the forms a socket reports (isIP): ipaddr.js also takes legacy IPv4 spellings (0x7f.1).
  const family = isIP(addr);
  if (family === 0) return ip;
  if (family === 4) return addr; // as a socket reports it: already canonical
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    // A trailing dotted quad as two hex groups first: ipaddr.js reads "::a.b.c.d" (IPv4-compatible,
    // which a socket reports for such a peer) as ::ffff:a.b.c.d, an IPv4 bucket per address of ::/64.
    parsed = ipaddr.parse(hexTail(addr));
  } catch {
    return ip;
  }
  if (parsed.kind() !== 'ipv6') return parsed.toString();
  const v6 = parsed as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address().toString();
  return `${v6.parts.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`;
}

/** "x::a.b.c.d" as "x::HHHH:HHHH" (isIP has already checked the quad). */
function hexTail(v6: string): string {
  const m = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(v6);
  if (!m) return v6;
  const [a, b, c, d] = m.slice(1).map(Number) as [number, number, number, number];
  return `${v6.slice(0, m.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}
