/**
 * Certificate signatures already verified, so a chain that comes with every attestation (a host's
 * VCEK -> ASK -> ARK, three RSA-4096 verifications) is checked by signature once. Only the link
 * "these exact child bytes carry a valid signature by this exact issuer's key" is remembered,
 * keyed by the SHA-256 of both DERs: a pure function of those bytes. Everything that depends on
 * more than the bytes (validity at `now`, the pinned roots, CA flags, CRLs and their freshness)
 * is still checked on every verification by the caller. Only successes are kept (failures come
 * from whoever sends evidence and would only fill the cache); least recently used out first.
 */
import { createHash, type X509Certificate } from 'node:crypto';

/** Per certificate object (immutable), its DER's SHA-256, so a hit costs no hashing. */
const digests = new WeakMap<X509Certificate, string>();

export function derSha256(cert: X509Certificate): string {
  let d = digests.get(cert);
  if (d === undefined) {
    d = createHash('sha256').update(cert.raw).digest('hex');
    digests.set(cert, d);
  }
  return d;
}

export class SignatureLinkCache {
  private readonly links = new Set<string>();

  constructor(readonly max = 256) {
    if (!Number.isInteger(max) || max < 0) throw new RangeError('max must be a non-negative integer');
  }

  private static key(child: X509Certificate, issuer: X509Certificate): string {
    return `${derSha256(child)}:${derSha256(issuer)}`;
  }

  has(child: X509Certificate, issuer: X509Certificate): boolean {
    const k = SignatureLinkCache.key(child, issuer);
    if (!this.links.has(k)) return false;
    // Most recently used goes last.
    this.links.delete(k);
    this.links.add(k);
    return true;
  }

  /** Records that `child`'s signature verified with `issuer`'s public key. */
  add(child: X509Certificate, issuer: X509Certificate): void {
    if (this.max === 0) return;
    const k = SignatureLinkCache.key(child, issuer);
    this.links.delete(k);
    if (this.links.size >= this.max) {
      const oldest = this.links.values().next();
      if (!oldest.done) this.links.delete(oldest.value);
    }
    this.links.add(k);
  }

  clear(): void {
    this.links.clear();
  }

  get size(): number {
    return this.links.size;
  }
}

/** The process's cache, used by verifyChain (certs.ts). 256 links: a few dozen hosts' chains. */
export const signatureLinks = new SignatureLinkCache(256);
