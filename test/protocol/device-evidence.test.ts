import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeAdditionalEvidence, encodeNvidiaAdditionalEvidence } from '../../src/protocol/device-evidence.js';
import { EvidenceFormatError } from '../../src/errors.js';
import { vec } from '../attestation/helpers.js';
import { fuzzRuns } from '../helpers/fuzz.js';

const report = () => vec('nvidia/hopper_report_1.bin');
const chain = () => Buffer.from(vec('nvidia/hopper_cert_chain_1.pem')).toString('utf8');

describe("additional_evidence in Trustee's nvidia shape", () => {
  it('round-trips: hex evidence (what Trustee\'s attester sends) or base64, the PEM chain as DER in order', () => {
    expect(decodeAdditionalEvidence('')).toEqual([]);
    const text = encodeNvidiaAdditionalEvidence([{ evidence: report(), certificatesPem: chain(), uuid: 'GPU-1' }]);
    const [d] = decodeAdditionalEvidence(text);
    expect(d).toMatchObject({ tee: 'nvidia', type: 'nvidia', index: 0, arch: 'Hopper', uuid: 'GPU-1', path: 'tee-evidence.additional_evidence.nvidia.device_evidence_list[0]' });
    expect(Buffer.from(d!.evidence)).toEqual(Buffer.from(report()));
    expect(d!.certificates.length).toBeGreaterThanOrEqual(2);
    const b64 = JSON.stringify({ nvidia: { device_evidence_list: [{ arch: 'Hopper', evidence: Buffer.from(report()).toString('base64'), certificate: Buffer.from(chain()).toString('base64') }] } });
    const [e] = decodeAdditionalEvidence(b64);
    expect(Buffer.from(e!.evidence)).toEqual(Buffer.from(report()));
    expect(e!.uuid).toBe('unknown');
  });

  it('refuses, naming the member: unknown devices and members, other architectures, empty lists, non-PEM chains', () => {
    const entry = { arch: 'HOPPER', evidence: 'aabb', certificate: Buffer.from(chain()).toString('base64') };
    const cases: [string, RegExp][] = [
      ['{}', /is an empty object: send ""/],
      ['[]', /must be JSON text of an object/],
      ['{"snp": {}}', /additional_evidence\.snp is not a device this broker verifies/],
      ['{"__proto__": {}}', /additional_evidence\.__proto__ is not a device/],
      [JSON.stringify({ nvidia: { device_evidence_list: [] } }), /must hold 1 to 16 devices/],
      [JSON.stringify({ nvidia: { device_evidence_list: [entry], extra: 1 } }), /nvidia\.extra is not a member/],
      [JSON.stringify({ nvidia: { device_evidence_list: [{ ...entry, arch: 'LS10' }] } }), /arch is LS10: only Hopper/],
      [JSON.stringify({ nvidia: { device_evidence_list: [{ ...entry, arch: 'hopper' }] } }), /arch must be "HOPPER"/],
      [JSON.stringify({ nvidia: { device_evidence_list: [{ ...entry, evidence: '' }] } }), /evidence is empty/],
      [JSON.stringify({ nvidia: { device_evidence_list: [{ ...entry, evidence: 'not base64!' }] } }), /evidence must be standard base64/],
      [JSON.stringify({ nvidia: { device_evidence_list: [{ ...entry, certificate: Buffer.from('hello').toString('base64') }] } }), /certificate must be base64 of a PEM certificate chain/],
      [JSON.stringify({ nvidia: { device_evidence_list: [{ ...entry, certificate: Buffer.from(`${chain()}junk`).toString('base64') }] } }), /holds text outside its PEM/],
      [JSON.stringify({ nvidia: { device_evidence_list: Array(17).fill(entry) } }), /must hold 1 to 16 devices, got 17/],
    ];
    for (const [text, re] of cases) expect(() => decodeAdditionalEvidence(text), text.slice(0, 80)).toThrow(re);
  });

  it('random text and random JSON never throw anything but EvidenceFormatError', () => {
    const check = (text: string) => {
      try {
        decodeAdditionalEvidence(text);
      } catch (err) {
        if (!(err instanceof EvidenceFormatError)) throw err;
      }
    };
    fc.assert(fc.property(fc.string(), check), { numRuns: fuzzRuns(300) });
    const entry = fc.record({ arch: fc.oneof(fc.constant('HOPPER'), fc.string()), uuid: fc.anything(), evidence: fc.oneof(fc.stringMatching(/^[0-9a-f]*$/), fc.base64String(), fc.anything()), certificate: fc.oneof(fc.base64String(), fc.anything()) }, { requiredKeys: [] });
    const shape = fc.oneof(fc.anything(), fc.record({ nvidia: fc.oneof(fc.anything(), fc.record({ device_evidence_list: fc.oneof(fc.array(entry, { maxLength: 3 }), fc.anything()) })) }));
    fc.assert(fc.property(shape, (v) => check(JSON.stringify(v) ?? '')), { numRuns: fuzzRuns(300) });
    // Our simulated-nvidia extension: the same promise.
    const simEntry = fc.record({ uuid: fc.anything(), evidence: fc.oneof(fc.base64String(), fc.anything()), arch: fc.anything() }, { requiredKeys: [] });
    const sim = fc.record({ 'simulated-nvidia': fc.oneof(fc.anything(), fc.record({ device_evidence_list: fc.oneof(fc.array(simEntry, { maxLength: 3 }), fc.anything()) })) });
    fc.assert(fc.property(sim, (v) => check(JSON.stringify(v) ?? '')), { numRuns: fuzzRuns(300) });
  });
});
