import { X509Certificate } from 'node:crypto';
import { decode as cborDecode, encode as cborEncode } from 'cborg';
import { EvidenceFormatError, EvidenceSignatureError } from '../../errors.js';
import { hex, isAllZero } from '../bin.js';
import { commonName, publicKeyOf, verifyChain, verificationTime } from '../certs.js';
import { DEFAULT_ROOTS, rootSet } from '../roots.js';
import type { Check, Claims, VerifiedEvidence, VerifyOptions } from '../types.js';
import { ecdsaVerifyRaw } from './ecdsa.js';

/** COSE algorithm id for ECDSA P-384 with SHA-384 (RFC 9053). */
const COSE_ES384 = -35;
/** Upper bound on a document; real ones are ~5 KiB. Keeps a hostile length from costing memory. */
const MAX_DOC = 64 * 1024;

export interface NitroDocument {
  moduleId: string;
  digest: string;
  /** Milliseconds since the epoch, from the NSM. */
  timestamp: number;
  pcrs: Map<number, Uint8Array>;
  certificate: Uint8Array;
  cabundle: Uint8Array[];
  publicKey: Uint8Array | undefined;
  userData: Uint8Array | undefined;
  nonce: Uint8Array | undefined;
  /** COSE parts, for callers that re-check. */
  protectedHeader: Uint8Array;
  payload: Uint8Array;
  signature: Uint8Array;
}

function cbor(bytes: Uint8Array, what: string): unknown {
  try {
    const tags: ((inner: unknown) => unknown)[] = [];
    tags[18] = (inner) => inner; // COSE_Sign1 tag, when present
    return cborDecode(bytes, { useMaps: true, rejectDuplicateMapKeys: true, tags, allowUndefined: false });
  } catch (err) {
    throw new EvidenceFormatError(`${what} is not valid CBOR: ${(err as Error).message}`, { cause: err });
  }
}

function bstr(v: unknown, field: string, optional = false): Uint8Array | undefined {
  if (v === undefined || v === null) {
    if (optional) return undefined;
    throw new EvidenceFormatError(`Nitro attestation document lacks ${field}`);
  }
  if (!(v instanceof Uint8Array)) throw new EvidenceFormatError(`Nitro attestation document ${field} must be a byte string`);
  return v;
}

/** Parses a Nitro attestation document: COSE_Sign1 [protected, unprotected, payload, signature]. */
export function parseNitroDocument(bytes: Uint8Array): NitroDocument {
  if (!(bytes instanceof Uint8Array)) throw new EvidenceFormatError('Nitro attestation document must be a Uint8Array');
  if (bytes.length > MAX_DOC) throw new EvidenceFormatError(`Nitro attestation document is ${bytes.length} bytes, over the ${MAX_DOC}-byte limit`);
  const cose = cbor(bytes, 'Nitro attestation document');
  if (!Array.isArray(cose) || cose.length !== 4) {
    throw new EvidenceFormatError('Nitro attestation document must be a COSE_Sign1 array of 4 elements');
  }
  const [prot, unprot, payloadBytes, sig] = cose as unknown[];
  const protectedHeader = bstr(prot, 'COSE protected header')!;
  if (!(unprot instanceof Map)) throw new EvidenceFormatError('Nitro COSE unprotected header must be a map');
  const payload = bstr(payloadBytes, 'COSE payload')!;
  const signature = bstr(sig, 'COSE signature')!;
  const header = cbor(protectedHeader, 'Nitro COSE protected header');
  if (!(header instanceof Map) || header.get(1) !== COSE_ES384) {
    throw new EvidenceFormatError(`Nitro COSE algorithm must be ES384 (-35), got ${header instanceof Map ? String(header.get(1)) : 'no header map'}`);
  }
  if (signature.length !== 96) throw new EvidenceFormatError(`Nitro ES384 signature must be 96 bytes, got ${signature.length}`);
  const doc = cbor(payload, 'Nitro attestation payload');
  if (!(doc instanceof Map)) throw new EvidenceFormatError('Nitro attestation payload must be a CBOR map');
  const moduleId = doc.get('module_id');
  const digest = doc.get('digest');
  const timestamp = doc.get('timestamp');
  if (typeof moduleId !== 'string' || moduleId.length === 0) throw new EvidenceFormatError('Nitro attestation payload lacks module_id');
  if (digest !== 'SHA384') throw new EvidenceFormatError(`Nitro attestation digest must be "SHA384", got ${JSON.stringify(digest)}`);
  // 8.64e15 ms is the last instant a Date can hold; beyond it claims could not state the time.
  if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp <= 0 || timestamp > 8.64e15) {
    throw new EvidenceFormatError('Nitro attestation payload timestamp must be a positive integer (ms) no later than year 275760');
  }
  const pcrsIn = doc.get('pcrs');
  if (!(pcrsIn instanceof Map) || pcrsIn.size === 0 || pcrsIn.size > 32) throw new EvidenceFormatError('Nitro attestation pcrs must be a map of 1 to 32 entries');
  const pcrs = new Map<number, Uint8Array>();
  for (const [k, v] of pcrsIn) {
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 0 || k > 31) throw new EvidenceFormatError(`Nitro PCR index ${String(k)} is not 0..31`);
    const value = bstr(v, `pcrs[${k}]`)!;
    if (value.length !== 48) throw new EvidenceFormatError(`Nitro PCR${k} must be 48 bytes (SHA-384), got ${value.length}`);
    pcrs.set(k, value);
  }
  const cabundleIn = doc.get('cabundle');
  if (!Array.isArray(cabundleIn) || cabundleIn.length === 0) throw new EvidenceFormatError('Nitro attestation cabundle must be a non-empty array');
  return {
    moduleId,
    digest,
    timestamp,
    pcrs,
    certificate: bstr(doc.get('certificate'), 'certificate')!,
    cabundle: cabundleIn.map((c: unknown, i) => bstr(c, `cabundle[${i}]`)!),
    publicKey: bstr(doc.get('public_key'), 'public_key', true),
    userData: bstr(doc.get('user_data'), 'user_data', true),
    nonce: bstr(doc.get('nonce'), 'nonce', true),
    protectedHeader,
    payload,
    signature,
  };
}

