import { verify as cryptoVerify, type X509Certificate } from 'node:crypto';
import { EvidenceChainError, EvidenceFormatError, EvidenceSignatureError } from '../../errors.js';
import { ByteReader, hex, isAllZero } from '../bin.js';
import { checkCrls, extensionValue, verifyChain, commonName, publicKeyOf, verificationTime } from '../certs.js';
import { derInteger, readTlv } from '../der.js';
import { DEFAULT_ROOTS, rootSet } from '../roots.js';
import type { Check, Claims, VerifiedEvidence, VerifyOptions } from '../types.js';

/** ATTESTATION_REPORT size in the SEV-SNP firmware ABI (table "ATTESTATION_REPORT Structure"). */
export const SNP_REPORT_SIZE = 1184;
/** The signature covers bytes 0x000..0x29F. */
export const SNP_SIGNED_LENGTH = 0x2a0;

export type SnpProduct = 'Milan' | 'Genoa' | 'Turin';

export interface SnpTcb {
  /** The raw 64-bit TCB_VERSION; its byte layout depends on the product (Turin adds FMC). */
  raw: bigint;
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
  fmc?: number;
}

export interface SnpReport {
  version: number;
  guestSvn: number;
  policy: bigint;
  familyId: Uint8Array;
  imageId: Uint8Array;
  vmpl: number;
  signatureAlgo: number;
  currentTcb: bigint;
  platformInfo: bigint;
  flags: number;
  /** 0 = VCEK, 1 = VLEK, 7 = none (flags bits 2..4). */
  signingKey: number;
  maskChipKey: boolean;
  reportData: Uint8Array;
  measurement: Uint8Array;
  hostData: Uint8Array;
  idKeyDigest: Uint8Array;
  authorKeyDigest: Uint8Array;
  reportId: Uint8Array;
  reportIdMa: Uint8Array;
  reportedTcb: bigint;
  /** Present from report version 3 on; zero in version 2. */
  cpuid: { family: number; model: number; stepping: number } | undefined;
  chipId: Uint8Array;
  committedTcb: bigint;
  currentVersion: { major: number; minor: number; build: number };
  committedVersion: { major: number; minor: number; build: number };
  launchTcb: bigint;
  /** Little-endian, zero-extended to 72 bytes each, as the firmware writes them. */
  signatureR: Uint8Array;
  signatureS: Uint8Array;
  /** The bytes the signature covers. */
  signed: Uint8Array;
}

export const SNP_POLICY_DEBUG_BIT = 19n;

/**
 * Byte ranges [from, to) the firmware ABI reserves (must be zero) in each report version. A non-zero
 * reserved byte means a malformed report or a newer ABI whose fields this verifier would ignore;
 * the bytes after R and S are outside the signature, so this is their only check.
 */
export function snpReservedRanges(version: number): [number, number][] {
  return [
    [0x4c, 0x50],
    // Version 2 reserves the CPUID bytes too.
    [version >= 3 ? 0x18b : 0x188, 0x1a0],
    [0x1eb, 0x1ec],
    [0x1ef, 0x1f0],
    // Version 5 adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR.
    [version >= 5 ? 0x208 : 0x1f8, SNP_SIGNED_LENGTH],
    [SNP_SIGNED_LENGTH + 144, SNP_REPORT_SIZE],
  ];
}

