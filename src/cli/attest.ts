import { randomBytes, type X509Certificate } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { EvidenceFormatError, InvalidArgumentError, IoError, NoTeeError, NotFoundError, SealedTensorsError } from '../errors.js';
import { MIN_NONCE_BYTES, reportDataMatches } from '../attestation/policy/evaluate.js';
import {
  ConfigfsTsmProvider,
  SimulatedTee,
  TEE_TYPES,
  defaultProvider,
  parseCertificates,
  toPem,
  parsePolicy,
  parseTdxCollateral,
  appraiseEvidence,
  verifyEvidence,
  type Claims,
  type EvidenceProvider,
  type Policy,
  type TdxCollateral,
  type TeeType,
} from '../attestation/index.js';
import { KBS_TEES, KBS_TEE_VERIFIER, decodePrimaryEvidence, decodeTeeEvidence, type KbsTee } from '../protocol/evidence.js';
import type { CommandContext } from './main.js';
import { ExitCode, writeJson } from './io.js';
import { simulatedRootKey } from './simulated-key.js';

async function readInput(path: string, what: string): Promise<Uint8Array> {
  let handle;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the descriptor is checked before any read.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`${what} ${path} does not exist`, { cause: err });
    throw new IoError(`cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) {
      const kind = info.isDirectory() ? 'a folder' : info.isFIFO() ? 'a FIFO' : 'not a regular file';
      throw new InvalidArgumentError(`${what} ${path} is ${kind}; pass a regular file`);
    }
    return new Uint8Array(await handle.readFile());
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new IoError(`cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    await handle.close();
  }
}

/** --report-data: hex of at most 64 bytes, zero-padded to 64. */
function parseReportData(text: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2}){1,64}$/.test(text)) {
    throw new InvalidArgumentError(`--report-data must be hex of 1 to 64 bytes (e.g. a nonce or a key hash), got "${text.slice(0, 40)}"`);
  }
  const out = new Uint8Array(64);
  out.set(Buffer.from(text, 'hex'));
  return out;
}

function parseAt(text: string): Date {
  const d = new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(d.getTime())) {
    throw new InvalidArgumentError(`--at must be an ISO 8601 time such as 2025-06-01T00:00:00Z, got "${text}"`);
  }
  return d;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Certificates from files or folders (PEM or DER, single or concatenated). */
async function loadCertificates(paths: readonly string[]): Promise<X509Certificate[]> {
  const out: X509Certificate[] = [];
  for (const p of paths) {
    let s;
    try {
      s = await stat(p);
    } catch (err) {
      throw new NotFoundError(`--certs ${p} does not exist`, { cause: err });
    }
    if (s.isDirectory()) {
      const names = (await readdir(p)).filter((n) => /\.(pem|der|crt|cer)$/i.test(n)).sort();
      if (names.length === 0) throw new InvalidArgumentError(`--certs folder ${p} holds no .pem, .der, .crt or .cer file`);
      for (const n of names) out.push(...parseCertificates(await readInput(join(p, n), 'certificate file'), join(p, n)));
    } else {
      out.push(...parseCertificates(await readInput(p, 'certificate file'), p));
    }
  }
  return out;
}

function claimsJson(c: Claims): Record<string, unknown> {
  return {
    measurement: c.measurement,
    reportData: c.reportData,
    debug: c.debug,
    ...(c.debugAttested === false ? { debugAttested: false } : {}),
    tcb: c.tcb,
    simulated: c.simulated,
    measurements: c.measurements,
    platform: c.platform,
    ...(c.issuedAt ? { issuedAt: c.issuedAt } : {}),
  };
}

interface ReportOptions {
  reportData?: string;
  output?: string;
  simulated?: boolean;
  simulatedKey?: string;
}

interface VerifyOptions {
  type: string;
  format?: string;
  certs?: string[];
  collateral?: string[];
  policy?: string;
  at?: string;
  json?: boolean;
  reportData?: string;
  simulatedRoot?: string[];
  cryptoOnly?: boolean;
}

async function simulatedProvider(keyPath: string | undefined, io: CommandContext['io']): Promise<SimulatedTee> {
  if (!keyPath) return new SimulatedTee();
  // First use creates the local root key, readable by this user only.
  const { key, created } = await simulatedRootKey(keyPath, '--simulated-key');
  if (created) io.stderr(`created simulated root key ${keyPath}\n`);
  return new SimulatedTee({ rootKey: key });
}

