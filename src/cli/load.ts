import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { DeniedError, InvalidArgumentError, IoError, NoTeeError, SealedTensorsError } from '../errors.js';
import { SUITE_NAMES } from '../format/constants.js';
import type { DeviceEvidenceProvider, EvidenceProvider } from '../attestation/providers/types.js';
import { SimulatedTee } from '../attestation/providers/simulated.js';
import { SimulatedGpu } from '../attestation/providers/simulated-gpu.js';
import { NvidiaGpus } from '../attestation/providers/nvidia-gpus.js';
import { resolveSealedModelPath } from '../reader/model-binding.js';
import { readPublicHeader } from '../reader/sealed-file.js';
import { FileSealedSource } from '../sources/file.js';
import { sealedSource, type HttpSourceOptions } from '../sources/index.js';
import type { SealedSource } from '../sources/types.js';
import { EnclaveSession } from '../session/enclave-session.js';
import type { BrokerKeyInput } from '../session/broker-trust.js';
import type { CommandContext } from './main.js';
import { formatBytes, parseThreads } from './options.js';
import { ExitCode, exitCodeFor, formatError, writeJson } from './io.js';
import { explainNotSealed } from './not-sealed.js';

interface LoadOptions {
  broker: string;
  ca?: string;
  trustPublicRoots?: boolean;
  brokerKey?: string;
  brokerIssuer?: string;
  sourceCa?: string;
  allowHttp?: boolean;
  simulated?: boolean;
  simulatedKey?: string;
  simulatedGpus?: number;
  gpus?: boolean;
  only?: string[];
  threads?: number;
  json?: boolean;
  timeout?: number;
}

/** --broker-key FILE: a JWK or a JWK Set (broker init writes DIR/broker.jwks); EnclaveSession checks its keys. */
async function readBrokerKey(path: string): Promise<BrokerKeyInput> {
  const bytes = await readOption(path, '--broker-key');
  if (bytes.length > 64 * 1024) throw new InvalidArgumentError(`--broker-key ${path} is larger than 64 KiB: it should hold the broker's public JWK Set (DIR/broker.jwks)`);
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as BrokerKeyInput;
  } catch (cause) {
    throw new InvalidArgumentError(`--broker-key ${path} is not JSON: give the broker's public JWK Set (broker init writes DIR/broker.jwks)`, { cause });
  }
}

function parseTimeout(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1 || n > 3600) throw new InvalidArgumentError(`--timeout must be whole seconds from 1 to 3600, got "${text}"`);
  return n;
}

function parseGpuCount(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1 || n > 16) throw new InvalidArgumentError(`--simulated-gpus must be a whole number from 1 to 16, got "${text}"`);
  return n;
}

function parseOnly(text: string): string[] {
  const names = text.split(',').map((s) => s.trim());
  if (names.some((n) => n.length === 0)) throw new InvalidArgumentError('--only takes tensor names separated by commas, e.g. --only lm_head,model.norm');
  return names;
}

