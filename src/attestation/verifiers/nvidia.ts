import { createHash, type X509Certificate } from 'node:crypto';
import { EvidenceChainError, EvidenceFormatError, EvidenceSignatureError } from '../../errors.js';
import { ByteReader, hex } from '../bin.js';
import { commonName, extensionValue, publicKeyOf, verifyChain, verificationTime } from '../certs.js';
import { DEFAULT_ROOTS, rootSet } from '../roots.js';
import type { Check, Claims, VerifiedEvidence, VerifyOptions } from '../types.js';
import { ecdsaVerifyRaw } from './ecdsa.js';

/**
 * NVIDIA Hopper GPU attestation: an SPDM 1.1 GET_MEASUREMENTS request followed by the
 * MEASUREMENTS response, signed (ECDSA P-384) by the GPU's attestation key over
 * request || response-without-signature. The device chain comes with --certs.
 */
const SIG_SIZE = 96;
const SPDM_GET_MEASUREMENTS = 0xe0;
const SPDM_MEASUREMENTS = 0x60;
/** TCG DICE TcbInfo extension; its last 48 bytes are the firmware id. */
const OID_TCG_DICE_FWID = '2.23.133.5.4.1';

/** NVIDIA opaque-data field types we surface. */
const OPAQUE_NAMES: Record<number, string> = { 3: 'driverVersion', 6: 'vbiosVersion', 20: 'fwid' };

export interface SpdmMeasurementBlock {
  index: number;
  spec: number;
  valueType: number;
  value: Uint8Array;
}

export interface NvidiaReport {
  spdmVersion: number;
  requestNonce: Uint8Array;
  slotId: number;
  blocks: SpdmMeasurementBlock[];
  responderNonce: Uint8Array;
  opaque: { type: number; value: Uint8Array }[];
  signature: Uint8Array;
  signed: Uint8Array;
}

export function parseNvidiaReport(bytes: Uint8Array): NvidiaReport {
  if (!(bytes instanceof Uint8Array)) throw new EvidenceFormatError('NVIDIA report must be a Uint8Array');
  const r = new ByteReader(bytes, 'NVIDIA SPDM report');
  const reqVersion = r.u8('request.version');
  if (r.u8('request.code') !== SPDM_GET_MEASUREMENTS) throw new EvidenceFormatError('NVIDIA report must start with an SPDM GET_MEASUREMENTS request');
  r.u8('request.param1');
  r.u8('request.param2');
  const requestNonce = r.bytesOf(32, 'request.nonce');
  const slotId = r.u8('request.slot');
  const spdmVersion = r.u8('response.version');
  if (spdmVersion !== reqVersion) throw new EvidenceFormatError(`SPDM response version 0x${spdmVersion.toString(16)} differs from the request's`);
  if (r.u8('response.code') !== SPDM_MEASUREMENTS) throw new EvidenceFormatError('NVIDIA report response is not SPDM MEASUREMENTS');
  r.u8('response.param1');
  r.u8('response.param2');
  const count = r.u8('response.number_of_blocks');
  const recordLength = r.u8('record_length[0]') | (r.u8('record_length[1]') << 8) | (r.u8('record_length[2]') << 16);
  const record = new ByteReader(r.bytesOf(recordLength, 'measurement record'), 'SPDM measurement record');
  const blocks: SpdmMeasurementBlock[] = [];
  for (let i = 0; i < count; i++) {
    const index = record.u8('block.index');
    const spec = record.u8('block.spec');
    const size = record.u16('block.size');
    const m = new ByteReader(record.bytesOf(size, `block ${index}`), `SPDM measurement block ${index}`);
    const valueType = m.u8('DMTF value type');
    const valueSize = m.u16('DMTF value size');
    const value = m.bytesOf(valueSize, 'DMTF value');
    if (m.remaining !== 0) throw new EvidenceFormatError(`SPDM measurement block ${index} has ${m.remaining} bytes past its value`);
    blocks.push({ index, spec, valueType, value });
  }
  if (record.remaining !== 0) throw new EvidenceFormatError(`SPDM measurement record has ${record.remaining} bytes past its ${count} blocks`);
  const responderNonce = r.bytesOf(32, 'response.nonce');
  const opaqueLen = r.u16('opaque_length');
  const o = new ByteReader(r.bytesOf(opaqueLen, 'opaque data'), 'NVIDIA opaque data');
  const opaque: { type: number; value: Uint8Array }[] = [];
  while (o.remaining > 0) {
    const type = o.u16('opaque.type');
    opaque.push({ type, value: o.bytesOf(o.u16('opaque.size'), `opaque field ${type}`) });
  }
  const signed = bytes.slice(0, r.offset);
  const signature = r.bytesOf(SIG_SIZE, 'signature');
  if (r.remaining !== 0) throw new EvidenceFormatError(`NVIDIA report has ${r.remaining} bytes after its signature`);
  return { spdmVersion, requestNonce, slotId, blocks, responderNonce, opaque, signature, signed };
}

