import { EvidenceFormatError } from '../errors.js';

/** One DER TLV. Only what the TEE certificate extensions need: tag, contents, children on demand. */
export interface Tlv {
  tag: number;
  value: Uint8Array;
  /** Offset just past this element in the parent buffer. */
  end: number;
}

export function readTlv(buf: Uint8Array, at: number, what: string): Tlv {
  const fail = (why: string): never => {
    throw new EvidenceFormatError(`${what}: malformed DER at offset ${at} (${why}); the certificate extension is corrupt`);
  };
  if (at + 2 > buf.length) fail('truncated header');
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) fail('multi-byte tags are not used here');
  let len = buf[at + 1]!;
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) fail('unsupported length encoding');
    if (p + n > buf.length) fail('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    p += n;
  }
  if (p + len > buf.length) fail(`length ${len} runs past the end`);
  return { tag, value: buf.subarray(p, p + len), end: p + len };
}

export function readChildren(tlv: Tlv, what: string): Tlv[] {
  const out: Tlv[] = [];
  let at = 0;
  while (at < tlv.value.length) {
    const child = readTlv(tlv.value, at, what);
    out.push(child);
    at = child.end;
  }
  return out;
}

/** Decodes a DER INTEGER that fits a JS number (TCB components are small). */
export function derInteger(tlv: Tlv, what: string): number {
  if (tlv.tag !== 0x02 || tlv.value.length === 0 || tlv.value.length > 6) {
    throw new EvidenceFormatError(`${what}: expected a small DER INTEGER, got tag 0x${tlv.tag.toString(16)} of ${tlv.value.length} bytes`);
  }
  let v = 0;
  for (const b of tlv.value) v = v * 256 + b;
  if (tlv.value[0]! & 0x80) v -= 2 ** (8 * tlv.value.length);
  return v;
}

/** Dotted-decimal form of a DER OBJECT IDENTIFIER's contents. */
export function derOid(tlv: Tlv, what: string): string {
  if (tlv.tag !== 0x06 || tlv.value.length === 0) throw new EvidenceFormatError(`${what}: expected an OBJECT IDENTIFIER`);
  const parts: number[] = [];
  let v = 0;
  for (const b of tlv.value) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift() ?? 0;
  const a = first < 80 ? Math.floor(first / 40) : 2;
  return [a, first - a * 40, ...parts].join('.');
}

/** The whole encoding (header and contents) of a TLV read at `at`. */
function encodingOf(buf: Uint8Array, at: number, tlv: Tlv): Uint8Array {
  return buf.subarray(at, tlv.end);
}