/** Parses an SEV-SNP ATTESTATION_REPORT (versions 2 to 5). Throws EvidenceFormatError. */
export function parseSnpReport(bytes: Uint8Array): SnpReport {
  if (!(bytes instanceof Uint8Array)) throw new EvidenceFormatError('SEV-SNP report must be a Uint8Array');
  if (bytes.length !== SNP_REPORT_SIZE) {
    throw new EvidenceFormatError(
      `SEV-SNP report must be ${SNP_REPORT_SIZE} bytes, got ${bytes.length}; pass the raw ATTESTATION_REPORT (for Azure use --type azure-snp)`,
    );
  }
  const r = new ByteReader(bytes, 'SEV-SNP report');
  const version = r.u32('VERSION');
  if (version < 2 || version > 5) {
    throw new EvidenceFormatError(`SEV-SNP report version ${version} is not supported (2 to 5 are); the input may not be an SNP report`);
  }
  const guestSvn = r.u32('GUEST_SVN');
  const policy = r.u64('POLICY');
  const familyId = r.bytesOf(16, 'FAMILY_ID');
  const imageId = r.bytesOf(16, 'IMAGE_ID');
  const vmpl = r.u32('VMPL');
  const signatureAlgo = r.u32('SIGNATURE_ALGO');
  if (signatureAlgo !== 1) {
    throw new EvidenceFormatError(`SEV-SNP SIGNATURE_ALGO is ${signatureAlgo}; only 1 (ECDSA P-384 with SHA-384) is defined`);
  }
  const currentTcb = r.u64('CURRENT_TCB');
  const platformInfo = r.u64('PLATFORM_INFO');
  const flags = r.u32('FLAGS');
  r.skip(4, 'reserved');
  const reportData = r.bytesOf(64, 'REPORT_DATA');
  const measurement = r.bytesOf(48, 'MEASUREMENT');
  const hostData = r.bytesOf(32, 'HOST_DATA');
  const idKeyDigest = r.bytesOf(48, 'ID_KEY_DIGEST');
  const authorKeyDigest = r.bytesOf(48, 'AUTHOR_KEY_DIGEST');
  const reportId = r.bytesOf(32, 'REPORT_ID');
  const reportIdMa = r.bytesOf(32, 'REPORT_ID_MA');
  const reportedTcb = r.u64('REPORTED_TCB');
  const family = r.u8('CPUID_FAM_ID');
  const model = r.u8('CPUID_MOD_ID');
  const stepping = r.u8('CPUID_STEP');
  r.seek(0x1a0);
  const chipId = r.bytesOf(64, 'CHIP_ID');
  const committedTcb = r.u64('COMMITTED_TCB');
  const cur = { build: r.u8('CURRENT_BUILD'), minor: r.u8('CURRENT_MINOR'), major: r.u8('CURRENT_MAJOR') };
  r.skip(1, 'reserved');
  const com = { build: r.u8('COMMITTED_BUILD'), minor: r.u8('COMMITTED_MINOR'), major: r.u8('COMMITTED_MAJOR') };
  r.skip(1, 'reserved');
  const launchTcb = r.u64('LAUNCH_TCB');
  r.seek(SNP_SIGNED_LENGTH);
  const signatureR = r.bytesOf(72, 'SIGNATURE.R');
  const signatureS = r.bytesOf(72, 'SIGNATURE.S');
  for (const [from, to] of snpReservedRanges(version)) {
    const at = bytes.subarray(from, to).findIndex((b) => b !== 0);
    if (at >= 0) {
      throw new EvidenceFormatError(
        `SEV-SNP report version ${version}: reserved byte at offset 0x${(from + at).toString(16)} is 0x${bytes[from + at]!.toString(16)}, must be zero; the report is malformed or from a firmware ABI this verifier does not know`,
      );
    }
  }
  return {
    version,
    guestSvn,
    policy,
    familyId,
    imageId,
    vmpl,
    signatureAlgo,
    currentTcb,
    platformInfo,
    flags,
    signingKey: (flags >> 2) & 0x7,
    maskChipKey: (flags & 0x2) !== 0,
    reportData,
    measurement,
    hostData,
    idKeyDigest,
    authorKeyDigest,
    reportId,
    reportIdMa,
    reportedTcb,
    cpuid: version >= 3 ? { family, model, stepping } : undefined,
    chipId,
    committedTcb,
    currentVersion: cur,
    committedVersion: com,
    launchTcb,
    signatureR,
    signatureS,
    signed: bytes.slice(0, SNP_SIGNED_LENGTH),
  };
}

/** Product from CPUID (report v3+): family 19h models 0h-Fh Milan, 10h-1Fh and A0h-AFh Genoa; family 1Ah Turin. */
export function snpProductFromCpuid(c: { family: number; model: number }): SnpProduct | undefined {
  if (c.family === 0x19 && c.model <= 0x0f) return 'Milan';
  if (c.family === 0x19 && ((c.model >= 0x10 && c.model <= 0x1f) || (c.model >= 0xa0 && c.model <= 0xaf))) return 'Genoa';
  if (c.family === 0x1a && c.model <= 0x11) return 'Turin';
  return undefined;
}

/** TCB_VERSION bytes: Milan/Genoa [bl, tee, 0, 0, 0, 0, snp, ucode]; Turin [fmc, bl, tee, snp, 0, 0, 0, ucode]. */
export function decodeSnpTcb(raw: bigint, product: SnpProduct): SnpTcb {
  const b = (i: number): number => Number((raw >> BigInt(8 * i)) & 0xffn);
  if (product === 'Turin') return { raw, fmc: b(0), bootloader: b(1), tee: b(2), snp: b(3), microcode: b(7) };
  return { raw, bootloader: b(0), tee: b(1), snp: b(6), microcode: b(7) };
}

