/**
 * The broker folder (`broker init DIR`) and its loader. Layout:
 *
 *   config.json        settings (strict: unknown keys refused), the audit genesis hash, the signing key id
 *   kek                32 random bytes, 0600: the key-encryption key of keystore.json
 *   keystore.json      data keys wrapped under the kek, their models and policies (0600)
 *   ca.pem, ca.key     the broker's own CA (ca.key 0600); clients pass ca.pem (--ca)
 *   server.pem, .key   the HTTPS certificate (localhost, 127.0.0.1, ::1 and --hostname names) and key (0600)
 *   signing.jwk        P-256 private JWK (0600) that signs tokens; signing.pub.jwk its public half
 *   receipt.jwk        P-256 private JWK (0600) that signs release receipts; receipt.pub.jwk its public half
 *   broker.jwks        both public keys as a JWK Set (0644): what a session pins (brokerKey, load --broker-key)
 *   policies/          attestation policies by name (default.json, and sha256-<digest>.json from policy set)
 *   audit.log          hash-chained JSON lines
 *
 * `loadBrokerConfig` checks all of it before a broker serves or a key command runs: every file a
 * regular file owned by this user, none writable by others, secrets readable by this user alone.
 */
import { X509Certificate, createPrivateKey, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { calculateJwkThumbprint, importJWK, type CryptoKey, type JWK } from 'jose';
import { BrokerConfigError } from '../errors.js';
import { MAX_REQUEST_BYTES } from '../protocol/messages.js';
import { checkGuardedFile, readGuardedFile } from './files.js';

export const BROKER_FILES = {
  config: 'config.json',
  kek: 'kek',
  keystore: 'keystore.json',
  caCert: 'ca.pem',
  caKey: 'ca.key',
  serverCert: 'server.pem',
  serverKey: 'server.key',
  signingKey: 'signing.jwk',
  signingPublicKey: 'signing.pub.jwk',
  receiptKey: 'receipt.jwk',
  receiptPublicKey: 'receipt.pub.jwk',
  /** Both public keys as a JWK Set, for sessions to pin (load --broker-key): not read by the broker. */
  publicKeySet: 'broker.jwks',
  policies: 'policies',
  audit: 'audit.log',
} as const;

export const KEK_BYTES = 32;
const CONFIG_KIND = 'sealed-tensors-broker';
const MAX_SMALL_FILE = 64 * 1024;

export type BrokerPaths = { readonly [K in keyof typeof BROKER_FILES]: string };

export function brokerPaths(dir: string): BrokerPaths {
  const abs = resolve(dir);
  return Object.fromEntries(Object.entries(BROKER_FILES).map(([k, v]) => [k, join(abs, v)])) as unknown as BrokerPaths;
}

/** What config.json holds. Every key is required; init writes them all. */
export interface BrokerSettings {
  kind: typeof CONFIG_KIND;
  version: 1;
  /** Default address for `broker serve` (HOST:PORT; port 0 picks a free one). */
  listen: string;
  /** Names the server certificate covers (besides localhost, 127.0.0.1, ::1). */
  hostnames: string[];
  /** Whether any key's policy may accept simulated evidence; policies saying otherwise are refused. */
  allowSimulated: boolean;
  /** SHA-256 fingerprints of simulated TEE root keys this broker trusts (simulated evidence only). */
  simulatedRoots: string[];
  tokenTtlSeconds: number;
  challengeTtlSeconds: number;
  maxPendingChallenges: number;
  /** Per client address: requests at once, and more per second after that (a token bucket). */
  rateLimitBurst: number;
  rateLimitPerSecond: number;
  requestTimeoutMs: number;
  /** Largest request body accepted. */
  maxRequestBytes: number;
  /** Hex SHA-256 the first audit entry chains from (random per broker, recorded at init). */
  auditGenesis: string;
  /** RFC 7638 thumbprint of the signing key: the `kid` of tokens. */
  signingKeyId: string;
  /**
   * RFC 7638 thumbprint of the receipt key: the `kid` of receipts. Absent only in folders made
   * before receipts had a key of their own: loadBrokerConfig refuses those until
   * `broker receipt-key add` gives them one.
   */
  receiptKeyId?: string;
  createdAt: string;
}

export const DEFAULT_SETTINGS = Object.freeze({
  listen: '127.0.0.1:8443',
  tokenTtlSeconds: 300,
  challengeTtlSeconds: 60,
  maxPendingChallenges: 10_000,
  rateLimitBurst: 120,
  rateLimitPerSecond: 60,
  requestTimeoutMs: 30_000,
  maxRequestBytes: MAX_REQUEST_BYTES,
});

/** Inclusive bounds of the numeric settings. */
const NUMERIC: Record<string, [number, number]> = {
  tokenTtlSeconds: [1, 86_400],
  challengeTtlSeconds: [1, 3_600],
  maxPendingChallenges: [1, 10_000_000],
  rateLimitBurst: [1, 1_000_000],
  rateLimitPerSecond: [1, 1_000_000],
  requestTimeoutMs: [100, 600_000],
  maxRequestBytes: [1024, MAX_REQUEST_BYTES],
};

const HEX64 = /^[0-9a-f]{64}$/;
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;
const DNS_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** A host name or IP address for the server certificate; null if it is neither. */
export function checkHostname(name: string): 'dns' | 'ip' | null {
  if (isIP(name)) return 'ip';
  return DNS_NAME.test(name) ? 'dns' : null;
}

/** "HOST:PORT", "[v6]:PORT" -> parts; port 0..65535. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text);
  const host = m ? (m[1] ?? m[2]!) : '';
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65_535 || (m[1] !== undefined && isIP(host) !== 6) || (m[2] !== undefined && !checkHostname(host))) {
    throw new BrokerConfigError(`listen address "${text}" is not HOST:PORT (e.g. 127.0.0.1:8443, [::1]:8443, 0.0.0.0:0 for any free port)`);
  }
  return { host, port };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Strict reading of config.json's content; every problem listed in one error. */
export function parseBrokerSettings(text: string, source = BROKER_FILES.config): BrokerSettings {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new BrokerConfigError(`${source} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  if (!isObject(json)) throw new BrokerConfigError(`${source} must be a JSON object`);
  const problems: string[] = [];
  const keys = ['kind', 'version', 'listen', 'hostnames', 'allowSimulated', 'simulatedRoots', ...Object.keys(NUMERIC), 'auditGenesis', 'signingKeyId', 'createdAt'];
  const optional = ['receiptKeyId'];
  for (const k of Object.keys(json)) if (!keys.includes(k) && !optional.includes(k)) problems.push(`${k}: unknown key (a typo would silently do nothing)`);
  for (const k of keys) if (!Object.hasOwn(json, k)) problems.push(`${k}: missing`);
  const j = json as Record<string, unknown>;
  if (j.kind !== CONFIG_KIND) problems.push(`kind: must be "${CONFIG_KIND}"`);
  if (j.version !== 1) problems.push('version: must be 1');
  if (typeof j.listen !== 'string') problems.push('listen: must be "HOST:PORT"');
  else {
    try {
      parseListen(j.listen);
    } catch (err) {
      problems.push(`listen: ${(err as Error).message}`);
    }
  }
  if (!Array.isArray(j.hostnames) || !j.hostnames.every((h) => typeof h === 'string' && checkHostname(h))) {
    problems.push('hostnames: must be a list of host names or IP addresses');
  }
  if (typeof j.allowSimulated !== 'boolean') problems.push('allowSimulated: must be true or false');
  if (!Array.isArray(j.simulatedRoots) || !j.simulatedRoots.every((h) => typeof h === 'string' && HEX64.test(h))) {
    problems.push('simulatedRoots: must be a list of lower-case hex SHA-256 fingerprints');
  } else if (j.simulatedRoots.length > 0 && j.allowSimulated !== true) {
    problems.push('simulatedRoots: listed, but allowSimulated is false');
  }
  for (const [k, [min, max]] of Object.entries(NUMERIC)) {
    const v = j[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) problems.push(`${k}: must be an integer from ${min} to ${max}`);
  }
  if (typeof j.auditGenesis !== 'string' || !HEX64.test(j.auditGenesis)) problems.push('auditGenesis: must be 64 lower-case hex characters');
  if (typeof j.signingKeyId !== 'string' || !THUMBPRINT.test(j.signingKeyId)) problems.push('signingKeyId: must be a base64url SHA-256 JWK thumbprint');
  if (j.receiptKeyId !== undefined && (typeof j.receiptKeyId !== 'string' || !THUMBPRINT.test(j.receiptKeyId))) problems.push('receiptKeyId: must be a base64url SHA-256 JWK thumbprint');
  if (j.receiptKeyId !== undefined && j.receiptKeyId === j.signingKeyId) problems.push('receiptKeyId: must not be the signing key (tokens and receipts have separate keys)');
  if (typeof j.createdAt !== 'string' || Number.isNaN(Date.parse(j.createdAt))) problems.push('createdAt: must be an ISO 8601 time');
  if (problems.length) throw new BrokerConfigError(`${source} is invalid: ${problems.join('; ')}`);
  return json as unknown as BrokerSettings;
}

/** A broker ES256 key: the one that signs tokens, or the one that signs receipts. */
export interface BrokerSigningKey {
  readonly alg: 'ES256';
  /** RFC 7638 thumbprint of the public key. */
  readonly kid: string;
  readonly privateKey: CryptoKey;
  /** Public members only, with kid, alg and use. */
  readonly publicJwk: Readonly<JWK & { kid: string }>;
}

const PRIVATE_MEMBERS = ['kty', 'crv', 'x', 'y', 'd', 'kid', 'alg', 'use'];
const PUBLIC_MEMBERS = ['kty', 'crv', 'x', 'y', 'kid', 'alg', 'use'];
const B64URL = /^[A-Za-z0-9_-]+$/;

function strictJwk(text: string, source: string, members: readonly string[], needD: boolean): JWK {
  let jwk: unknown;
  try {
    jwk = JSON.parse(text);
  } catch (cause) {
    throw new BrokerConfigError(`${source} is not valid JSON`, { cause });
  }
  if (!isObject(jwk)) throw new BrokerConfigError(`${source} must be a JWK object`);
  const extra = Object.keys(jwk).filter((k) => !members.includes(k));
  if (extra.length) throw new BrokerConfigError(`${source} has unexpected members ${extra.join(', ')}${!needD && extra.includes('d') ? ' (the private key must not be in the public file)' : ''}`);
  const want: Record<string, number> = needD ? { x: 43, y: 43, d: 43 } : { x: 43, y: 43 };
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') throw new BrokerConfigError(`${source} must be an EC P-256 key (kty "EC", crv "P-256")`);
  for (const [k, len] of Object.entries(want)) {
    const v = jwk[k];
    if (typeof v !== 'string' || v.length !== len || !B64URL.test(v)) throw new BrokerConfigError(`${source}: member "${k}" must be ${len} base64url characters`);
  }
  if (jwk.alg !== undefined && jwk.alg !== 'ES256') throw new BrokerConfigError(`${source}: alg must be ES256`);
  if (jwk.use !== undefined && jwk.use !== 'sig') throw new BrokerConfigError(`${source}: use must be "sig"`);
  if (jwk.kid !== undefined && typeof jwk.kid !== 'string') throw new BrokerConfigError(`${source}: kid must be a string`);
  return jwk as JWK;
}

/** Which files a key is read from, and the config.json member that names it. */
export interface KeyFiles {
  privateFile: string;
  publicFile: string;
  idKey: 'signingKeyId' | 'receiptKeyId';
}
export const SIGNING_FILES: KeyFiles = Object.freeze({ privateFile: BROKER_FILES.signingKey, publicFile: BROKER_FILES.signingPublicKey, idKey: 'signingKeyId' });
export const RECEIPT_FILES: KeyFiles = Object.freeze({ privateFile: BROKER_FILES.receiptKey, publicFile: BROKER_FILES.receiptPublicKey, idKey: 'receiptKeyId' });

/**
 * Loads signing.jwk or receipt.jwk (private; checked against signing.pub.jwk and the expected thumbprint) into a
 * non-extractable CryptoKey for ES256.
 */
export async function loadSigningKey(privateText: string, publicText: string, expectedKid?: string, files: KeyFiles = SIGNING_FILES): Promise<BrokerSigningKey> {
  const { privateFile, publicFile, idKey } = files;
  const priv = strictJwk(privateText, privateFile, PRIVATE_MEMBERS, true);
  const pub = strictJwk(publicText, publicFile, PUBLIC_MEMBERS, false);
  // The private scalar must belong to the public point: derive the point from d and compare.
  let derived: JWK;
  try {
    derived = createPublicKey(createPrivateKey({ key: { kty: 'EC', crv: 'P-256', x: priv.x!, y: priv.y!, d: priv.d! }, format: 'jwk' })).export({ format: 'jwk' }) as JWK;
  } catch (cause) {
    throw new BrokerConfigError(`${privateFile} is not a valid P-256 private key`, { cause });
  }
  if (derived.x !== priv.x || derived.y !== priv.y) throw new BrokerConfigError(`${privateFile}: the private key does not match its own public point (x, y)`);
  if (pub.x !== priv.x || pub.y !== priv.y) throw new BrokerConfigError(`${publicFile} is not the public half of ${privateFile}`);
  const kid = await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: priv.x!, y: priv.y! }, 'sha256');
  for (const [source, v] of [[privateFile, priv.kid], [publicFile, pub.kid]] as const) {
    if (v !== undefined && v !== kid) throw new BrokerConfigError(`${source}: kid "${v}" is not the key's thumbprint ${kid}`);
  }
  if (expectedKid !== undefined && expectedKid !== kid) {
    throw new BrokerConfigError(`the thumbprint ${kid} of ${privateFile} is not the ${idKey} ${expectedKid} in ${BROKER_FILES.config}: ${privateFile} was replaced`);
  }
  let privateKey: CryptoKey;
  try {
    privateKey = (await importJWK({ kty: 'EC', crv: 'P-256', x: priv.x!, y: priv.y!, d: priv.d! }, 'ES256', { extractable: false })) as CryptoKey;
  } catch (cause) {
    throw new BrokerConfigError(`${privateFile} cannot be imported as an ES256 key`, { cause });
  }
  return Object.freeze({ alg: 'ES256', kid, privateKey, publicJwk: Object.freeze({ kty: 'EC', crv: 'P-256', x: priv.x!, y: priv.y!, kid, alg: 'ES256', use: 'sig' }) });
}

/** Reads and checks signing.pub.jwk alone (offline audit verification needs no secret). */
export function parsePublicSigningJwk(text: string, source: string = BROKER_FILES.signingPublicKey): JWK & { kty: 'EC'; crv: 'P-256'; x: string; y: string } {
  return strictJwk(text, source, PUBLIC_MEMBERS, false) as JWK & { kty: 'EC'; crv: 'P-256'; x: string; y: string };
}

export interface BrokerConfig extends Omit<BrokerSettings, 'kind' | 'version'> {
  /** Absolute path of the broker folder. */
  readonly dir: string;
  readonly paths: BrokerPaths;
  readonly signingKey: BrokerSigningKey;
  /** Signs release receipts only (never tokens). */
  readonly receiptKey: BrokerSigningKey;
  readonly receiptKeyId: string;
  /** PEM text for node:https (cert: the server certificate; ca: the broker CA clients trust). */
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string };
  /** The key-encryption key, held by node:crypto (its bytes are wiped from the JS heap after loading). */
  readonly kek: KeyObject;
}

