import { SealedTensorsError, type ErrorCode } from '../errors.js';

/** Where a command writes; tests pass their own to run the CLI in-process. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

export const processIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Exit codes are part of the CLI contract (docs/CLI.md). */
export const ExitCode = {
  OK: 0,
  /** The thing checked is bad: tampered, wrong key, denied by policy. */
  REJECTED: 1,
  /** The command line itself is wrong. */
  USAGE: 2,
  /** The environment failed us: files, permissions, missing TEE or addon. */
  ENVIRONMENT: 3,
  /** A bug: an error that is not a SealedTensorsError. */
  INTERNAL: 70,
} as const;

const REJECTED_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'ERR_FORMAT',
  'ERR_UNSUPPORTED_VERSION',
  'ERR_TRUNCATED',
  'ERR_INTEGRITY',
  'ERR_KEY_MISMATCH',
  'ERR_SAFETENSORS',
  'ERR_UNSUPPORTED',
  'ERR_RESOURCE_LIMIT',
  'ERR_EVIDENCE_FORMAT',
  'ERR_EVIDENCE_SIGNATURE',
  'ERR_EVIDENCE_CHAIN',
  'ERR_PROTOCOL',
  'ERR_DENIED',
  'ERR_BROKER_UNTRUSTED',
  'ERR_KEYSTORE',
  'ERR_KEY_REVOKED',
  'ERR_AUDIT',
]);

export function exitCodeFor(err: unknown): number {
  if (err instanceof SealedTensorsError) {
    // A policy that does not parse or validate is a bad input the caller gave, like a bad option
    // (exit 2); a denial by a valid policy is a rejection (exit 1).
    if (err.code === 'ERR_INVALID_ARGUMENT' || err.code === 'ERR_POLICY') return ExitCode.USAGE;
    return REJECTED_CODES.has(err.code) ? ExitCode.REJECTED : ExitCode.ENVIRONMENT;
  }
  return ExitCode.INTERNAL;
}

export function formatError(err: unknown): string {
  if (err instanceof SealedTensorsError) return `error ${err.code}: ${err.message}\n`;
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  return `error ERR_INTERNAL: unexpected failure, please report it: ${message}\n`;
}

export function writeJson(io: CliIo, value: unknown): void {
  io.stdout(`${JSON.stringify(value, null, 2)}\n`);
}
