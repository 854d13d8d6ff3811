import 'reflect-metadata';
import { X509Certificate, constants, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { EvidenceChainError, EvidenceFormatError, EvidenceRevokedError, EvidenceSignatureError, InvalidArgumentError } from '../errors.js';
import { derSha256, signatureLinks } from './link-cache.js';
import { certificateSubject, derInteger, derOid, normalSerial, parseCrl, readChildren, readTlv, type ParsedCrl } from './der.js';

/**
 * Certificate plumbing shared by every verifier: reading PEM/DER bundles, pinning roots by
 * fingerprint, building and checking a path at a caller-given time.
 * Signatures (ECDSA and AMD's RSA-PSS) are checked by node:crypto; extensions and CRLs by @peculiar/x509.
 */

const PEM_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Reads one or more certificates from PEM (any number of blocks) or DER (one or several concatenated). */
/** A chain is a handful of certificates of a few KiB; bounds keep hostile input from costing much. */
export const MAX_CERTIFICATE_INPUT = 256 * 1024;
export const MAX_CERTIFICATES = 32;

export function parseCertificates(data: Uint8Array | string, source: string): X509Certificate[] {
  if (typeof data !== 'string' && !(data instanceof Uint8Array)) throw new EvidenceFormatError(`${source} must be PEM text or DER bytes`);
  if (data.length > MAX_CERTIFICATE_INPUT) {
    throw new EvidenceFormatError(`${source} is ${data.length} bytes, over the ${MAX_CERTIFICATE_INPUT}-byte limit for a certificate chain`);
  }
  const text = typeof data === 'string' ? data : Buffer.from(data).toString('latin1');
  const pems = text.match(PEM_RE);
  if ((pems?.length ?? 0) > MAX_CERTIFICATES) {
    throw new EvidenceFormatError(`${source} holds ${pems!.length} certificates, over the limit of ${MAX_CERTIFICATES} for a chain`);
  }
  try {
    if (pems) return pems.map((p) => new X509Certificate(p));
    if (typeof data === 'string') throw new Error('no PEM CERTIFICATE block');
    const out: X509Certificate[] = [];
    let at = 0;
    while (at < data.length) {
      // Each DER certificate is one SEQUENCE; its header tells where the next starts.
      if (data[at] !== 0x30) {
        if (data.subarray(at).every((b) => b === 0)) break; // trailing padding
        throw new Error(`byte 0x${(data[at] ?? 0).toString(16)} at offset ${at} does not start a DER certificate`);
      }
      const lenByte = data[at + 1] ?? 0;
      let len = lenByte;
      let hdr = 2;
      if (lenByte & 0x80) {
        const n = lenByte & 0x7f;
        if (n < 1 || n > 4) throw new Error('bad DER length');
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + (data[at + 2 + i] ?? 0);
        hdr = 2 + n;
      }
      const end = at + hdr + len;
      if (end > data.length) throw new Error(`DER certificate at offset ${at} is truncated`);
      out.push(new X509Certificate(Buffer.from(data.subarray(at, end))));
      if (out.length > MAX_CERTIFICATES) throw new Error(`more than ${MAX_CERTIFICATES} certificates`);
      at = end;
    }
    if (out.length === 0) throw new Error('no certificate found');
    return out;
  } catch (err) {
    throw new EvidenceFormatError(
      `${source} does not hold a readable certificate (PEM or DER): ${(err as Error).message}; pass the certificate files as downloaded`,
      { cause: err },
    );
  }
}

/** PEM text for a DER certificate, 64 columns, as `openssl x509` writes it. */
export function toPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

export function fingerprint(cert: X509Certificate): string {
  return derSha256(cert);
}

export function commonName(cert: X509Certificate): string {
  const m = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject);
  return m?.[1] ?? cert.subject.replace(/\n/g, ', ');
}

function describe(cert: X509Certificate): string {
  return `"${commonName(cert)}" (serial ${cert.serialNumber})`;
}

/** The certificate's public key; a key that does not parse is a format error, not a crash. */
export function publicKeyOf(cert: X509Certificate, what: string): KeyObject {
  try {
    return cert.publicKey;
  } catch (err) {
    throw new EvidenceFormatError(`${what}: certificate ${describe(cert)} has an unreadable public key: ${(err as Error).message}`, { cause: err });
  }
}

/** Raw extnValue contents for an OID, or undefined when the certificate lacks it. */
// ASN.1 parsing is the slow part of a verification; a certificate is parsed for extensions once.
const parsedCache = new WeakMap<X509Certificate, px509.X509Certificate>();

export function extensionValue(cert: X509Certificate, oid: string): Uint8Array | undefined {
  let parsed = parsedCache.get(cert);
  if (!parsed) {
    try {
      parsed = new px509.X509Certificate(cert.raw);
    } catch (err) {
      throw new EvidenceFormatError(`certificate ${describe(cert)} cannot be parsed for extensions: ${(err as Error).message}`, { cause: err });
    }
    parsedCache.set(cert, parsed);
  }
  const ext = parsed.extensions.find((e) => e.type === oid);
  return ext ? new Uint8Array(ext.value) : undefined;
}

