/**
 * Certificates sent with evidence, parsed once per distinct DER. A host's VCEK (or any leaf a
 * platform sends) comes with every session from that host, and parsing it again each time (node's
 * X509Certificate, then the ASN.1 walk for AMD's extensions, which attestation/certs.ts caches per
 * object) was a fifth of the broker's CPU per SEV-SNP attestation. X509Certificate objects are
 * immutable, so equal bytes may share one. Keyed by the DER's SHA-256; least recently used out
 * first, so a flood of distinct certificates costs at most `max` entries.
 */
import { createHash, X509Certificate } from 'node:crypto';

export class CertificateCache {
  private readonly entries = new Map<string, X509Certificate>();

  constructor(readonly max = 64) {}

  /** The certificate for `der`; throws as `new X509Certificate` does for bytes that are not one (nothing is cached then). */
  get(der: Uint8Array): X509Certificate {
    const key = createHash('sha256').update(der).digest('hex');
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const cert = new X509Certificate(Buffer.from(der.buffer, der.byteOffset, der.byteLength));
    if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, cert);
    return cert;
  }

  get size(): number {
    return this.entries.size;
  }
}
