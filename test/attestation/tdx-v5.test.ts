import { describe, expect, it, vi } from 'vitest';
import { EvidenceRevokedError } from '../../src/errors.js';
import { parseTdxQuote, verifyTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import type { TdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { flip, outcomeAsync, typedError } from './helpers.js';
import { buildQuote } from './tdx-build.js';

// Bit-flip and property loops run thousands of verifications; on a shared 2-core machine that can take minutes.
vi.setConfig({ testTimeout: 300_000 });

// No real v5 quote is among the vectors, so this builds one the way a TD 1.5 platform does, under a
// test root the verifier is told to trust: it checks the v5 layout (body descriptor, TD15 fields).
const buildV5 = (bodyType: 2 | 3) => buildQuote({ bodyType });

describe('TDX quote v5 (built by the test under a test root)', () => {
  it('TD 1.5 body (type 3): verifies with the test root pinned, exposes MRSERVICETD; refused with the default roots', async () => {
    const { quote, rootFp } = await buildV5(3);
    const q = parseTdxQuote(quote);
    expect(q).toMatchObject({ version: 5, bodyType: 3 });
    const r = await verifyTdxQuote(quote, { now: new Date('2026-01-01T00:00:00Z'), trustedRoots: [rootFp] });
    expect(r.claims.measurement).toBe('11'.repeat(48));
    expect(r.claims.reportData).toBe('22'.repeat(64));
    expect(r.claims.measurements.mrServiceTd).toBe('33'.repeat(48));
    expect(r.claims.tcb).toMatchObject({ tdxModuleSvn: 7, pceSvn: 13, qeSvn: 8 });
    expect(r.claims.platform.fmspc).toBe('00906ed50000');
    const e = await typedError(() => verifyTdxQuote(quote, { now: new Date('2026-01-01T00:00:00Z') }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/Test SGX Root CA.*not a pinned root/);
  });

  it('TD 1.0 body in a v5 quote (type 2) verifies; a body size that disagrees with its type is a format error', async () => {
    const { quote, rootFp } = await buildV5(2);
    expect(await outcomeAsync(() => verifyTdxQuote(quote, { now: new Date('2026-01-01T00:00:00Z'), trustedRoots: [rootFp] }))).toBe('accepted');
    const bad = quote.slice();
    new DataView(bad.buffer).setUint32(50, 648, true);
    await typedError(() => parseTdxQuote(bad), ['ERR_EVIDENCE_FORMAT']);
  });

  it('every bit of the v5 header, body descriptor and TD 1.5 body is signed', async () => {
    const { quote, rootFp, signedLength } = await buildV5(3);
    const now = new Date('2026-01-01T00:00:00Z');
    for (let byte = 0; byte < signedLength; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const o = await outcomeAsync(() => verifyTdxQuote(flip(quote, byte, bit), { now, trustedRoots: [rootFp] }));
        if (!['ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_FORMAT'].includes(o)) throw new Error(`byte ${byte} bit ${bit}: ${o}`);
      }
    }
  });

  it('a CRL from the PCK CA that lists the PCK certificate makes the quote fail as revoked', async () => {
    const { quote, rootFp, crl } = await buildV5(3);
    const now = new Date('2026-01-01T00:00:00Z');
    const clean: TdxCollateral = { crls: [await crl('pck-ca', ['0a', '0b'])], certificates: [] };
    const ok = await verifyTdxQuote(quote, { now, trustedRoots: [rootFp], collateral: clean });
    expect(ok.checks.find((k) => k.check === 'tdx.crl')!.detail).toMatch(/1 certificate\(s\) of the PCK chain checked, none revoked/);
    const revoked: TdxCollateral = { crls: [await crl('pck-ca', ['0a', '03'])], certificates: [] };
    const e = await typedError(() => verifyTdxQuote(quote, { now, trustedRoots: [rootFp], collateral: revoked }), ['ERR_EVIDENCE_CHAIN']);
    expect(e).toBeInstanceOf(EvidenceRevokedError);
    expect(e.message).toMatch(/"Test PCK Certificate" \(serial 03\) is revoked/);
    // An expired CRL is not evidence of non-revocation.
    await typedError(() => verifyTdxQuote(quote, { now: new Date('2026-03-01T00:00:00Z'), trustedRoots: [rootFp], collateral: clean }), ['ERR_EVIDENCE_CHAIN']);
  });
});