/** Refuses a folder that is not ours or that others may write (they could swap any file in it). */
export async function checkBrokerDir(dir: string): Promise<void> {
  let st;
  try {
    st = await lstat(dir);
  } catch (cause) {
    throw new BrokerConfigError(`broker folder ${dir} does not exist (${(cause as NodeJS.ErrnoException).code}): create one with "sealed-tensors broker init ${dir}"`, { cause });
  }
  if (!st.isDirectory()) throw new BrokerConfigError(`${dir} is not a folder${st.isSymbolicLink() ? ' (it is a symbolic link: pass the folder itself)' : ''}`);
  const uid = process.geteuid?.();
  if (uid !== undefined && st.uid !== uid) throw new BrokerConfigError(`broker folder ${dir} belongs to uid ${st.uid}, not to this user (uid ${uid})`);
  if ((st.mode & 0o022) !== 0) throw new BrokerConfigError(`broker folder ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): run chmod go-w ${dir}`);
}

/** Reads the kek (exactly 32 bytes, 0600, ours) into a node:crypto secret key; the bytes read are wiped. */
export async function loadKek(path: string): Promise<KeyObject> {
  const raw = await readGuardedFile(path, 'kek', { maxBytes: KEK_BYTES, exactBytes: KEK_BYTES, secret: true, ownMemory: true });
  try {
    return createSecretKey(raw);
  } finally {
    raw.fill(0);
  }
}

