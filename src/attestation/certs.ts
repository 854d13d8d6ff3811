import 'reflect-metadata';
import { X509Certificate, createHash, type KeyObject } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import { EvidenceChainError, EvidenceFormatError } from '../errors.js';

/**
 * Certificate plumbing shared by every verifier: reading PEM/DER bundles, pinning roots by
 * fingerprint, building and checking a path at a caller-given time.
 * Signatures (ECDSA and AMD's RSA-PSS) are checked by node:crypto; extensions and CRLs by @peculiar/x509.
 */

const PEM_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Reads one or more certificates from PEM (any number of blocks) or DER (one or several concatenated). */
export function parseCertificates(data: Uint8Array | string, source: string): X509Certificate[] {
  const text = typeof data === 'string' ? data : Buffer.from(data).toString('latin1');
  const pems = text.match(PEM_RE);
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
  return createHash('sha256').update(cert.raw).digest('hex');
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

function checkValidity(cert: X509Certificate, opts: ChainOptions): void {
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
    return child.checkIssued(issuer) && child.verify(issuer.publicKey);
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
