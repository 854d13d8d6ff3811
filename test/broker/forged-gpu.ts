/**
 * A Hopper GPU for tests: the real SPDM report (test/vectors/attestation/nvidia) with its requester
 * nonce replaced by a chosen one and re-signed by a test device key under a test root, whose leaf
 * carries the report's FWID. Real NVIDIA reports cannot hold a fresh nonce; this one can, and the
 * verifier accepts it only where the test root is trusted (verifyOptions.trustedRoots.nvidia).
 */
import 'reflect-metadata';
import { sign, webcrypto, X509Certificate } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { fingerprint } from '../../src/attestation/certs.js';
import { vec } from '../attestation/helpers.js';

/** The FWID in the real report's opaque data (type 20), which the leaf certificate must carry too. */
const FWID = 'f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d';
/** GET_MEASUREMENTS request: version, code, param1, param2, then the 32-byte nonce. */
const NONCE_AT = 4;

export interface TestGpu {
  /** PEM of leaf then root. */
  chainPem: string;
  rootFingerprint: string;
  /** The real report with `nonce` as its requester nonce, signed by the test device key. */
  report(nonce: Uint8Array): Uint8Array;
}

export async function testGpu(): Promise<TestGpu> {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
  const gen = async () => (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const [rootK, leafK] = [await gen(), await gen()];
  const validity = { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2040-01-01T00:00:00Z'), signingAlgorithm: alg };
  const root = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=Test Device Identity CA', keys: rootK, extensions: [new px509.BasicConstraintsExtension(true, undefined, true)], ...validity });
  const fwid = new px509.Extension('2.23.133.5.4.1', false, new Uint8Array([0x30, 0x32, 0x04, 0x30, ...Buffer.from(FWID, 'hex')]));
  const leaf = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: 'CN=Test GH100 GSP FMC LF', issuer: root.subject, publicKey: leafK.publicKey, signingKey: rootK.privateKey, extensions: [fwid], ...validity });
  const pk = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafK.privateKey));
  const real = vec('nvidia/hopper_report_1.bin');
  return {
    chainPem: `${leaf.toString('pem')}\n${root.toString('pem')}\n`,
    rootFingerprint: fingerprint(new X509Certificate(Buffer.from(root.rawData))),
    report(nonce: Uint8Array): Uint8Array {
      if (nonce.length !== 32) throw new Error('an SPDM nonce is 32 bytes');
      const body = real.slice(0, real.length - 96);
      body.set(nonce, NONCE_AT);
      const sig = sign('sha384', body, { key: pk, format: 'der', type: 'pkcs8', dsaEncoding: 'ieee-p1363' });
      return new Uint8Array([...body, ...sig]);
    },
  };
}