function derTime(tlv: Tlv, what: string): Date {
  const s = Buffer.from(tlv.value).toString('latin1');
  let m: RegExpExecArray | null;
  let year: number;
  if (tlv.tag === 0x17 && (m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    year = Number(m[1]) + (Number(m[1]) < 50 ? 2000 : 1900); // RFC 5280 4.1.2.5.1
  } else if (tlv.tag === 0x18 && (m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    year = Number(m[1]);
  } else {
    throw new EvidenceFormatError(`${what}: expected a UTCTime or GeneralizedTime in Zulu form, got tag 0x${tlv.tag.toString(16)} "${s.slice(0, 20)}"`);
  }
  const d = new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  if (Number.isNaN(d.getTime())) throw new EvidenceFormatError(`${what}: invalid time "${s}"`);
  return d;
}

function expectTag(tlv: Tlv | undefined, tag: number, what: string, field: string): Tlv {
  if (!tlv || tlv.tag !== tag) {
    throw new EvidenceFormatError(`${what}: ${field} is missing or has tag 0x${(tlv?.tag ?? 0).toString(16)} instead of 0x${tag.toString(16)}; the CRL is corrupt`);
  }
  return tlv;
}

/** Lower-case hex of a serial number without leading zeros, so DER padding and hex formatting cannot hide a match. */
export function normalSerial(hexOrBytes: string | Uint8Array): string {
  const h = typeof hexOrBytes === 'string' ? hexOrBytes.toLowerCase().replace(/[^0-9a-f]/g, '') : Buffer.from(hexOrBytes).toString('hex');
  return h.replace(/^0+(?=.)/, '');
}

/** An X.509 CRL (RFC 5280 CertificateList), read strictly: any malformed part is an EvidenceFormatError. */
export interface ParsedCrl {
  /** The signed bytes (tbsCertList, with its header). */
  tbs: Uint8Array;
  /** DER of the signature AlgorithmIdentifier (outer; must equal the inner one). */
  signatureAlgorithm: Uint8Array;
  /** Signature bits (the BIT STRING contents after its unused-bits byte). */
  signature: Uint8Array;
  /** DER of the issuer Name, compared byte for byte with the issuer certificate's subject. */
  issuer: Uint8Array;
  thisUpdate: Date;
  nextUpdate?: Date;
  /** Revoked serial numbers, normalised with normalSerial(). */
  revoked: Set<string>;
}

export function parseCrl(der: Uint8Array, what: string): ParsedCrl {
  const outer = readTlv(der, 0, what);
  if (outer.tag !== 0x30) throw new EvidenceFormatError(`${what}: not a DER CertificateList (tag 0x${outer.tag.toString(16)})`);
  if (outer.end !== der.length) throw new EvidenceFormatError(`${what}: ${der.length - outer.end} bytes after the CRL`);
  const base = der.length - outer.value.length; // offset of the contents in der
  const tbsTlv = expectTag(readTlv(outer.value, 0, what), 0x30, what, 'tbsCertList');
  const algTlv = expectTag(readTlv(outer.value, tbsTlv.end, what), 0x30, what, 'signatureAlgorithm');
  const sigTlv = expectTag(readTlv(outer.value, algTlv.end, what), 0x03, what, 'signatureValue');
  if (sigTlv.end !== outer.value.length) throw new EvidenceFormatError(`${what}: extra fields after the signature`);
  if (sigTlv.value.length < 2 || sigTlv.value[0] !== 0) throw new EvidenceFormatError(`${what}: signature BIT STRING is empty or not whole bytes`);
  const tbs = der.subarray(base, base + tbsTlv.end);
  const fields = readChildren(tbsTlv, what);
  let i = 0;
  if (fields[i]?.tag === 0x02) {
    if (derInteger(fields[i]!, `${what} version`) !== 1) throw new EvidenceFormatError(`${what}: version is not v2`);
    i++;
  }
  const innerAlg = expectTag(fields[i++], 0x30, what, 'tbsCertList.signature');
  const signatureAlgorithm = encodingOf(outer.value, tbsTlv.end, algTlv);
  const innerAlgDer = Buffer.concat([Buffer.from([0x30]), derLength(innerAlg.value.length), Buffer.from(innerAlg.value)]);
  if (!Buffer.from(signatureAlgorithm).equals(innerAlgDer)) throw new EvidenceFormatError(`${what}: inner and outer signature algorithms differ`);
  const issuerTlv = expectTag(fields[i++], 0x30, what, 'issuer');
  const issuer = new Uint8Array(Buffer.concat([Buffer.from([0x30]), derLength(issuerTlv.value.length), Buffer.from(issuerTlv.value)]));
  const thisUpdate = derTime(fields[i++] ?? fail(what, 'thisUpdate'), `${what} thisUpdate`);
  let nextUpdate: Date | undefined;
  if (fields[i] && (fields[i]!.tag === 0x17 || fields[i]!.tag === 0x18)) nextUpdate = derTime(fields[i++]!, `${what} nextUpdate`);
  const revoked = new Set<string>();
  if (fields[i]?.tag === 0x30) {
    for (const entry of readChildren(fields[i++]!, what)) {
      const [serial, date] = readChildren(expectTag(entry, 0x30, what, 'revokedCertificates entry'), what);
      expectTag(serial, 0x02, what, 'revoked userCertificate');
      derTime(date ?? fail(what, 'revocationDate'), `${what} revocationDate`);
      if (serial!.value.length === 0 || serial!.value.length > 64) throw new EvidenceFormatError(`${what}: revoked serial number of ${serial!.value.length} bytes`);
      revoked.add(normalSerial(serial!.value));
    }
  }
  if (fields[i]?.tag === 0xa0) i++; // crlExtensions
  if (i !== fields.length) throw new EvidenceFormatError(`${what}: unexpected field (tag 0x${fields[i]!.tag.toString(16)}) in tbsCertList`);
  return { tbs, signatureAlgorithm, signature: sigTlv.value.subarray(1), issuer, thisUpdate, ...(nextUpdate ? { nextUpdate } : {}), revoked };
}

function fail(what: string, field: string): never {
  throw new EvidenceFormatError(`${what}: ${field} is missing; the CRL is corrupt`);
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** DER of a certificate's subject Name (to match a CRL's issuer exactly). */
export function certificateSubject(certDer: Uint8Array, what: string): Uint8Array {
  const cert = readTlv(certDer, 0, what);
  const tbs = readChildren(cert, what)[0];
  if (!tbs || tbs.tag !== 0x30) throw new EvidenceFormatError(`${what}: certificate has no tbsCertificate`);
  const f = readChildren(tbs, what);
  const k = f[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  const subject = f[k + 4];
  if (!subject || subject.tag !== 0x30) throw new EvidenceFormatError(`${what}: certificate has no subject`);
  return new Uint8Array(Buffer.concat([Buffer.from([0x30]), derLength(subject.value.length), Buffer.from(subject.value)]));
}