/** Loads and checks the whole broker folder. */
export async function loadBrokerConfig(dir: string): Promise<BrokerConfig> {
  await checkBrokerDir(dir);
  const paths = brokerPaths(dir);
  const text = async (path: string, what: string, secret = false): Promise<string> =>
    Buffer.from(await readGuardedFile(path, what, { maxBytes: MAX_SMALL_FILE, secret })).toString('utf8');

  const settings = parseBrokerSettings(await text(paths.config, BROKER_FILES.config));
  const ca = await text(paths.caCert, BROKER_FILES.caCert);
  const cert = await text(paths.serverCert, BROKER_FILES.serverCert);
  const key = await text(paths.serverKey, BROKER_FILES.serverKey, true);
  await checkGuardedFile(paths.caKey, BROKER_FILES.caKey, { secret: true });
  let caCert: X509Certificate;
  let serverCert: X509Certificate;
  try {
    caCert = new X509Certificate(ca);
    serverCert = new X509Certificate(cert);
  } catch (cause) {
    throw new BrokerConfigError(`${BROKER_FILES.caCert} or ${BROKER_FILES.serverCert} is not a PEM certificate`, { cause });
  }
  if (!caCert.ca || !serverCert.checkIssued(caCert) || !serverCert.verify(caCert.publicKey)) {
    throw new BrokerConfigError(`${BROKER_FILES.serverCert} is not issued by the CA in ${BROKER_FILES.caCert}`);
  }
  let serverKey: KeyObject;
  try {
    serverKey = createPrivateKey(key);
  } catch (cause) {
    throw new BrokerConfigError(`${BROKER_FILES.serverKey} is not a PEM private key`, { cause });
  }
  if (!serverCert.checkPrivateKey(serverKey)) throw new BrokerConfigError(`${BROKER_FILES.serverKey} is not the key of ${BROKER_FILES.serverCert}`);

  const signingKey = await loadSigningKey(
    await text(paths.signingKey, BROKER_FILES.signingKey, true),
    await text(paths.signingPublicKey, BROKER_FILES.signingPublicKey),
    settings.signingKeyId,
  );
  if (settings.receiptKeyId === undefined) {
    throw new BrokerConfigError(
      `${BROKER_FILES.config} names no receipt key: this folder was made before receipts had a key of their own (the token key signed them). ` +
        `Add one with "sealed-tensors broker receipt-key add --dir ${dir}" (writes ${BROKER_FILES.receiptKey} and ${BROKER_FILES.receiptPublicKey}; give auditors the new ${BROKER_FILES.receiptPublicKey}), then start again`,
    );
  }
  const receiptKey = await loadSigningKey(
    await text(paths.receiptKey, BROKER_FILES.receiptKey, true),
    await text(paths.receiptPublicKey, BROKER_FILES.receiptPublicKey),
    settings.receiptKeyId,
    RECEIPT_FILES,
  );
  // Present and safe; their contents are checked by the keystore and the audit log when opened.
  await checkGuardedFile(paths.keystore, BROKER_FILES.keystore, { secret: true });
  await checkGuardedFile(paths.audit, BROKER_FILES.audit, {});
  await checkBrokerDir(paths.policies);
  const kek = await loadKek(paths.kek);
  const { kind: _kind, version: _version, ...rest } = settings;
  return Object.freeze({ ...rest, receiptKeyId: settings.receiptKeyId, dir: resolve(dir), paths, signingKey, receiptKey, tls: Object.freeze({ cert, key, ca }), kek });
}
