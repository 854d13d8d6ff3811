import 'reflect-metadata';
import { sign, webcrypto, X509Certificate } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { describe, expect, it, vi } from 'vitest';
import { parseNvidiaReport, verifyNvidiaReport } from '../../src/attestation/verifiers/nvidia.js';
import { fingerprint } from '../../src/attestation/certs.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { certs, outcome, typedError, vec } from './helpers.js';
import { pinnedTo } from './pinned-policy.js';

vi.setConfig({ testTimeout: 60_000 });

const REPORT = 'nvidia/hopper_report_1.bin';
const FWID = 'f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d';

/** The real report re-signed by a test GPU key under a test root; `dropOpaqueFwid` renames the report's FWID field. */
async function resigned(o: { certFwid: boolean; dropOpaqueFwid?: boolean }) {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
  const gen = async () => (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const [rootK, leafK] = [await gen(), await gen()];
  const validity = { notBefore: new Date('2024-01-01T00:00:00Z'), notAfter: new Date('2034-01-01T00:00:00Z'), signingAlgorithm: alg };
  const root = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=Test Device Identity CA', keys: rootK, extensions: [new px509.BasicConstraintsExtension(true, undefined, true)], ...validity });
  // TcbInfo-like extension whose last 48 bytes are the FWID, as the verifier reads it.
  const ext = o.certFwid ? [new px509.Extension('2.23.133.5.4.1', false, new Uint8Array([0x30, 0x32, 0x04, 0x30, ...Buffer.from(FWID, 'hex')]))] : [];
  const leaf = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: 'CN=Test GSP FMC LF', issuer: root.subject, publicKey: leafK.publicKey, signingKey: rootK.privateKey, extensions: ext, ...validity });
  const bytes = vec(REPORT);
  const body = bytes.slice(0, bytes.length - 96);
  if (o.dropOpaqueFwid) {
    const r = parseNvidiaReport(bytes);
    const opaqueLen = r.opaque.reduce((n, f) => n + 4 + f.value.length, 0);
    let at = body.length - opaqueLen;
    for (const f of r.opaque) {
      if (f.type === 20) new DataView(body.buffer).setUint16(at, 0x99, true);
      at += 4 + f.value.length;
    }
  }
  const pk = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafK.privateKey));
  const sig = sign('sha384', body, { key: pk, format: 'der', type: 'pkcs8', dsaEncoding: 'ieee-p1363' });
  const chain = [leaf, root].map((c) => new X509Certificate(Buffer.from(c.rawData)));
  return { report: new Uint8Array([...body, ...sig]), chain, trustedRoots: [fingerprint(chain[1]!)] };
}

describe('NVIDIA: FWID and report data', () => {
  it('the FWID must be on both sides: a certificate without the FWID extension or a report without the FWID field fails', async () => {
    const ok = await resigned({ certFwid: true });
    expect(outcome(() => verifyNvidiaReport(ok.report, { certificates: ok.chain, trustedRoots: ok.trustedRoots }))).toBe('accepted');
    const noExt = await resigned({ certFwid: false });
    let e = await typedError(() => verifyNvidiaReport(noExt.report, { certificates: noExt.chain, trustedRoots: noExt.trustedRoots }), ['ERR_EVIDENCE_CHAIN']);
    expect(e.message).toMatch(/lacks the TCG DICE FWID extension/);
    const noField = await resigned({ certFwid: true, dropOpaqueFwid: true });
    e = await typedError(() => verifyNvidiaReport(noField.report, { certificates: noField.chain, trustedRoots: noField.trustedRoots }), ['ERR_EVIDENCE_FORMAT']);
    expect(e.message).toMatch(/lacks the FWID field/);
  });

  it('report data is exactly the 32-byte SPDM requester nonce', () => {
    const bytes = vec(REPORT);
    const r = verifyNvidiaReport(bytes, { certificates: certs('nvidia/hopper_cert_chain_1.pem') });
    expect(r.claims.reportData).toHaveLength(64);
    expect(r.claims.reportData).toBe(Buffer.from(bytes.subarray(4, 36)).toString('hex'));
    expect(r.claims.reportData).toBe('931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb');
  });
});

describe('NVIDIA: debug state (CC on vs DevTools) is not in the report', () => {
  const real = () => verifyNvidiaReport(vec(REPORT), { certificates: certs('nvidia/hopper_cert_chain_1.pem') }).claims;

  it('the claims do not say "not debug": debug is assumed true and marked as not attested', () => {
    const c = real();
    expect(c.debugAttested).toBe(false);
    expect(c.debug).toBe(true);
  });

  it('a policy allows it only by pinning every measurement block (or by allowDebug); an empty section denies on both counts', () => {
    const c = real();
    const { policy, opts } = pinnedTo(c);
    const all = evaluatePolicy(policy, c, opts);
    expect(all.reasons).toEqual([]);
    expect(all.checks.find((k) => k.check === 'policy.debug')?.detail).toMatch(/does not attest its debug state; all 64 measurements it carries are pinned/);
    // m2 alone matches, but 63 blocks are free: the DevTools question is left open, so denied.
    const one = validatePolicy({ version: 1, tees: { nvidia: { measurements: { m2: [c.measurements.m2!] } } } });
    const r = evaluatePolicy(one, c, opts).reasons;
    expect(r).toEqual([expect.stringMatching(/^policy\.debug: "nvidia" evidence does not attest its debug state .*unpinned: m1, m3, m4, m5, m6, m7, m8, m9, \.\.\. \(63 in all\)/)]);
    // All but the last block: still denied.
    const { m64: _dropped, ...rest } = policy.tees.nvidia!.measurements!;
    const most = validatePolicy({ version: 1, tees: { nvidia: { measurements: rest } } });
    expect(evaluatePolicy(most, c, opts).reasons).toEqual([expect.stringMatching(/^policy\.debug: .*unpinned: m64\)/)]);
    // allowDebug is the explicit, development-only way to accept an unknown debug state.
    const dev = validatePolicy({ version: 1, tees: { nvidia: { measurements: { m2: [c.measurements.m2!] }, allowDebug: true } } });
    expect(evaluatePolicy(dev, c, opts).reasons).toEqual([]);
    const empty = validatePolicy({ version: 1, tees: { nvidia: {} } });
    expect(evaluatePolicy(empty, c, opts).reasons).toEqual([expect.stringMatching(/^policy\.debug: /), expect.stringMatching(/^policy\.measurements: /)]);
  });

  it('evidence whose debug state is attested is judged by its flag as before', () => {
    const c = { ...real(), debug: false, debugAttested: undefined };
    const one = validatePolicy({ version: 1, tees: { nvidia: { measurements: { m2: [c.measurements.m2!] } } } });
    const v = evaluatePolicy(one, c, pinnedTo(c).opts);
    expect(v.reasons).toEqual([]);
    expect(v.checks.find((k) => k.check === 'policy.debug')?.detail).toBe('not in debug mode');
  });
});
