/**
 * `broker init DIR`: a ready broker folder on embedded defaults (layout in config.ts). Everything
 * is written into a fresh hidden sibling folder (0700), each file created with its final mode and
 * fsync'd, and the folder renamed into place at the end: DIR is either absent/empty or complete,
 * never half made.
 */
import { createHash, createSecretKey, generateKeyPairSync, randomBytes, randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { calculateJwkThumbprint } from 'jose';
import { InvalidArgumentError, IoError } from '../errors.js';
import { AuditLog, formatAuditLine } from './audit.js';
import { BROKER_FILES, DEFAULT_SETTINGS, KEK_BYTES, checkBrokerDir, checkHostname, parseBrokerSettings, parseListen, parsePublicSigningJwk, type BrokerSettings } from './config.js';
import { fsyncDir, readGuardedFile, writeFileAtomic, writeNewFile } from './files.js';
import { withBrokerLock } from './lock.js';
import { emptyKeystoreBytes } from './keystore.js';
import { DEFAULT_POLICY_NAME, defaultPolicyJson } from './policies.js';

export const DEFAULT_HOSTNAMES: readonly string[] = Object.freeze(['localhost', '127.0.0.1', '::1']);

export interface InitOptions {
  /** Let key policies accept the simulated TEE (development only). */
  allowSimulated?: boolean;
  /** More names for the server certificate (DNS names or IP addresses). */
  hostnames?: readonly string[];
  /** Default listen address recorded in config.json. */
  listen?: string;
  /** SHA-256 fingerprints of simulated TEE root keys to trust (needs allowSimulated). */
  simulatedRoots?: readonly string[];
}

export interface InitResult {
  dir: string;
  caPath: string;
  /** DIR/broker.jwks: the public keys sessions pin (load --broker-key). */
  publicKeysPath: string;
  signingKeyId: string;
  receiptKeyId: string;
  hostnames: string[];
  allowSimulated: boolean;
}

async function refuseNonEmpty(dir: string): Promise<void> {
  let st;
  try {
    st = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new IoError(`cannot check ${dir} (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
  if (!st.isDirectory()) throw new InvalidArgumentError(`${dir} exists and is not a folder: broker init needs a new or empty folder`);
  if ((await readdir(dir)).length > 0) throw new InvalidArgumentError(`${dir} is not empty: broker init never writes into a folder holding anything (a broker folder is never overwritten)`);
}

type PublicKeyJwk = { kty: string; crv: string; x: string; y: string; kid: string; alg: string; use: string };

/** The JWK Set a session pins (brokerKey): the token key and the receipt key, public halves. */
function publicKeySetText(token: PublicKeyJwk, receipt: PublicKeyJwk): string {
  return `${JSON.stringify({ keys: [token, receipt] }, null, 2)}\n`;
}

/** A new P-256 key written as PRIVATE (0600) and PUBLIC (0644) JWK files; returns its public JWK (kid: its thumbprint). */
async function writeKeyPair(privatePath: string, publicPath: string): Promise<PublicKeyJwk> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' }) as { kty: string; crv: string; x: string; y: string; d: string };
  const kid = await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, 'sha256');
  const pub = { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, kid, alg: 'ES256', use: 'sig' };
  await writeNewFile(privatePath, `${JSON.stringify({ ...pub, d: jwk.d }, null, 2)}\n`, 0o600);
  jwk.d = '';
  await writeNewFile(publicPath, `${JSON.stringify(pub, null, 2)}\n`, 0o644);
  return pub;
}

/**
 * `broker receipt-key add --dir DIR`: gives a folder made before receipts had their own key a
 * receipt key (receipt.jwk 0600, receipt.pub.jwk), names it in config.json, and records that in the
 * audit log. Receipts in the log from before it stay verifiable with signing.pub.jwk; from the
 * audit entry that names the receipt key on, only receipt.pub.jwk verifies them.
 */
export async function addReceiptKey(dirArg: string): Promise<{ dir: string; receiptKeyId: string }> {
  const dir = resolve(dirArg);
  await checkBrokerDir(dir);
  const configPath = join(dir, BROKER_FILES.config);
  const kid = await withBrokerLock(dir, async () => {
    const settings = parseBrokerSettings(Buffer.from(await readGuardedFile(configPath, BROKER_FILES.config, { maxBytes: 64 * 1024 })).toString('utf8'));
    if (settings.receiptKeyId !== undefined) throw new InvalidArgumentError(`${dir} already has a receipt key (${settings.receiptKeyId}); nothing was changed`);
    // Left over from an add cut short: config.json does not name them, so they never signed anything.
    await rm(join(dir, BROKER_FILES.receiptKey), { force: true });
    await rm(join(dir, BROKER_FILES.receiptPublicKey), { force: true });
    const receiptPub = await writeKeyPair(join(dir, BROKER_FILES.receiptKey), join(dir, BROKER_FILES.receiptPublicKey));
    const id = receiptPub.kid;
    const tokenPub = parsePublicSigningJwk(Buffer.from(await readGuardedFile(join(dir, BROKER_FILES.signingPublicKey), BROKER_FILES.signingPublicKey, { maxBytes: 64 * 1024 })).toString('utf8'));
    const tokenKid = await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: tokenPub.x, y: tokenPub.y }, 'sha256');
    await writeFileAtomic(
      join(dir, BROKER_FILES.publicKeySet),
      publicKeySetText({ kty: 'EC', crv: 'P-256', x: tokenPub.x, y: tokenPub.y, kid: tokenKid, alg: 'ES256', use: 'sig' }, receiptPub),
      { mode: 0o644 },
    );
    await fsyncDir(dir);
    const { createdAt, ...rest } = settings;
    await writeFileAtomic(configPath, `${JSON.stringify({ ...rest, receiptKeyId: id, createdAt }, null, 2)}\n`, { mode: 0o644 });
    return id;
  });
  const log = await AuditLog.open(dir);
  try {
    await log.append({ event: 'receipt-key-add', receiptKeyId: kid });
  } finally {
    await log.close();
  }
  return { dir, receiptKeyId: kid };
}

export async function initBroker(dirArg: string, opts: InitOptions = {}): Promise<InitResult> {
  const dir = resolve(dirArg);
  const extra = opts.hostnames ?? [];
  for (const h of extra) {
    if (typeof h !== 'string' || !checkHostname(h)) throw new InvalidArgumentError(`--hostname ${JSON.stringify(h)} is not a DNS name or an IP address`);
  }
  const hostnames = [...new Set([...DEFAULT_HOSTNAMES, ...extra])];
  const listen = opts.listen ?? DEFAULT_SETTINGS.listen;
  try {
    parseListen(listen);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  const allowSimulated = opts.allowSimulated === true;
  const simulatedRoots = [...new Set((opts.simulatedRoots ?? []).map((r) => (typeof r === 'string' ? r.toLowerCase() : r)))];
  for (const r of simulatedRoots) {
    if (typeof r !== 'string' || !/^[0-9a-f]{64}$/.test(r)) throw new InvalidArgumentError(`--simulated-root ${JSON.stringify(r)} is not a SHA-256 fingerprint (64 hex digits)`);
  }
  if (simulatedRoots.length > 0 && !allowSimulated) throw new InvalidArgumentError('--simulated-root needs --allow-simulated');
  await refuseNonEmpty(dir);
  const parent = dirname(dir);
  let tmp: string;
  try {
    tmp = await mkdtemp(join(parent, `.${basename(dir)}.init-`));
  } catch (cause) {
    throw new IoError(`cannot create a folder in ${parent} (${(cause as NodeJS.ErrnoException).code}): does it exist, and may you write there?`, { cause });
  }
  try {
    const file = (name: string): string => join(tmp, name);
    const certs = await (await import('./certs.js')).makeBrokerCertificates(hostnames);

    // The kek: random bytes in memory of their own, wiped once written (and once the empty keystore is sealed).
    const kekBytes = randomFillSync(new Uint8Array(new ArrayBuffer(KEK_BYTES)));
    let kek;
    try {
      await writeNewFile(file(BROKER_FILES.kek), kekBytes, 0o600);
      kek = createSecretKey(kekBytes);
    } finally {
      kekBytes.fill(0);
    }

    const tokenPub = await writeKeyPair(file(BROKER_FILES.signingKey), file(BROKER_FILES.signingPublicKey));
    // Receipts have a key of their own: whoever can mint tokens cannot mint receipts.
    const receiptPub = await writeKeyPair(file(BROKER_FILES.receiptKey), file(BROKER_FILES.receiptPublicKey));
    const kid = tokenPub.kid;
    const receiptKid = receiptPub.kid;
    await writeNewFile(file(BROKER_FILES.publicKeySet), publicKeySetText(tokenPub, receiptPub), 0o644);

    await writeNewFile(file(BROKER_FILES.caCert), certs.caCert, 0o644);
    await writeNewFile(file(BROKER_FILES.caKey), certs.caKey, 0o600);
    await writeNewFile(file(BROKER_FILES.serverCert), certs.serverCert, 0o644);
    await writeNewFile(file(BROKER_FILES.serverKey), certs.serverKey, 0o600);

    const genesis = randomBytes(32).toString('hex');
    const now = new Date().toISOString();
    const settings: BrokerSettings = {
      kind: 'sealed-tensors-broker',
      version: 1,
      listen,
      hostnames,
      allowSimulated,
      simulatedRoots,
      tokenTtlSeconds: DEFAULT_SETTINGS.tokenTtlSeconds,
      challengeTtlSeconds: DEFAULT_SETTINGS.challengeTtlSeconds,
      maxPendingChallenges: DEFAULT_SETTINGS.maxPendingChallenges,
      rateLimitBurst: DEFAULT_SETTINGS.rateLimitBurst,
      rateLimitPerSecond: DEFAULT_SETTINGS.rateLimitPerSecond,
      requestTimeoutMs: DEFAULT_SETTINGS.requestTimeoutMs,
      maxRequestBytes: DEFAULT_SETTINGS.maxRequestBytes,
      auditGenesis: genesis,
      signingKeyId: kid,
      receiptKeyId: receiptKid,
      createdAt: now,
    };
    await writeNewFile(file(BROKER_FILES.config), `${JSON.stringify(settings, null, 2)}\n`, 0o644);
    await writeNewFile(file(BROKER_FILES.keystore), emptyKeystoreBytes(kek), 0o600);

    await mkdir(file(BROKER_FILES.policies), { mode: 0o700 });
    const policy = defaultPolicyJson(allowSimulated);
    await writeNewFile(join(file(BROKER_FILES.policies), `${DEFAULT_POLICY_NAME}.json`), policy, 0o644);
    await fsyncDir(file(BROKER_FILES.policies));

    const init = formatAuditLine(0, now, genesis, 'init', {
      generation: 0,
      signingKeyId: kid,
      receiptKeyId: receiptKid,
      allowSimulated,
      hostnames,
      defaultPolicyDigest: createHash('sha256').update(policy).digest('hex'),
    });
    await writeNewFile(file(BROKER_FILES.audit), Buffer.concat([init, Buffer.from('\n')]), 0o600);
    await fsyncDir(tmp);

    try {
      // Over an empty folder, rename(2) replaces it; over a non-empty one it fails (ENOTEMPTY).
      await rename(tmp, dir);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new InvalidArgumentError(`${dir} is not empty (something was written there during init): nothing was changed`, { cause });
      throw new IoError(`cannot move the new broker folder into place at ${dir} (${code})`, { cause });
    }
    await fsyncDir(parent);
    return { dir, caPath: join(dir, BROKER_FILES.caCert), publicKeysPath: join(dir, BROKER_FILES.publicKeySet), signingKeyId: kid, receiptKeyId: receiptKid, hostnames, allowSimulated };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
}