export interface NvidiaVerifyOptions extends VerifyOptions {
  /** The GPU's certificate chain (leaf first is not required). */
  certificates: readonly X509Certificate[];
}

export function verifyNvidiaReport(bytes: Uint8Array, opts: NvidiaVerifyOptions): VerifiedEvidence<NvidiaReport> {
  const now = verificationTime(opts.now);
  const report = parseNvidiaReport(bytes);
  const checks: Check[] = [];
  const leaves = opts.certificates.filter((c) => !c.ca);
  if (leaves.length === 0) throw new EvidenceChainError('NVIDIA report needs the GPU attestation certificate chain; pass it with --certs');
  const leaf = leaves.find((c) => {
    const key = publicKeyOf(c, 'NVIDIA attestation certificate');
    return key.asymmetricKeyDetails?.namedCurve === 'secp384r1' && ecdsaVerifyRaw('sha384', key, report.signed, report.signature);
  });
  if (!leaf) throw new EvidenceSignatureError('NVIDIA SPDM measurement signature does not verify with the given attestation certificate: the report was modified or the chain is another GPU\'s');
  checks.push({ check: 'nvidia.signature', ok: true, detail: `SPDM MEASUREMENTS signature (ECDSA P-384) verifies with "${commonName(leaf)}"` });
  const path = verifyChain(leaf, opts.certificates, {
    now,
    trustedRoots: rootSet(opts.trustedRoots ?? DEFAULT_ROOTS.nvidia),
    what: 'NVIDIA GPU certificate chain',
    hint: "the GPU chain must lead to NVIDIA's Device Identity CA",
  });
  checks.push({ check: 'nvidia.chain', ok: true, detail: `${path.map(commonName).join(' -> ')} valid at ${now.toISOString()}, root pinned` });

  // The FWID ties the signing certificate to the firmware that made the report: both sides must carry it.
  const fwidExt = extensionValue(leaf, OID_TCG_DICE_FWID);
  const fwidOpaque = report.opaque.find((f) => f.type === 20)?.value;
  if (!fwidExt || fwidExt.length < 48) {
    throw new EvidenceChainError(`NVIDIA attestation certificate "${commonName(leaf)}" lacks the TCG DICE FWID extension (${OID_TCG_DICE_FWID}); the report cannot be tied to its firmware`);
  }
  if (!fwidOpaque) throw new EvidenceFormatError('NVIDIA report opaque data lacks the FWID field (type 20); the report cannot be tied to its certificate');
  const certFwid = fwidExt.subarray(fwidExt.length - 48);
  if (Buffer.compare(Buffer.from(certFwid), Buffer.from(fwidOpaque)) !== 0) {
    throw new EvidenceChainError(`NVIDIA report FWID ${hex(fwidOpaque)} is not the attestation certificate's ${hex(certFwid)}`);
  }
  checks.push({ check: 'nvidia.fwid', ok: true, detail: 'report FWID equals the certificate FWID' });
  return { tee: 'nvidia', claims: nvidiaClaims(report, hex(certFwid)), raw: report, checks };
}

export function nvidiaClaims(report: NvidiaReport, certFwid?: string): Claims {
  const measurements: Record<string, string> = {};
  const all = createHash('sha384');
  for (const b of report.blocks) {
    measurements[`m${b.index}`] = hex(b.value);
    all.update(b.value);
  }
  const platform: Record<string, string> = { responderNonce: hex(report.responderNonce), spdmVersion: `0x${report.spdmVersion.toString(16)}` };
  for (const f of report.opaque) {
    const name = OPAQUE_NAMES[f.type];
    if (!name) continue;
    platform[name] = name === 'driverVersion' ? Buffer.from(f.value).toString('latin1').replace(/\0+$/, '') : hex(f.value);
  }
  if (certFwid) platform.certFwid = certFwid;
  return {
    tee: 'nvidia',
    simulated: false,
    // No single launch digest in SPDM: the primary measurement is SHA-384 over all block values, in order.
    measurement: all.digest('hex'),
    measurements,
    // The 32-byte nonce the requester put in GET_MEASUREMENTS: the only caller-chosen bytes the GPU signs.
    reportData: hex(report.requestNonce),
    // Neither the SPDM fields nor NVIDIA's opaque data say CC on vs DevTools mode (NVIDIA's tools read
    // it from NVML, unsigned). Assume the unsafe value; the policy settles it by pinned measurements.
    debug: true,
    debugAttested: false,
    tcb: {},
    platform,
  };
}