function cert(der: Uint8Array, what: string): X509Certificate {
  try {
    return new X509Certificate(Buffer.from(der));
  } catch (err) {
    throw new EvidenceFormatError(`Nitro ${what} is not a DER certificate`, { cause: err });
  }
}

/**
 * Verifies a Nitro attestation document: the chain leaf -> cabundle -> AWS Nitro root at `now`
 * (the leaf lives about three hours, so old documents verify only as of their own time) and the
 * ES384 signature over the COSE Sig_structure.
 */
export function verifyNitroDocument(bytes: Uint8Array, opts: VerifyOptions = {}): VerifiedEvidence<NitroDocument> {
  const now = verificationTime(opts.now);
  const doc = parseNitroDocument(bytes);
  const checks: Check[] = [];
  const leaf = cert(doc.certificate, 'certificate');
  const pool = doc.cabundle.map((c, i) => cert(c, `cabundle[${i}]`));
  // Signature first: it is the cheap check, and a tampered document fails it.
  const toBeSigned = cborEncode(['Signature1', doc.protectedHeader, new Uint8Array(0), doc.payload]);
  const key = publicKeyOf(leaf, 'Nitro enclave certificate');
  if (key.asymmetricKeyDetails?.namedCurve !== 'secp384r1' || !ecdsaVerifyRaw('sha384', key, toBeSigned, doc.signature)) {
    throw new EvidenceSignatureError('Nitro attestation document signature (ES384) does not verify with its certificate: the document was modified');
  }
  checks.push({ check: 'nitro.signature', ok: true, detail: 'COSE_Sign1 ES384 signature verifies with the enclave certificate' });
  const path = verifyChain(leaf, pool, {
    now,
    trustedRoots: rootSet(opts.trustedRoots ?? DEFAULT_ROOTS.nitro),
    what: 'Nitro enclave certificate chain',
    hint: "the cabundle must lead to AWS's Nitro Enclaves root G1",
  });
  checks.push({ check: 'nitro.chain', ok: true, detail: `${path.map(commonName).join(' -> ')} valid at ${now.toISOString()}, root pinned` });

  return { tee: 'nitro', claims: nitroClaims(doc), raw: doc, checks };
}

export function nitroClaims(doc: NitroDocument): Claims {
  const measurements: Record<string, string> = {};
  for (const [k, v] of [...doc.pcrs].sort((a, b) => a[0] - b[0])) measurements[`pcr${k}`] = hex(v);
  const zero = (i: number): boolean => {
    const p = doc.pcrs.get(i);
    return p !== undefined && isAllZero(p);
  };
  const platform: Record<string, string> = { moduleId: doc.moduleId, digest: doc.digest };
  if (doc.nonce) platform.nonce = hex(doc.nonce);
  if (doc.userData) platform.userData = hex(doc.userData);
  if (doc.publicKey) platform.publicKey = hex(doc.publicKey);
  return {
    tee: 'nitro',
    simulated: false,
    measurement: measurements.pcr0 ?? '',
    measurements,
    // The binding lives in the nonce (docs/PROTOCOL.md; our NSM provider puts it there); documents
    // without one fall back to user_data, where older producers put it.
    reportData: doc.nonce ? hex(doc.nonce) : doc.userData ? hex(doc.userData) : '',
    // Enclaves started in debug mode report PCR0..2 as zeros.
    debug: zero(0) && zero(1) && zero(2),
    tcb: {},
    platform,
    issuedAt: new Date(doc.timestamp).toISOString(),
  };
}
