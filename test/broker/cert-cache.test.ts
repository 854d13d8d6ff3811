import { describe, expect, it } from 'vitest';
import { CertificateCache } from '../../src/broker/cert-cache.js';
import { certs } from '../attestation/helpers.js';

describe('broker certificate cache', () => {
  const [ask, ark] = certs('sev-snp/ask_ark_milan.pem').map((c) => new Uint8Array(c.raw)) as [Uint8Array, Uint8Array];

  it('equal DER gives the same parsed certificate, whatever buffer it arrives in', () => {
    const cache = new CertificateCache(4);
    const a = cache.get(ask);
    const copy = new Uint8Array(ask.length + 8);
    copy.set(ask, 8);
    expect(cache.get(copy.subarray(8))).toBe(a);
    expect(cache.get(ark)).not.toBe(a);
    expect(cache.get(ark).subject).toMatch(/CN=ARK-Milan/);
    expect(cache.size).toBe(2);
  });

  it('is bounded (least recently used out first) and caches nothing for bytes that are not a certificate', () => {
    const cache = new CertificateCache(1);
    const a = cache.get(ask);
    cache.get(ark);
    expect(cache.size).toBe(1);
    expect(cache.get(ask)).not.toBe(a); // evicted, parsed again
    expect(() => cache.get(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]))).toThrow();
    expect(cache.size).toBe(1);
  });
});