export function registerAttest(program: Command, ctx: CommandContext): void {
  const attest = program.command('attest').description('Gather attestation evidence in a TEE, or verify evidence against a policy.');

  attest
    .command('report')
    .description('Gather evidence from this machine\'s TEE (SEV-SNP, TDX or Nitro), binding 64 bytes of report data.')
    .option('--report-data <HEX>', 'up to 64 bytes of hex to bind (nonce, key hash); zero-padded; default: 64 random bytes')
    .option('-o, --output <FILE>', 'write the raw evidence here (default: JSON with base64 evidence on stdout)')
    .option('--simulated', 'use the simulated TEE (software only, labelled simulated) when no TEE is present')
    .option('--simulated-key <FILE>', 'Ed25519 root key of the simulated TEE; created if missing (default: a fresh key)')
    .exitOverride()
    .action(async (opts: ReportOptions) => {
      const reportData = opts.reportData !== undefined ? parseReportData(opts.reportData) : new Uint8Array(randomBytes(64));
      let provider: EvidenceProvider;
      if (opts.simulated) provider = await simulatedProvider(opts.simulatedKey, ctx.io);
      else {
        if (opts.simulatedKey) throw new InvalidArgumentError('--simulated-key needs --simulated');
        try {
          provider = await defaultProvider();
        } catch (err) {
          if (err instanceof NoTeeError) throw new NoTeeError(`${err.message} (attest report --simulated gives simulated evidence)`, { cause: err });
          throw err;
        }
      }
      // SNP hosts may hand over the VCEK/ASK/ARK with the report (configfs-tsm auxblob): keep them for verify --certs.
      let evidence: Uint8Array;
      let hostCerts: { name: string; der: Uint8Array }[] = [];
      if (provider instanceof ConfigfsTsmProvider) ({ evidence, certificates: hostCerts } = await provider.getEvidenceWithCertificates(reportData));
      else evidence = await provider.getEvidence(reportData);
      const pem = hostCerts.map(({ der }) => toPem(der));
      const sim = provider instanceof SimulatedTee;
      if (opts.output) {
        const write = async (path: string, data: Uint8Array | string): Promise<void> => {
          try {
            await writeFile(path, data);
          } catch (err) {
            throw new IoError(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
          }
        };
        await write(opts.output, evidence);
        ctx.io.stdout(`wrote ${sim ? 'SIMULATED ' : ''}${provider.tee} evidence (${evidence.length} bytes) to ${opts.output}\nreport data ${Buffer.from(reportData).toString('hex')}\n`);
        if (pem.length) {
          await write(`${opts.output}.certs.pem`, pem.join(''));
          ctx.io.stdout(`wrote the host's ${hostCerts.map((c) => c.name).join(', ')} certificates to ${opts.output}.certs.pem\n`);
        }
      } else {
        writeJson(ctx.io, {
          tee: provider.tee,
          simulated: sim,
          reportData: Buffer.from(reportData).toString('hex'),
          evidence: Buffer.from(evidence).toString('base64'),
          ...(pem.length ? { certificates: pem } : {}),
          ...(sim ? { simulatedRoot: (provider as SimulatedTee).rootFingerprint } : {}),
        });
      }
      if (sim) {
        ctx.io.stderr(
          `SIMULATED evidence: not from hardware. Verify with: attest verify FILE --type simulated --simulated-root ${(provider as SimulatedTee).rootFingerprint}\n`,
        );
      }
      ctx.exitCode = ExitCode.OK;
    });

  attest
    .command('verify')
    .description('Verify evidence (signatures, certificate chains to pinned roots) and judge it against a policy.')
    .argument('<FILE>', 'evidence file')
    .requiredOption('--type <TYPE>', `evidence type: ${TEE_TYPES.join('|')}; with --format kbs: ${KBS_TEES.join('|')}`)
    .option('--format <FORMAT>', "raw: this library's evidence bytes (default); kbs: Trustee's tee-evidence JSON ({primary_evidence, additional_evidence}, or the primary evidence alone)", 'raw')
    .option('--certs <PATH>', 'certificate file or folder, PEM or DER (VCEK/VLEK, ASK/ARK/ASVK, GPU chain); repeatable', collect)
    .option('--collateral <FILE>', 'Intel PCS collateral for TDX (QuoteCollateralV3 JSON, tcbInfo/qeIdentity JSON, CRLs, issuer chains); repeatable', collect)
    .option('--policy <POLICY>', 'policy JSON file; exit 0 only if it allows the evidence (needs --report-data: the nonce you sent)')
    .option('--crypto-only', 'check signatures, certificate chains, collateral and validity times only; no policy is evaluated')
    .option('--at <ISO-TIME>', 'verification time (default: now); old evidence verifies as of its own date')
    .option('--report-data <HEX>', 'expected report data (the nonce you sent, a key hash); always compared: a mismatch exits 1')
    .option('--simulated-root <SHA256>', 'trust this simulated root key fingerprint (simulated evidence only); repeatable', collect)
    .option('--json', 'print one JSON object: { tee, verified, claims, verdict } (with --crypto-only: { tee, verified, claims, policy, reportData? })')
    .exitOverride()
    .action(async (file: string, opts: VerifyOptions) => {
      if (opts.format !== 'raw' && opts.format !== 'kbs') throw new InvalidArgumentError(`--format must be raw or kbs, got "${opts.format}"`);
      const kbs = opts.format === 'kbs';
      if (kbs && !(KBS_TEES as readonly string[]).includes(opts.type)) {
        throw new InvalidArgumentError(`--type with --format kbs must be one of ${KBS_TEES.join(', ')} (the KBS protocol's tee names), got "${opts.type}"`);
      }
      if (!kbs && !(TEE_TYPES as readonly string[]).includes(opts.type)) {
        throw new InvalidArgumentError(`--type must be one of ${TEE_TYPES.join(', ')}, got "${opts.type}"`);
      }
      const type: TeeType = kbs ? KBS_TEE_VERIFIER[opts.type as KbsTee] : (opts.type as TeeType);
      if (opts.collateral && type !== 'tdx') throw new InvalidArgumentError('--collateral applies to --type tdx only');
      if (opts.simulatedRoot && type !== 'simulated') throw new InvalidArgumentError('--simulated-root applies to --type simulated only');
      // No implicit policy: either one is named, or the caller asks for the cryptographic checks alone.
      if (opts.cryptoOnly && opts.policy) throw new InvalidArgumentError('--crypto-only and --policy exclude each other: --crypto-only evaluates no policy');
      if (!opts.cryptoOnly && !opts.policy) {
        throw new InvalidArgumentError('attest verify needs --policy FILE (with --report-data, the nonce you sent), or --crypto-only to check signatures, chains, collateral and validity times alone');
      }
      const now = opts.at !== undefined ? parseAt(opts.at) : new Date();
      // Compared as a prefix: the evidence must hold these bytes followed by zeros.
      const expectedReportData = opts.reportData !== undefined ? parseReportData(opts.reportData).slice(0, opts.reportData.length / 2) : undefined;
      // The rule a policy applies to its nonce: a short or all-zero value matches evidence that binds nothing.
      if (opts.cryptoOnly && expectedReportData && (expectedReportData.length < MIN_NONCE_BYTES || expectedReportData.every((b) => b === 0))) {
        throw new InvalidArgumentError(
          `--report-data must be the fresh nonce you sent, at least ${MIN_NONCE_BYTES} bytes and not all zero (got ${expectedReportData.length} byte(s)${expectedReportData.every((b) => b === 0) ? ', all zero' : ''}): a shorter or zero value also matches evidence that binds nothing`,
        );
      }
      const policy: Policy | undefined = opts.policy ? parsePolicy(Buffer.from(await readInput(opts.policy, 'policy')).toString('utf8'), opts.policy) : undefined;
      let evidence = await readInput(file, 'evidence');
      const certificates = await loadCertificates(opts.certs ?? []);
      // Trustee's JSON decoded into our bytes; a decoding failure is reported like any evidence that does not verify.
      let decodeError: SealedTensorsError | undefined;
      if (kbs) {
        try {
          const d = decodeKbsFile(evidence, opts.type as KbsTee, file);
          evidence = d.evidence;
          certificates.push(...(d.certificates ?? []).flatMap((der, i) => parseCertificates(der, `${file} certificate ${i}`)));
        } catch (err) {
          if (!(err instanceof SealedTensorsError) || !EVIDENCE_CODES.includes(err.code)) throw err;
          decodeError = err;
        }
      }
      let collateral: TdxCollateral | undefined;
      if (opts.collateral) {
        const files = [];
        for (const c of opts.collateral) files.push({ name: c, bytes: await readInput(c, 'collateral') });
        collateral = parseTdxCollateral(files);
      }

      const verifyOpts = {
        now,
        certificates,
        ...(collateral ? { collateral } : {}),
        ...(type === 'simulated' ? { trustedRoots: opts.simulatedRoot ?? [] } : {}),
      };
      if (!policy) {
        await cryptoOnly(ctx, type, evidence, verifyOpts, now, expectedReportData, opts.json === true, decodeError);
        return;
      }
      const a = decodeError
        ? failedAppraisal(type, decodeError)
        : await appraiseEvidence(type, evidence, { ...verifyOpts, policy, expectedReportData: expectedReportData as Uint8Array });
      const verdict = a.verdict;
      if (opts.json) {
        writeJson(ctx.io, { tee: a.tee, verified: a.verified, claims: a.claims ? claimsJson(a.claims) : null, verdict: { allowed: verdict.allowed, reasons: verdict.reasons } });
      }
      if (!a.verified || !a.claims) {
        ctx.io.stderr(`error ${a.error!.code}: ${a.error!.message}\n`);
        ctx.exitCode = ExitCode.REJECTED;
        return;
      }
      if (!opts.json) {
        const c = a.claims;
        const lines = [
          `verified: ${c.simulated ? 'SIMULATED ' : ''}${a.tee} evidence; signatures and chain OK as of ${now.toISOString()}`,
          `measurement ${c.measurement}`,
          `report data ${c.reportData}`,
          `debug ${c.debugAttested === false ? 'not attested by the evidence (assumed true)' : c.debug}`,
          `policy (${opts.policy}): ${verdict.allowed ? 'allowed' : 'DENIED'}`,
          ...verdict.checks.map((k) => `  ${k.ok ? 'ok  ' : 'FAIL'} ${k.check}: ${k.detail}`),
        ];
        ctx.io.stdout(`${lines.join('\n')}\n`);
      }
      ctx.exitCode = verdict.allowed ? ExitCode.OK : ExitCode.REJECTED;
    });
}

const EVIDENCE_CODES: readonly string[] = ['ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_CHAIN'];
/** Trustee's JSON files: at most this many bytes (a tee-evidence with a TDX event log stays well below). */
const MAX_KBS_FILE = 8 << 20;

/** --format kbs: the file holds Trustee's tee-evidence (wrapped) or the primary evidence alone (as Trustee's test data does). */
function decodeKbsFile(bytes: Uint8Array, tee: KbsTee, file: string) {
  if (bytes.length > MAX_KBS_FILE) throw new EvidenceFormatError(`${file} is ${bytes.length} bytes, over the ${MAX_KBS_FILE}-byte limit for tee-evidence JSON`);
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new EvidenceFormatError(`${file} is not UTF-8 JSON; --format kbs reads Trustee's tee-evidence JSON`, { cause: err });
  }
  const wrapped = typeof doc === 'object' && doc !== null && Object.hasOwn(doc, 'primary_evidence');
  return wrapped ? decodeTeeEvidence(tee, doc) : decodePrimaryEvidence(tee, doc);
}

