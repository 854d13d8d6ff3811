import { X509Certificate } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { fingerprint, verifyChain } from '../../src/attestation/certs.js';
import { SignatureLinkCache, signatureLinks } from '../../src/attestation/link-cache.js';
import { certs, flip, typedError } from './helpers.js';

// The VLEK chain (VLEK -> ASVK -> ARK-Milan); the VLEK is valid 2024-12-10 to 2025-12-10.
const chain = certs('sev-snp/trustee_milan_vlek.der', 'sev-snp/asvk_ark_milan_vlek.pem');
const [vlek, , ark] = chain as [X509Certificate, X509Certificate, X509Certificate];
const genoaArk = certs('sev-snp/ask_ark_genoa.pem').find((c) => c.subject.includes('ARK-Genoa'))!;
const opts = (now: string, root = ark) => ({ now: new Date(now), trustedRoots: new Set([fingerprint(root)]), what: 'test chain', hint: 'test' });
const INSIDE = '2025-06-01T00:00:00Z';

afterEach(() => {
  vi.restoreAllMocks();
  signatureLinks.clear();
});

describe('verified signature links (the chain cache)', () => {
  it('a chain seen before is not verified by signature again, and gives the same path', () => {
    signatureLinks.clear();
    const spy = vi.spyOn(X509Certificate.prototype, 'verify');
    const first = verifyChain(vlek, chain, opts(INSIDE));
    const calls = spy.mock.calls.length;
    expect(calls).toBeGreaterThanOrEqual(3); // VLEK by ASVK, ASVK by ARK, ARK by itself
    expect(signatureLinks.size).toBe(3);
    const again = verifyChain(vlek, chain, opts(INSIDE));
    expect(spy.mock.calls.length).toBe(calls);
    expect(again.map(fingerprint)).toEqual(first.map(fingerprint));
  });

  it('a cached chain is still refused outside its validity (expiry is checked against now every time)', async () => {
    verifyChain(vlek, chain, opts(INSIDE));
    expect(signatureLinks.size).toBe(3);
    const err = await typedError(() => verifyChain(vlek, chain, opts('2026-01-01T00:00:00Z')), ['ERR_EVIDENCE_CHAIN']);
    expect(err.message).toMatch(/not valid at 2026-01-01/);
    await typedError(() => verifyChain(vlek, chain, opts('2024-12-01T00:00:00Z')), ['ERR_EVIDENCE_CHAIN']);
  });

  it('a cached chain is still refused when its root is not the pinned one (the pins are checked every time)', async () => {
    verifyChain(vlek, chain, opts(INSIDE));
    const err = await typedError(() => verifyChain(vlek, chain, opts(INSIDE, genoaArk)), ['ERR_EVIDENCE_CHAIN']);
    expect(err.message).toMatch(/not a pinned root/);
  });

  it('a modified certificate is a different entry: verified afresh and refused, and failures are not cached', async () => {
    verifyChain(vlek, chain, opts(INSIDE));
    const size = signatureLinks.size;
    // Flip a bit in the VLEK's signature (its last bytes): same names, different bytes.
    const bad = new X509Certificate(Buffer.from(flip(new Uint8Array(vlek.raw), vlek.raw.length - 2, 0)));
    const err = await typedError(() => verifyChain(bad, chain, opts(INSIDE)), ['ERR_EVIDENCE_CHAIN']);
    expect(err.message).toMatch(/does not verify with its named issuer/);
    expect(signatureLinks.size).toBe(size);
  });

  it('is bounded: the least recently used link goes first', () => {
    const all = [...chain, ...certs('sev-snp/ask_ark_genoa.pem', 'sev-snp/ask_ark_milan.pem', 'sev-snp/gsg_milan_vcek.der')];
    const pool = all.filter((c, i) => all.findIndex((d) => fingerprint(d) === fingerprint(c)) === i); // the Milan ARK is in two files
    const cache = new SignatureLinkCache(4);
    const pairs = pool.flatMap((a) => pool.map((b) => [a, b] as const));
    expect(pairs.length).toBeGreaterThan(20);
    for (const p of pairs.slice(0, 4)) cache.add(...p);
    expect(cache.has(...pairs[0]!)).toBe(true); // now the most recently used
    cache.add(...pairs[4]!);
    expect(cache.has(...pairs[1]!)).toBe(false); // the least recently used went
    expect(cache.has(...pairs[0]!)).toBe(true);
    for (const p of pairs.slice(5)) {
      cache.add(...p);
      expect(cache.size).toBeLessThanOrEqual(4);
    }
    for (const p of pairs.slice(-4)) expect(cache.has(...p)).toBe(true);
    expect(cache.has(...pairs[0]!)).toBe(false);
    expect(cache.size).toBe(4);
    const off = new SignatureLinkCache(0);
    off.add(vlek, ark);
    expect(off.has(vlek, ark)).toBe(false);
    expect(() => new SignatureLinkCache(-1)).toThrow(RangeError);
  });
});
