import { describe, expect, it } from 'vitest';
import { commonName, parseCertificates, toPem } from '../../src/attestation/certs.js';
import { verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { certs, typedError, vec } from './helpers.js';

describe('certificate input forms', () => {
  it('reads one DER, concatenated DER (with trailing zero padding), and multi-block PEM', () => {
    const [ask, ark] = certs('sev-snp/ask_ark_milan.pem');
    const vcek = vec('sev-snp/gsg_milan_vcek.der');
    const concatenated = new Uint8Array([...vcek, ...ask!.raw, ...ark!.raw, 0, 0, 0]);
    const all = parseCertificates(concatenated, 'bundle.der');
    expect(all.map(commonName)).toEqual(['SEV-VCEK', 'SEV-Milan', 'ARK-Milan']);
    // The concatenated DER bundle is enough to verify the Milan report.
    expect(verifySnpReport(vec('sev-snp/gsg_milan_report.bin'), { now: new Date('2022-09-24T01:00:00Z'), certificates: all }).claims.platform.product).toBe('Milan');
    expect(parseCertificates(vec('nvidia/hopper_cert_chain_1.pem'), 'chain.pem')).toHaveLength(5);
    // toPem round-trips, and writes what openssl writes for the same certificate.
    const pem = toPem(ask!.raw);
    expect(parseCertificates(pem, 'ask.pem')[0]!.raw.equals(ask!.raw)).toBe(true);
    expect(Buffer.from(vec('sev-snp/ask_ark_milan.pem')).toString().replace(/\r/g, '')).toContain(pem.trim());
  });

  it('names the file and the problem when the input is not a certificate', async () => {
    let e = await typedError(() => parseCertificates(new Uint8Array([0x30, 0x82, 0x10, 0x00, 1, 2]), 'short.der'), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/short\.der does not hold a readable certificate.*truncated/);
    e = await typedError(() => parseCertificates(new Uint8Array(Buffer.from('hello')), 'notes.txt'), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/notes\.txt/);
    const vcek = vec('sev-snp/gsg_milan_vcek.der');
    await typedError(() => parseCertificates(new Uint8Array([...vcek, 0x99]), 'tail.der'), ['ERR_EVIDENCE_FORMAT']);
  });
});