/** The shape appraiseEvidence gives for evidence that does not verify, for evidence that did not even decode. */
function failedAppraisal(type: TeeType, err: SealedTensorsError) {
  const reason = `${err.code}: ${err.message}`;
  return {
    tee: type,
    verified: false,
    claims: null,
    verdict: { allowed: false, reasons: [reason], checks: [{ check: 'evidence', ok: false, detail: reason }] },
    error: { code: err.code, message: err.message },
  };
}

const CRYPTO_ONLY_NOTE = 'not evaluated (--crypto-only): signatures, certificate chains, collateral and validity times only; measurements, TCB, debug and freshness were not judged';

/** attest verify --crypto-only: the verifier's checks alone, plus --report-data when given. */
async function cryptoOnly(
  ctx: CommandContext,
  type: TeeType,
  evidence: Uint8Array,
  verifyOpts: Parameters<typeof verifyEvidence>[2],
  now: Date,
  expected: Uint8Array | undefined,
  json: boolean,
  decodeError?: SealedTensorsError,
): Promise<void> {
  let verified;
  try {
    if (decodeError) throw decodeError;
    verified = await verifyEvidence(type, evidence, verifyOpts);
  } catch (err) {
    if (!(err instanceof SealedTensorsError) || !EVIDENCE_CODES.includes(err.code)) throw err;
    if (json) writeJson(ctx.io, { tee: type, verified: false, claims: null, policy: CRYPTO_ONLY_NOTE, error: `${err.code}: ${err.message}` });
    ctx.io.stderr(`error ${err.code}: ${err.message}\n`);
    ctx.exitCode = ExitCode.REJECTED;
    return;
  }
  const c = verified.claims;
  const rdOk = expected !== undefined ? reportDataMatches(c.reportData, expected) : undefined;
  if (json) {
    writeJson(ctx.io, { tee: verified.tee, verified: true, claims: claimsJson(c), policy: CRYPTO_ONLY_NOTE, ...(rdOk !== undefined ? { reportData: rdOk ? 'matches --report-data' : 'does NOT match --report-data' } : {}) });
  } else {
    const lines = [
      `verified: ${c.simulated ? 'SIMULATED ' : ''}${verified.tee} evidence; signatures and chain OK as of ${now.toISOString()}`,
      `measurement ${c.measurement}`,
      `report data ${c.reportData}`,
      `debug ${c.debugAttested === false ? 'not attested by the evidence (assumed true)' : c.debug}`,
      ...verified.checks.map((k) => `  ok   ${k.check}: ${k.detail}`),
      ...(rdOk !== undefined ? [`  ${rdOk ? 'ok  ' : 'FAIL'} reportData: ${rdOk ? 'equals --report-data' : 'does not equal --report-data: stale, replayed or foreign evidence'}`] : []),
      `policy: ${CRYPTO_ONLY_NOTE}`,
    ];
    ctx.io.stdout(`${lines.join('\n')}\n`);
  }
  ctx.exitCode = rdOk === false ? ExitCode.REJECTED : ExitCode.OK;
}