export interface SnpVerifyOptions extends VerifyOptions {
  /** VCEK or VLEK, and the ASK/ASVK + ARK chain (e.g. KDS cert_chain). */
  certificates: readonly X509Certificate[];
  /**
   * AMD CRLs (DER), e.g. KDS `/vcek/v1/{product}/crl` (signed by the ARK, covering the ASK/ASVK) and
   * one from the ASK covering the VCEK. Each must be signed by a certificate of the verified chain and
   * valid at `now`; a listed certificate throws EvidenceRevokedError.
   */
  crls?: readonly Uint8Array[];
}

const OID_PRODUCT_NAME = '1.3.6.1.4.1.3704.1.2';
const OID_BL_SPL = '1.3.6.1.4.1.3704.1.3.1';
const OID_TEE_SPL = '1.3.6.1.4.1.3704.1.3.2';
const OID_SNP_SPL = '1.3.6.1.4.1.3704.1.3.3';
const OID_UCODE_SPL = '1.3.6.1.4.1.3704.1.3.8';
const OID_FMC_SPL = '1.3.6.1.4.1.3704.1.3.9';
const OID_HWID = '1.3.6.1.4.1.3704.1.4';

function leToBe48(le72: Uint8Array, name: string): Uint8Array {
  if (!isAllZero(le72.subarray(48))) {
    throw new EvidenceSignatureError(`SEV-SNP signature ${name} has non-zero bytes beyond 48; the report signature is malformed`);
  }
  return le72.slice(0, 48).reverse();
}

function extInt(cert: X509Certificate, oid: string): number | undefined {
  const v = extensionValue(cert, oid);
  return v ? derInteger(readTlv(v, 0, `extension ${oid}`), `extension ${oid}`) : undefined;
}

function productOf(cert: X509Certificate): string | undefined {
  const v = extensionValue(cert, OID_PRODUCT_NAME);
  if (!v) return undefined;
  // IA5String inside the extension value, e.g. "Milan-B0"; some certificates carry the bare string.
  const s = v[0] === 0x16 ? Buffer.from(readTlv(v, 0, 'productName').value).toString('latin1') : Buffer.from(v).toString('latin1');
  return s;
}

function signatureVerifies(cert: X509Certificate, report: SnpReport, sig: Uint8Array): boolean {
  const key = publicKeyOf(cert, 'SEV-SNP signing certificate');
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1') return false;
  try {
    return cryptoVerify('sha384', report.signed, { key, dsaEncoding: 'ieee-p1363' }, sig);
  } catch {
    return false;
  }
}

/**
 * Verifies an SEV-SNP report: ECDSA P-384 signature by the VCEK/VLEK, the chain VCEK -> ASK -> ARK
 * (or VLEK -> ASVK -> ARK) to a pinned AMD root at `now`, and that the certificate's TCB and
 * hardware-id extensions match the report. Throws EvidenceFormat/Signature/ChainError.
 */
