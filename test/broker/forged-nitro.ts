/**
 * A Nitro-shaped attestation document under a test root (root -> intermediate -> leaf, P-384), with
 * the nonce / user_data the test chooses: real documents cannot carry a fresh binding; this one can,
 * and verifies only where the test root is trusted (verifyOptions.trustedRoots.nitro).
 */
import 'reflect-metadata';
import { sign, webcrypto, X509Certificate } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { encode as cborEncode } from 'cborg';
import { fingerprint } from '../../src/attestation/certs.js';

export const TEST_NITRO_PCR0 = '0a'.repeat(48);

export interface TestNitro {
  rootFingerprint: string;
  document(o: { timestampMs: number; nonce?: Uint8Array; userData?: Uint8Array }): Uint8Array;
}

export async function testNitro(): Promise<TestNitro> {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
  const gen = async () => (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const [rootK, midK, leafK] = [await gen(), await gen(), await gen()];
  const validity = { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2040-01-01T00:00:00Z'), signingAlgorithm: alg };
  const ca = [new px509.BasicConstraintsExtension(true, undefined, true)];
  const root = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=test.nitro-enclaves', keys: rootK, extensions: ca, ...validity });
  const mid = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: 'CN=zonal.test.nitro-enclaves', issuer: root.subject, publicKey: midK.publicKey, signingKey: rootK.privateKey, extensions: ca, ...validity });
  const leaf = await px509.X509CertificateGenerator.create({ serialNumber: '03', subject: 'CN=i-test-enc', issuer: mid.subject, publicKey: leafK.publicKey, signingKey: midK.privateKey, ...validity });
  const key = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafK.privateKey));
  const raw = (c: px509.X509Certificate) => new Uint8Array(c.rawData);
  return {
    rootFingerprint: fingerprint(new X509Certificate(Buffer.from(root.rawData))),
    document({ timestampMs, nonce, userData }) {
      const pcrs = new Map<number, Uint8Array>();
      pcrs.set(0, new Uint8Array(Buffer.from(TEST_NITRO_PCR0, 'hex')));
      for (let i = 1; i < 16; i++) pcrs.set(i, new Uint8Array(48).fill(i));
      const payload = cborEncode(
        new Map<string, unknown>([
          ['module_id', 'i-test-enc'],
          ['digest', 'SHA384'],
          ['timestamp', timestampMs],
          ['pcrs', pcrs],
          ['certificate', raw(leaf)],
          ['cabundle', [raw(root), raw(mid)]],
          ['public_key', null],
          ['user_data', userData ?? null],
          ['nonce', nonce ?? null],
        ]),
      );
      const protectedHeader = cborEncode(new Map([[1, -35]]));
      const tbs = cborEncode(['Signature1', protectedHeader, new Uint8Array(0), payload]);
      const signature = sign('sha384', tbs, { key, format: 'der', type: 'pkcs8', dsaEncoding: 'ieee-p1363' });
      return cborEncode([protectedHeader, new Map(), payload, new Uint8Array(signature)]);
    },
  };
}