export interface ChainOptions {
  /** Verification time: every certificate must be valid at this instant. */
  now: Date;
  /** SHA-256 fingerprints (lower-case hex) of the DER roots this chain may end at. */
  trustedRoots: ReadonlySet<string>;
  /** What the chain is for, used in messages ("SEV-SNP VCEK", "Nitro enclave"). */
  what: string;
  /** Advice appended when no pinned root is reached. */
  hint: string;
}

/**
 * The verification time: `now` when given, else the current time. An Invalid Date compares false
 * with every bound, so it would pass validity windows by accident (and toISOString throws a raw RangeError).
 */
export function verificationTime(now: unknown): Date {
  if (now === undefined) return new Date();
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
    throw new InvalidArgumentError(`now must be a valid Date (or left out for the current time), got ${now instanceof Date ? 'an Invalid Date' : now === null ? 'null' : typeof now}`);
  }
  return now;
}

function checkValidity(cert: X509Certificate, opts: ChainOptions): void {
  verificationTime(opts.now ?? null);
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  const t = opts.now.getTime();
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) {
    throw new EvidenceChainError(`${opts.what}: certificate ${describe(cert)} has an unreadable validity period`);
  }
  if (t < from.getTime() || t > to.getTime()) {
    throw new EvidenceChainError(
      `${opts.what}: certificate ${describe(cert)} is not valid at ${opts.now.toISOString()} ` +
        `(valid ${from.toISOString()} to ${to.toISOString()}); verify as of a time inside that period, or fetch a current certificate`,
    );
  }
}

function signedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    if (!child.checkIssued(issuer)) return false;
    // The signature over these exact bytes by this exact key was verified before (link-cache.ts);
    // validity, pins and CA flags are still checked by verifyChain on every call.
    if (signatureLinks.has(child, issuer)) return true;
    const ok = child.verify(issuer.publicKey);
    if (ok) signatureLinks.add(child, issuer);
    return ok;
  } catch {
    return false;
  }
}

/**
 * Builds the path leaf -> ... -> pinned root from `pool`, checking each signature, each validity
 * period at `now`, that every issuer is a CA, and that the path ends at a self-signed root whose
 * fingerprint is pinned. Returns the path, leaf first.
 */
export function verifyChain(leaf: X509Certificate, pool: readonly X509Certificate[], opts: ChainOptions): X509Certificate[] {
  const path: X509Certificate[] = [leaf];
  let current = leaf;
  for (let depth = 0; depth < 10; depth++) {
    checkValidity(current, opts);
    const fp = fingerprint(current);
    if (signedBy(current, current)) {
      if (opts.trustedRoots.has(fp)) return path;
      throw new EvidenceChainError(
        `${opts.what}: the chain ends at ${describe(current)} with SHA-256 ${fp}, which is not a pinned root; ${opts.hint}`,
      );
    }
    const issuer = pool.find((c) => !path.includes(c) && signedBy(current, c));
    if (!issuer) {
      const named = pool.some((c) => current.checkIssued(c));
      throw new EvidenceChainError(
        `${opts.what}: ${named ? 'the signature of' : 'no issuer found for'} certificate ${describe(current)}` +
          `${named ? ' does not verify with its named issuer' : ` (issuer ${current.issuer.replace(/\n/g, ', ')})`}; ${opts.hint}`,
      );
    }
    if (!issuer.ca) {
      throw new EvidenceChainError(`${opts.what}: ${describe(issuer)} issued ${describe(current)} but is not a CA certificate`);
    }
    path.push(issuer);
    current = issuer;
  }
  throw new EvidenceChainError(`${opts.what}: certificate chain is longer than 10; refusing to follow it`);
}

const HASH_OIDS: Record<string, string> = { '2.16.840.1.101.3.4.2.1': 'sha256', '2.16.840.1.101.3.4.2.2': 'sha384', '2.16.840.1.101.3.4.2.3': 'sha512' };
const SIG_OIDS: Record<string, { kind: 'ecdsa' | 'rsa'; hash: string }> = {
  '1.2.840.10045.4.3.2': { kind: 'ecdsa', hash: 'sha256' },
  '1.2.840.10045.4.3.3': { kind: 'ecdsa', hash: 'sha384' },
  '1.2.840.10045.4.3.4': { kind: 'ecdsa', hash: 'sha512' },
  '1.2.840.113549.1.1.11': { kind: 'rsa', hash: 'sha256' },
  '1.2.840.113549.1.1.12': { kind: 'rsa', hash: 'sha384' },
  '1.2.840.113549.1.1.13': { kind: 'rsa', hash: 'sha512' },
};
const OID_RSASSA_PSS = '1.2.840.113549.1.1.10';