async function readOption(path: string, what: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (err) {
    throw new IoError(`cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

async function provider(opts: LoadOptions, ctx: CommandContext): Promise<EvidenceProvider> {
  if (opts.simulated) {
    if (!opts.simulatedKey) {
      const tee = new SimulatedTee();
      ctx.io.stderr(`SIMULATED TEE with a fresh root key (fingerprint ${tee.rootFingerprint}): a broker releases keys to it only if it trusts that fingerprint; pass --simulated-key FILE to use a registered one\n`);
      return tee;
    }
    return new SimulatedTee({ rootKey: SimulatedTee.keyFrom(await readOption(opts.simulatedKey, '--simulated-key')) });
  }
  if (opts.simulatedKey) throw new InvalidArgumentError('--simulated-key needs --simulated');
  const { defaultProvider } = await import('../attestation/providers/detect.js');
  try {
    return await defaultProvider();
  } catch (err) {
    if (err instanceof NoTeeError) throw new NoTeeError(`${err.message} (load --simulated uses the simulated TEE, for development)`, { cause: err });
    throw err;
  }
}

/** Devices attested with the TEE: this VM's NVIDIA GPUs (NVML), or simulated ones under the simulated TEE's root. */
function devices(opts: LoadOptions, tee: EvidenceProvider, ctx: CommandContext): DeviceEvidenceProvider[] {
  if (opts.gpus && opts.simulatedGpus !== undefined) throw new InvalidArgumentError('--gpus and --simulated-gpus exclude each other: attest real GPUs or simulated ones');
  if (opts.gpus) return [new NvidiaGpus()];
  if (opts.simulatedGpus === undefined) return [];
  if (!(tee instanceof SimulatedTee)) throw new InvalidArgumentError('--simulated-gpus needs --simulated (simulated GPUs go only with the simulated TEE)');
  ctx.io.stderr(`${opts.simulatedGpus} SIMULATED GPU(s) (simulated-nvidia, under the simulated TEE's root key): a broker accepts them only with allowSimulated\n`);
  return [new SimulatedGpu({ rootKey: tee.rootKey, count: opts.simulatedGpus })];
}

export function registerLoad(program: Command, ctx: CommandContext): void {
  program
    .command('load')
    .description("Attest this TEE to a key broker, fetch the model's key, and load the sealed model in secure memory; prints a summary, never tensor contents.")
    .argument('<SEALED>', 'sealed file, sealed index, or sealed model folder; or the http(s) URL of a sealed file or index (its shards next to it)')
    .requiredOption('--broker <URL>', 'key broker URL (https://host:port)')
    .option('--ca <FILE>', "the broker's CA certificate (PEM; `broker init` writes DIR/ca.pem): the only certificate trusted for the broker; required unless --trust-public-roots")
    .option('--trust-public-roots', "instead of --ca: trust any publicly-trusted certificate for the broker's name (then pin its keys with --broker-key)")
    .option('--broker-key <FILE>', "the broker's public signing keys (JWK Set; `broker init` writes DIR/broker.jwks): the token and every receipt must verify with them")
    .option('--broker-issuer <ISS>', 'with --broker-key: the issuer the broker was configured with (default: the one its token key implies)')
    .option('--source-ca <FILE>', "an https:// SEALED: the file server's CA certificate (PEM), then the only certificate trusted for it")
    .option('--allow-http', 'development only: accept an http:// SEALED on a loopback address')
    .option('--simulated', 'attest with the simulated TEE (software only; a broker must allow it explicitly)')
    .option('--simulated-key <FILE>', "the simulated TEE's Ed25519 root key, whose fingerprint the broker trusts")
    .option('--gpus', "also attest this VM's NVIDIA GPUs (Hopper, Confidential Computing on; read through NVIDIA's NVML), for keys that require them")
    .option('--simulated-gpus <N>', 'with --simulated: also attest N simulated GPUs (software only; a broker must allow simulated evidence)', parseGpuCount)
    .option('--only <NAMES>', 'load only these tensors (comma-separated names): only their chunks are read', parseOnly)
    .option('--threads <N>', 'decryption threads (default: all cores)', parseThreads)
    .option('--timeout <SECONDS>', 'deadline for attestation and key release (default 60)', parseTimeout)
    .option('--json', "print one JSON object listing every tensor's name, dtype, shape and plain SHA-256 (the shape of verify --json)")
    .action(async (path: string, opts: LoadOptions) => {
      const started = performance.now();
      let session: EnclaveSession | null = null;
      try {
        const sourceCa = opts.sourceCa !== undefined ? await readOption(opts.sourceCa, '--source-ca') : undefined;
        const http: HttpSourceOptions = { ...(sourceCa ? { ca: sourceCa } : {}), ...(opts.allowHttp ? { allowHttp: true } : {}) };
        let src: SealedSource = sealedSource(path, http);
        if (src instanceof FileSealedSource) {
          if (opts.sourceCa !== undefined || opts.allowHttp) throw new InvalidArgumentError('--source-ca and --allow-http apply to an http(s) URL SEALED, not to a path');
          src = new FileSealedSource(await resolveSealedModelPath(src.path));
        }
        // The public header names the key to ask for (no key needed to read it; no tensor chunk fetched).
        const opened = await src.open();
        let header;
        try {
          ({ header } = await readPublicHeader(opened));
        } finally {
          await opened.close();
        }
        const ca = opts.ca !== undefined ? await readOption(opts.ca, '--ca') : undefined;
        const brokerKey = opts.brokerKey !== undefined ? await readBrokerKey(opts.brokerKey) : undefined;
        if (opts.trustPublicRoots && brokerKey === undefined) {
          ctx.io.stderr("warning: --trust-public-roots without --broker-key: anyone holding a publicly-trusted certificate for the broker's name can answer as the broker; pin its keys (DIR/broker.jwks)\n");
        }
        const tee = await provider(opts, ctx);
        const gpus = devices(opts, tee, ctx);
        session = await EnclaveSession.establish({
          broker: opts.broker,
          ...(ca ? { ca } : {}),
          ...(opts.trustPublicRoots ? { trustPublicRoots: true } : {}),
          ...(brokerKey !== undefined ? { brokerKey } : {}),
          ...(opts.brokerIssuer !== undefined ? { brokerIssuer: opts.brokerIssuer } : {}),
          provider: tee,
          ...(gpus.length > 0 ? { devices: gpus } : {}),
          keys: [header.keyId],
          ...(opts.timeout ? { timeoutMs: opts.timeout * 1000 } : {}),
        });
        const attested = performance.now();
        const model = await session.open(src, { ...(opts.only ? { only: opts.only } : {}), ...(opts.threads ? { threads: opts.threads } : {}) });
        const tensors: { name: string; dtype: string; shape: number[]; byteLength: number; digest: string; sha256?: string; file?: string }[] = [];
        // One native job per file (not one per tensor): the whole selection lands in secure memory,
        // every chunk authenticated and digest checked, then the summary is read off it.
        const all = await model.loadAll();
        try {
          for (const info of model.list()) {
            const t = all.tensors.get(info.name)!;
            const { name, dtype, shape, byteLength, digest } = t.info;
            const entry: (typeof tensors)[number] = { name, dtype, shape: [...shape], byteLength, digest };
            if (opts.json) entry.sha256 = createHash('sha256').update(t.bytes).digest('hex');
            if (model.info.sharded) entry.file = info.file;
            tensors.push(entry);
          }
        } finally {
          all.release(); // a summary needs no tensor kept
        }
        const bytes = tensors.reduce((n, t) => n + t.byteLength, 0);
        const info = session.info;
        const loadSeconds = (performance.now() - attested) / 1000;
        const seconds = (performance.now() - started) / 1000;
        if (opts.json) {
          writeJson(ctx.io, {
            verified: true,
            path,
            keyId: header.keyId,
            suite: SUITE_NAMES[header.suite],
            sharded: model.info.sharded,
            tensorCount: tensors.length,
            byteLength: bytes,
            tensors,
            session: {
              broker: info.broker,
              tee: info.tee,
              devices: info.devices,
              hardened: info.hardened,
              verdict: info.verdict.status,
              expiresAt: info.expiresAt.toISOString(),
              receipts: info.receipts.length,
              ...(info.brokerKeyId ? { brokerKeyId: info.brokerKeyId } : {}),
            },
          });
        } else {
          ctx.io.stdout(
            [
              `ok: ${tensors.length} tensors, ${formatBytes(bytes)} loaded; ${tensors.length} digests verified, every chunk authenticated`,
              `    ${loadSeconds.toFixed(2)} s loading (${(bytes / 1e6 / Math.max(loadSeconds, 1e-9)).toFixed(0)} MB/s), ${seconds.toFixed(2)} s in all`,
              `    TEE: ${info.tee}${info.tee === 'simulated' ? ' (SIMULATED: not hardware)' : ''}; hardened: ${info.hardened ? 'yes' : 'NO (development)'}`,
              ...(info.devices.length > 0 ? [`    devices: ${info.devices.map((d) => `${d.label}${d.uuid ? ` ${d.uuid}` : ''}${d.simulated ? ' (SIMULATED)' : ''}`).join(', ')}`] : []),
              `    key "${header.keyId}" released by ${info.broker} (verdict ${info.verdict.status}${info.receipts.length ? `, receipt ${info.brokerKeyId ? 'verified and ' : ''}kept` : ''}${info.brokerKeyId ? `; token verified with pinned key ${info.brokerKeyId}` : ''}); session expires ${info.expiresAt.toISOString()}`,
            ].join('\n') + '\n',
          );
        }
      } catch (caught) {
        const err = await explainNotSealed(path, caught);
        // A denial by the broker, or the session's own refusal of an unregistered model, is a
        // rejection (exit 1), not a bad policy file (which io.ts maps ERR_POLICY to).
        const code = err instanceof SealedTensorsError && (err.code === 'ERR_DENIED' || err.code === 'ERR_POLICY') ? ExitCode.REJECTED : exitCodeFor(err);
        if (!(err instanceof SealedTensorsError)) throw err;
        const reasons = err instanceof DeniedError ? err.reasons : [];
        if (opts.json) writeJson(ctx.io, { verified: false, path, error: { code: err.code, message: err.message, ...(reasons.length ? { reasons } : {}) } });
        ctx.io.stderr(formatError(err));
        for (const r of reasons) ctx.io.stderr(`  reason: ${r}\n`);
        ctx.exitCode = code;
        return;
      } finally {
        session?.close();
      }
      ctx.exitCode = ExitCode.OK;
    });
}
