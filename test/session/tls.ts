/** A throwaway CA and a server certificate for 127.0.0.1, as `broker init` makes them (tests only). */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as px509 from '@peculiar/x509';

export interface TestPki {
  caPem: string;
  certPem: string;
  keyPem: string;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.trimEnd()}\n-----END ${label}-----\n`;
}

export async function makePki(name = 'Test Broker CA'): Promise<TestPki> {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const gen = async () => (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const [caK, serverK] = [await gen(), await gen()];
  const validity = { notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 24 * 3600_000), signingAlgorithm: ALG };
  const ca = await px509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    keys: caK,
    extensions: [new px509.BasicConstraintsExtension(true, undefined, true), new px509.KeyUsagesExtension(px509.KeyUsageFlags.keyCertSign, true)],
    ...validity,
  });
  const server = await px509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=127.0.0.1',
    issuer: ca.subject,
    publicKey: serverK.publicKey,
    signingKey: caK.privateKey,
    extensions: [
      new px509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }, { type: 'dns', value: 'localhost' }]),
      new px509.ExtendedKeyUsageExtension([px509.ExtendedKeyUsage.serverAuth]),
    ],
    ...validity,
  });
  return { caPem: ca.toString('pem'), certPem: server.toString('pem'), keyPem: pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', serverK.privateKey)) };
}