export function verifySnpReport(bytes: Uint8Array, opts: SnpVerifyOptions): VerifiedEvidence<SnpReport> {
  const now = verificationTime(opts.now);
  const report = parseSnpReport(bytes);
  const checks: Check[] = [];
  const keyKind = report.signingKey === 0 ? 'VCEK' : report.signingKey === 1 ? 'VLEK' : undefined;
  if (!keyKind) {
    throw new EvidenceSignatureError(`SEV-SNP report says SIGNING_KEY=${report.signingKey} (not VCEK or VLEK): it is unsigned and cannot be verified`);
  }
  const cpuidProduct = report.cpuid ? snpProductFromCpuid(report.cpuid) : undefined;
  const tcbForHint = decodeSnpTcb(report.reportedTcb, cpuidProduct ?? 'Milan');
  const hint =
    keyKind === 'VCEK'
      ? `fetch the VCEK from https://kdsintf.amd.com/vcek/v1/${cpuidProduct ?? '{Milan|Genoa}'}/${hex(report.chipId)}` +
        `?blSPL=${tcbForHint.bootloader}&teeSPL=${tcbForHint.tee}&snpSPL=${tcbForHint.snp}&ucodeSPL=${tcbForHint.microcode} ` +
        `and the ASK/ARK from .../vcek/v1/${cpuidProduct ?? '{product}'}/cert_chain, and pass them with --certs`
      : `pass the VLEK (from the cloud provider) and the ASVK/ARK from https://kdsintf.amd.com/vlek/v1/${cpuidProduct ?? '{product}'}/cert_chain with --certs`;

  const sig = new Uint8Array(96);
  sig.set(leToBe48(report.signatureR, 'R'), 0);
  sig.set(leToBe48(report.signatureS, 'S'), 48);

  const wantCn = keyKind === 'VCEK' ? 'SEV-VCEK' : 'SEV-VLEK';
  const candidates = opts.certificates.filter((c) => commonName(c) === wantCn);
  if (candidates.length === 0) {
    throw new EvidenceChainError(`SEV-SNP report is signed by a ${keyKind} but no ${keyKind} certificate was given; ${hint}`);
  }
  const leaf = candidates.find((c) => signatureVerifies(c, report, sig));
  if (!leaf) {
    throw new EvidenceSignatureError(
      `SEV-SNP report signature does not verify with the ${candidates.length} ${keyKind} certificate(s) given: ` +
        'the report was modified, or the certificate belongs to another chip or TCB',
    );
  }
  checks.push({ check: 'snp.signature', ok: true, detail: `ECDSA P-384/SHA-384 signature verifies with the ${keyKind}` });

  const trusted = rootSet(opts.trustedRoots ?? DEFAULT_ROOTS.snp);
  const path = verifyChain(leaf, opts.certificates, {
    now,
    trustedRoots: trusted,
    what: `SEV-SNP ${keyKind} chain`,
    hint,
  });
  const arkCn = commonName(path[path.length - 1]!);
  const askCn = path.length > 2 ? commonName(path[1]!) : '';
  checks.push({ check: 'snp.chain', ok: true, detail: `${path.map(commonName).join(' -> ')} valid at ${now.toISOString()}, root pinned` });
  let crlCovered: string[] = [];
  if (opts.crls?.length) {
    const r = checkCrls(opts.crls, path, { now, what: `SEV-SNP ${keyKind} chain` });
    crlCovered = [...r.covered].sort().map((k) => commonName(path[k]!));
    for (const c of r.checks) checks.push({ check: 'snp.crl', ok: true, detail: `CRL from ${c.issuer} signed and valid at ${now.toISOString()}; ${c.covered} certificate(s) of the chain checked, none revoked` });
  }

  const chainProduct = /^ARK-(\w+)$/.exec(arkCn)?.[1];
  if (chainProduct !== 'Milan' && chainProduct !== 'Genoa' && chainProduct !== 'Turin') {
    throw new EvidenceChainError(`SEV-SNP chain ends at "${arkCn}", not an AMD ARK for Milan, Genoa or Turin`);
  }
  const product: SnpProduct = chainProduct;
  const expectAsk = keyKind === 'VCEK' ? `SEV-${product}` : `SEV-VLEK-${product}`;
  if (askCn !== expectAsk) {
    throw new EvidenceChainError(`SEV-SNP ${keyKind} must be issued by "${expectAsk}", but the chain goes through "${askCn}"`);
  }
  if (cpuidProduct && cpuidProduct !== product) {
    throw new EvidenceChainError(
      `SEV-SNP report CPUID (family 0x${report.cpuid!.family.toString(16)} model 0x${report.cpuid!.model.toString(16)}) is ${cpuidProduct}, but the chain is ${product}'s`,
    );
  }
  const leafProduct = productOf(leaf);
  // Siena parts are certified under the Genoa chain.
  const leafFamily = leafProduct?.startsWith('Siena') ? 'Genoa' : leafProduct;
  if (leafProduct !== undefined && !leafFamily!.startsWith(product)) {
    throw new EvidenceChainError(`SEV-SNP ${keyKind} productName "${leafProduct}" does not match the ${product} chain`);
  }
  checks.push({ check: 'snp.product', ok: true, detail: `${product}${leafProduct ? ` (${leafProduct})` : ''}` });

  const reported = decodeSnpTcb(report.reportedTcb, product);
  const mismatches: string[] = [];
  const want: [string, string, number | undefined][] = [
    ['blSPL', OID_BL_SPL, reported.bootloader],
    ['teeSPL', OID_TEE_SPL, reported.tee],
    ['snpSPL', OID_SNP_SPL, reported.snp],
    ['ucodeSPL', OID_UCODE_SPL, reported.microcode],
  ];
  if (product === 'Turin') want.push(['fmcSPL', OID_FMC_SPL, reported.fmc]);
  for (const [name, oid, value] of want) {
    const got = extInt(leaf, oid);
    if (got === undefined) mismatches.push(`${keyKind} lacks the ${name} extension`);
    else if (got !== value) mismatches.push(`${name}: ${keyKind} says ${got}, REPORTED_TCB says ${value}`);
  }
  if (mismatches.length) {
    throw new EvidenceChainError(`SEV-SNP ${keyKind} TCB extensions do not match the report: ${mismatches.join('; ')}; fetch the ${keyKind} for this TCB`);
  }
  checks.push({ check: 'snp.tcb_extensions', ok: true, detail: `${keyKind} TCB extensions equal REPORTED_TCB` });

  if (keyKind === 'VCEK') {
    const hwid = extensionValue(leaf, OID_HWID);
    if (!hwid) throw new EvidenceChainError('SEV-SNP VCEK lacks the hwID extension; it cannot be tied to a chip');
    // Normally the raw 64 bytes; tolerate a DER OCTET STRING wrapper.
    const id = hwid.length === 66 && hwid[0] === 0x04 && hwid[1] === 0x40 ? hwid.subarray(2) : hwid;
    if (report.maskChipKey) {
      if (!isAllZero(report.chipId)) throw new EvidenceFormatError('SEV-SNP report sets MASK_CHIP_ID but CHIP_ID is not zero');
      checks.push({ check: 'snp.hwid', ok: true, detail: 'CHIP_ID masked by the guest; hwID not compared' });
    } else if (Buffer.compare(Buffer.from(id), Buffer.from(report.chipId)) !== 0) {
      throw new EvidenceChainError(`SEV-SNP VCEK hwID ${hex(id)} is not the report's CHIP_ID ${hex(report.chipId)}: the VCEK belongs to another chip`);
    } else {
      checks.push({ check: 'snp.hwid', ok: true, detail: 'VCEK hwID equals CHIP_ID' });
    }
  }

  const claims = snpClaims(report, product, keyKind);
  // Which certificates of the chain were checked against a CRL.
  if (opts.crls?.length) claims.platform.crlChecked = crlCovered.join(',');
  return { tee: 'snp', claims, raw: report, checks };
}

