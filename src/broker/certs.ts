/**
 * The broker's own CA and HTTPS certificate (ECDSA P-256, SHA-256), made at `broker init`.
 * Loaded only by init (dynamic import): @peculiar/x509 and reflect-metadata take a while to load.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

type X509Crypto = NonNullable<Parameters<typeof x509.X509CertificateGenerator.create>[1]>;
type KeyPair = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'];

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const DAY = 86_400_000;
export const CA_VALIDITY_DAYS = 3650;
export const SERVER_VALIDITY_DAYS = 3649;

export interface BrokerCertificates {
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
}

/** A positive 128-bit serial number in hex (the top bit clear, not zero). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/**
 * A CA (path length 0: it signs the server certificate only) and a server certificate for
 * `names` (DNS names and IP addresses), with their PKCS#8 private keys, all PEM.
 */
export async function makeBrokerCertificates(names: readonly string[], now = new Date()): Promise<BrokerCertificates> {
  const crypto = webcrypto as unknown as X509Crypto;
  const notBefore = new Date(now.getTime() - 5 * 60_000); // clock skew between broker and clients
  const caKeys = (await crypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as KeyPair;
  const id = randomBytes(4).toString('hex');
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name: `CN=sealed-tensors broker CA ${id}`,
      notBefore,
      notAfter: new Date(notBefore.getTime() + CA_VALIDITY_DAYS * DAY),
      signingAlgorithm: ALG,
      keys: caKeys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  const serverKeys = (await crypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as KeyPair;
  const san = names.map((n) => ({ type: isIP(n) ? ('ip' as const) : ('dns' as const), value: n }));
  const server = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: `CN=${names.find((n) => !isIP(n)) ?? 'localhost'}`,
      issuer: ca.subject,
      notBefore,
      notAfter: new Date(notBefore.getTime() + SERVER_VALIDITY_DAYS * DAY),
      signingAlgorithm: ALG,
      publicKey: serverKeys.publicKey,
      signingKey: caKeys.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        new x509.SubjectAlternativeNameExtension(san, false),
        await x509.SubjectKeyIdentifierExtension.create(serverKeys.publicKey, false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return {
    caCert: ca.toString('pem') + '\n',
    caKey: pem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', caKeys.privateKey)),
    serverCert: server.toString('pem') + '\n',
    serverKey: pem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', serverKeys.privateKey)),
  };
}
