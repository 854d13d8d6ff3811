/**
 * A broker on loopback with in-memory stores, a simulated TEE and a settable clock, plus the client
 * side of RCAR written out step by step (the real session is another module's): tests drive each
 * step and tamper with it.
 */
import 'reflect-metadata';
import { createHash, webcrypto } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { exportJWK, exportPKCS8, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { validatePolicy, type Policy } from '../../src/attestation/policy/policy.js';
import { kbsReportData } from '../../src/protocol/binding.js';
import { startBroker, type BrokerOptions, type RunningBroker } from '../../src/broker/server.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from './memory.js';
import { afterEach } from 'vitest';
import { json, send, sessionCookieOf, type Reply, type SendOptions } from './client.js';

export const KEY_ID = 'model-key-1';
export const DATA_KEY = Uint8Array.from({ length: 32 }, (_, i) => (i * 7 + 3) & 0xff);
export const MODELS = [{ bundleId: 'ab'.repeat(16), headerDigest: 'cd'.repeat(32), label: 'test model' }];
export const SIM_MEASUREMENT = createHash('sha384').update('sealed-tensors simulated TEE').digest('hex');

export function simulatedPolicy(measurement = SIM_MEASUREMENT): Policy {
  return validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [measurement] } } } });
}

export interface SigningMaterial {
  privateKey: CryptoKey;
  publicJwk: JWK;
  kid: string;
}

export async function signingKey(kid = 'broker-test-1'): Promise<SigningMaterial> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { privateKey, publicJwk: await exportJWK(publicKey), kid };
}

export interface Fixture {
  broker: RunningBroker;
  url: string;
  keystore: MemoryKeystore;
  policies: MemoryPolicies;
  audit: MemoryAudit;
  tee: SimulatedTee;
  signing: SigningMaterial;
  receipt: SigningMaterial;
  clock: { ms: number };
  ca?: string;
  errors: unknown[];
  send(path: string, opts?: SendOptions): Promise<Reply>;
}

export async function startFixture(over: Partial<BrokerOptions> & { https?: boolean } = {}): Promise<Fixture> {
  const clock = { ms: Date.parse('2026-03-01T12:00:00Z') };
  const now = (): Date => new Date(clock.ms);
  const keystore = new MemoryKeystore();
  const policies = new MemoryPolicies();
  const audit = new MemoryAudit();
  const tee = new SimulatedTee({ now });
  const signing = await signingKey();
  const receipt = await signingKey('broker-test-receipt-1');
  policies.policies.set('default', simulatedPolicy());
  await keystore.add(DATA_KEY, { keyId: KEY_ID, models: MODELS, policy: 'default' });
  const errors: unknown[] = [];
  const { https, ...rest } = over;
  let tls: { cert: string; key: string } | undefined;
  let ca: string | undefined;
  if (https) ({ tls, ca } = await testCertificates());
  const broker = await startBroker({
    keystore,
    policies,
    audit,
    signingKey: signing,
    receiptKey: receipt,
    host: '127.0.0.1',
    port: 0,
    ...(tls ? { tls } : { allowPlainHttpOnLoopback: true }),
    allowSimulated: true,
    simulatedRoots: [tee.rootFingerprint],
    now,
    rateLimit: { burst: 100_000, perSecond: 100_000 },
    onError: (err) => errors.push(err),
    ...rest,
  });
  return {
    broker,
    url: broker.url,
    keystore,
    policies,
    audit,
    tee,
    signing,
    receipt,
    clock,
    ...(ca ? { ca } : {}),
    errors,
    send: (path, opts = {}) => send(broker.url + path, { ...(ca ? { ca } : {}), ...opts }),
  };
}

