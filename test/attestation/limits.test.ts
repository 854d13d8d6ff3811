import { describe, expect, it } from 'vitest';
import { MAX_TDX_QUOTE, parseTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import { MAX_COLLATERAL_FILE, parseTdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { MAX_CERTIFICATE_INPUT, MAX_CERTIFICATES, parseCertificates } from '../../src/attestation/certs.js';
import { normalSerial } from '../../src/attestation/der.js';
import { typedError, vec } from './helpers.js';

describe('size limits on TDX input and certificate chains', () => {
  it('a TDX quote padded past the limit is refused (zero padding up to it is still accepted)', async () => {
    const q = vec('tdx/trustee_quote4_v4.bin');
    const padded = (n: number) => {
      const b = new Uint8Array(n);
      b.set(q);
      return b;
    };
    expect(parseTdxQuote(padded(MAX_TDX_QUOTE)).trailing).toBe(MAX_TDX_QUOTE - q.length);
    const e = await typedError(() => parseTdxQuote(padded(16 * 1024 * 1024)), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/over the 65536-byte limit/);
  });

  it('a PEM or DER bundle over the size or count limit is refused before parsing', async () => {
    const pem = Buffer.from(vec('sev-snp/ask_ark_milan.pem')).toString('latin1');
    expect(parseCertificates(pem.repeat(MAX_CERTIFICATES / 2), 'ok.pem')).toHaveLength(MAX_CERTIFICATES);
    let e = await typedError(() => parseCertificates(pem.repeat(MAX_CERTIFICATES / 2 + 1), 'many.pem'), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/holds 34 certificates, over the limit of 32/);
    e = await typedError(() => parseCertificates(new Uint8Array(MAX_CERTIFICATE_INPUT + 1), 'big.der'), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/over the 262144-byte limit/);
    const der = vec('sev-snp/gsg_milan_vcek.der');
    const many = new Uint8Array(der.length * (MAX_CERTIFICATES + 1));
    for (let i = 0; i <= MAX_CERTIFICATES; i++) many.set(der, i * der.length);
    e = await typedError(() => parseCertificates(many, 'many.der'), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/more than 32 certificates/);
  });

  it('a TDX collateral file over the limit is refused', async () => {
    const big = new Uint8Array(MAX_COLLATERAL_FILE + 1).fill(0x20);
    const e = await typedError(() => parseTdxCollateral([{ name: 'huge.json', bytes: big }]), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/huge.json is 1048577 bytes, over the 1048576-byte limit/);
  });
});

describe('CRL serial numbers', () => {
  it('compare equal whatever the padding or hex case', () => {
    expect(normalSerial('000B')).toBe(normalSerial(new Uint8Array([0x0b])));
    expect(normalSerial('B')).toBe(normalSerial(new Uint8Array([0x00, 0x0b])));
    expect(normalSerial(new Uint8Array([0x00, 0xef, 0x01]))).toBe(normalSerial('EF01'));
    expect(normalSerial(new Uint8Array([0]))).toBe('0');
    expect(normalSerial('0c')).not.toBe(normalSerial('0b'));
  });
});