/** Whether `crl` is signed by `issuer`'s key, for the algorithms AMD (RSA-PSS) and Intel (ECDSA) use. */
function crlSignatureVerifies(crl: ParsedCrl, issuer: X509Certificate, what: string): boolean {
  const alg = readTlv(crl.signatureAlgorithm, 0, what);
  const [oidTlv, params] = readChildren(alg, what);
  if (!oidTlv) throw new EvidenceFormatError(`${what}: empty signature algorithm`);
  const oid = derOid(oidTlv, what);
  const key = publicKeyOf(issuer, what);
  try {
    const known = SIG_OIDS[oid];
    if (known) return cryptoVerify(known.hash, crl.tbs, known.kind === 'ecdsa' ? { key, dsaEncoding: 'der' } : key, crl.signature);
    if (oid === OID_RSASSA_PSS) {
      // RSASSA-PSS-params: [0] hashAlgorithm, [1] maskGenAlgorithm (MGF1 with the same hash here), [2] saltLength.
      let hash = 'sha1';
      let saltLength = 20;
      for (const p of params ? readChildren(params, what) : []) {
        const inner = readTlv(p.value, 0, what);
        if (p.tag === 0xa0) hash = HASH_OIDS[derOid(readChildren(inner, what)[0] ?? inner, what)] ?? '';
        else if (p.tag === 0xa2) saltLength = derInteger(inner, what);
      }
      if (!hash) throw new EvidenceFormatError(`${what}: RSA-PSS with an unsupported hash`);
      return cryptoVerify(hash, crl.tbs, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, crl.signature);
    }
  } catch (err) {
    if (err instanceof EvidenceFormatError) throw err;
    return false; // a key of the wrong type for the algorithm, or a malformed signature
  }
  throw new EvidenceFormatError(`${what}: signature algorithm ${oid} is not supported`);
}

export interface CrlCheckOptions {
  now: Date;
  /** What the CRLs are for, in messages ("SEV-SNP", "TDX"). */
  what: string;
}

export interface CrlResult {
  /** Index in `path` of each certificate a CRL covered (its issuer signed the CRL and the certificate). */
  covered: Set<number>;
  checks: { issuer: string; covered: number }[];
}

/**
 * Checks DER CRLs against a verified path (leaf first, pinned root last): each CRL must be issued
 * (exact subject bytes) and signed by a certificate of the path, and valid at `now`; every
 * certificate of the path that its issuer signed is looked up in it. A listed certificate throws
 * EvidenceRevokedError. Malformed CRLs throw EvidenceFormatError, never anything untyped.
 */
export function checkCrls(crls: readonly Uint8Array[], path: readonly X509Certificate[], opts: CrlCheckOptions): CrlResult {
  verificationTime(opts.now ?? null);
  const covered = new Set<number>();
  const checks: CrlResult['checks'] = [];
  const subjects = path.map((c, k) => certificateSubject(c.raw, `${opts.what} certificate ${k}`));
  for (const [i, der] of crls.entries()) {
    const what = `${opts.what} CRL #${i + 1}`;
    if (!(der instanceof Uint8Array)) throw new EvidenceFormatError(`${what} must be bytes (DER)`);
    const crl = parseCrl(der, what);
    const at = subjects.findIndex((s) => Buffer.from(s).equals(crl.issuer));
    if (at < 0) throw new EvidenceChainError(`${what}: its issuer is not a certificate of the verified chain (${path.map(commonName).join(' -> ')}); pass the CRL of this chain's issuer`);
    const issuer = path[at]!;
    if (!issuer.ca) throw new EvidenceChainError(`${what}: issued by ${describe(issuer)}, which is not a CA`);
    if (!crlSignatureVerifies(crl, issuer, what)) {
      throw new EvidenceSignatureError(`${what} from ${describe(issuer)} has a bad signature: it was modified or is not this issuer's`);
    }
    // A CRL without nextUpdate never says when it stops being current: refuse it rather than trust it forever.
    if (!crl.nextUpdate || opts.now < crl.thisUpdate || opts.now > crl.nextUpdate) {
      throw new EvidenceChainError(
        `${what} from ${describe(issuer)} is valid ${crl.thisUpdate.toISOString()} to ${crl.nextUpdate?.toISOString() ?? '(no next update)'}, not at ${opts.now.toISOString()}; fetch a current CRL`,
      );
    }
    // A CRL covers the certificate its issuer signed in this path (path[at] issued path[at - 1]);
    // the root's own trust comes from pinning.
    if (at > 0) {
      const cert = path[at - 1]!;
      covered.add(at - 1);
      if (crl.revoked.has(normalSerial(cert.serialNumber))) {
        throw new EvidenceRevokedError(`${opts.what}: certificate ${describe(cert)} is revoked by ${describe(issuer)}'s CRL; it must not be trusted`);
      }
    }
    checks.push({ issuer: commonName(issuer), covered: at > 0 ? 1 : 0 });
  }
  return { covered, checks };
}