/** A throwaway CA and a server certificate for 127.0.0.1 (@peculiar/x509 over WebCrypto). */
export async function testCertificates(): Promise<{ tls: { cert: string; key: string }; ca: string }> {
  px509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof px509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const caKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const srvKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const validity = { notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 86_400_000), signingAlgorithm: alg };
  const caCert = await px509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=sealed-tensors test CA',
    keys: caKeys,
    extensions: [new px509.BasicConstraintsExtension(true, 0, true), new px509.KeyUsagesExtension(px509.KeyUsageFlags.keyCertSign, true)],
    ...validity,
  });
  const srvCert = await px509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=127.0.0.1',
    issuer: caCert.subject,
    publicKey: srvKeys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new px509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }]),
      new px509.ExtendedKeyUsageExtension([px509.ExtendedKeyUsage.serverAuth]),
    ],
    ...validity,
  });
  const key = await exportPKCS8(srvKeys.privateKey as unknown as CryptoKey);
  return { tls: { cert: srvCert.toString('pem'), key }, ca: caCert.toString('pem') };
}

/** The session's ephemeral key pair (in the product it lives in the native addon). */
export async function teeKeyPair(kind: 'ec' | 'rsa' = 'ec'): Promise<{ privateKey: CryptoKey; jwk: Record<string, string> }> {
  const alg = kind === 'ec' ? 'ECDH-ES+A256KW' : 'RSA-OAEP-256';
  const { privateKey, publicKey } = await generateKeyPair(alg, kind === 'rsa' ? { modulusLength: 2048 } : {});
  const jwk = (await exportJWK(publicKey)) as Record<string, string>;
  return { privateKey, jwk: { ...jwk, alg } };
}

export async function auth(f: Fixture, tee = 'simulated'): Promise<{ cookie: string; nonce: string; reply: Reply }> {
  const reply = await f.send('/kbs/v0/auth', json({ version: '0.4.0', tee, 'extra-params': '' }));
  if (reply.status !== 200) throw new Error(`auth failed: ${reply.status} ${reply.text}`);
  return { cookie: sessionCookieOf(reply), nonce: (reply.json as { nonce: string }).nonce, reply };
}

/** An attest body with simulated evidence bound to (bindNonce, bindKey); by default what runtime-data says. */
export async function attestBody(f: Fixture, nonce: string, jwk: object, o: { bindNonce?: string; bindKey?: object; tee?: SimulatedTee } = {}): Promise<Record<string, unknown>> {
  const reportData = kbsReportData(o.bindNonce ?? nonce, o.bindKey ?? jwk, '');
  const evidence = await (o.tee ?? f.tee).getEvidence(reportData);
  return {
    'runtime-data': { nonce, 'tee-pubkey': jwk },
    'tee-evidence': { primary_evidence: { evidence: Buffer.from(evidence).toString('base64') }, additional_evidence: '' },
  };
}

export function attest(f: Fixture, cookie: string, body: unknown): Promise<Reply> {
  const j = json(body);
  return f.send('/kbs/v0/attest', { headers: { ...j.headers, cookie: `kbs-session-id=${cookie}` }, body: j.body });
}

export function resource(f: Fixture, o: { cookie?: string; token?: string; path?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (o.cookie) headers.cookie = `kbs-session-id=${o.cookie}`;
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  return f.send(o.path ?? `/kbs/v0/resource/sealed-tensors/data-key/${KEY_ID}`, { method: 'GET', headers });
}

/** A full RCAR up to the token: returns the cookie, the token and the session's private key. */
export async function attested(f: Fixture, kind: 'ec' | 'rsa' = 'ec'): Promise<{ cookie: string; token: string; privateKey: CryptoKey; jwk: Record<string, string> }> {
  const { cookie, nonce } = await auth(f);
  const { privateKey, jwk } = await teeKeyPair(kind);
  const r = await attest(f, cookie, await attestBody(f, nonce, jwk));
  if (r.status !== 200) throw new Error(`attest failed: ${r.status} ${r.text}`);
  return { cookie, token: (r.json as { token: string }).token, privateKey, jwk };
}

/**
 * A `fixture()` that starts a broker and closes it after each test, so a failed test leaves no
 * listening socket behind. Call once at the top level of a test file.
 */
export function useFixtures(): (over?: Parameters<typeof startFixture>[0]) => Promise<Fixture> {
  let started: Fixture[] = [];
  afterEach(async () => {
    await Promise.all(started.map((f) => f.broker.close()));
    started = [];
  });
  return async (over = {}) => {
    const f = await startFixture(over);
    started.push(f);
    return f;
  };
}