export function snpClaims(report: SnpReport, product: SnpProduct, keyKind: string): Claims {
  const t = decodeSnpTcb(report.reportedTcb, product);
  const tcb: Record<string, number | string> = {
    bootloader: t.bootloader,
    tee: t.tee,
    snp: t.snp,
    microcode: t.microcode,
    guestSvn: report.guestSvn,
    reportedTcb: `0x${report.reportedTcb.toString(16).padStart(16, '0')}`,
    committedTcb: `0x${report.committedTcb.toString(16).padStart(16, '0')}`,
    currentTcb: `0x${report.currentTcb.toString(16).padStart(16, '0')}`,
    launchTcb: `0x${report.launchTcb.toString(16).padStart(16, '0')}`,
    firmware: `${report.currentVersion.major}.${report.currentVersion.minor}.${report.currentVersion.build}`,
  };
  if (t.fmc !== undefined) tcb.fmc = t.fmc;
  // The other TCB words decoded too, so a minimum can be required of what runs now (current),
  // what cannot be rolled back (committed) and what the guest was launched on (launch).
  for (const [name, raw] of [['current', report.currentTcb], ['committed', report.committedTcb], ['launch', report.launchTcb]] as const) {
    const d = decodeSnpTcb(raw, product);
    tcb[`${name}Bootloader`] = d.bootloader;
    tcb[`${name}Tee`] = d.tee;
    tcb[`${name}Snp`] = d.snp;
    tcb[`${name}Microcode`] = d.microcode;
    if (d.fmc !== undefined) tcb[`${name}Fmc`] = d.fmc;
  }
  return {
    tee: 'snp',
    simulated: false,
    measurement: hex(report.measurement),
    measurements: {
      measurement: hex(report.measurement),
      hostData: hex(report.hostData),
      idKeyDigest: hex(report.idKeyDigest),
      authorKeyDigest: hex(report.authorKeyDigest),
      familyId: hex(report.familyId),
      imageId: hex(report.imageId),
    },
    reportData: hex(report.reportData),
    debug: ((report.policy >> SNP_POLICY_DEBUG_BIT) & 1n) === 1n,
    vmpl: report.vmpl,
    tcb,
    platform: {
      product,
      signingKey: keyKind,
      chipId: hex(report.chipId),
      vmpl: String(report.vmpl),
      policy: `0x${report.policy.toString(16)}`,
      platformInfo: `0x${report.platformInfo.toString(16)}`,
      reportId: hex(report.reportId),
      version: String(report.version),
    },
  };
}
