/**
 * Every error this library throws is a SealedTensorsError with a stable `code`.
 * Callers switch on `err.code`; messages are for people and may change.
 */

export type ErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_FORMAT'
  | 'ERR_UNSUPPORTED_VERSION'
  | 'ERR_UNSUPPORTED'
  | 'ERR_TRUNCATED'
  | 'ERR_INTEGRITY'
  | 'ERR_KEY_MISMATCH'
  | 'ERR_KEY_FILE'
  | 'ERR_SAFETENSORS'
  | 'ERR_NOT_FOUND'
  | 'ERR_IO'
  | 'ERR_RESOURCE_LIMIT'
  | 'ERR_NATIVE_UNAVAILABLE'
  | 'ERR_MEMLOCK'
  | 'ERR_RELEASED'
  | 'ERR_NO_TEE'
  | 'ERR_EVIDENCE_FORMAT'
  | 'ERR_EVIDENCE_SIGNATURE'
  | 'ERR_EVIDENCE_CHAIN'
  | 'ERR_POLICY'
  | 'ERR_PROTOCOL'
  | 'ERR_BROKER'
  | 'ERR_DENIED'
  | 'ERR_BROKER_UNTRUSTED'
  | 'ERR_BROKER_CONFIG'
  | 'ERR_KEYSTORE'
  | 'ERR_KEY_REVOKED'
  | 'ERR_AUDIT';

export class SealedTensorsError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A caller passed a value of the wrong type, size or range. */
export class InvalidArgumentError extends SealedTensorsError {
  static readonly code = 'ERR_INVALID_ARGUMENT';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARGUMENT', message, options);
  }
}

/** A sealed file's structure is not what the format allows (bad magic, bad lengths, bad table). */
export class FormatError extends SealedTensorsError {
  static readonly code = 'ERR_FORMAT';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_FORMAT', message, options);
  }
}

/** A sealed file declares a format version or suite this build does not implement. */
export class UnsupportedVersionError extends SealedTensorsError {
  static readonly code = 'ERR_UNSUPPORTED_VERSION';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_UNSUPPORTED_VERSION', message, options);
  }
}

/** A well-formed input uses a feature this build does not implement (a dtype, a suite). */
export class UnsupportedError extends SealedTensorsError {
  static readonly code = 'ERR_UNSUPPORTED';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_UNSUPPORTED', message, options);
  }
}

/** A sealed file ends before the header says it should. */
export class TruncatedError extends SealedTensorsError {
  static readonly code = 'ERR_TRUNCATED';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TRUNCATED', message, options);
  }
}

/**
 * Authentication failed: ciphertext, header or table was modified, or data was moved.
 * Deliberately vague about which byte: the detail that helps an attacker stays in `cause`.
 */
export class IntegrityError extends SealedTensorsError {
  static readonly code = 'ERR_INTEGRITY';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INTEGRITY', message, options);
  }
}

/** The data key does not open this file (checked against the header's key commitment). */
export class KeyMismatchError extends SealedTensorsError {
  static readonly code = 'ERR_KEY_MISMATCH';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_KEY_MISMATCH', message, options);
  }
}

/** A key file is missing, malformed, too permissive, or would be overwritten. */
export class KeyFileError extends SealedTensorsError {
  static readonly code = 'ERR_KEY_FILE';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_KEY_FILE', message, options);
  }
}

/** An input safetensors file (or shard index) is malformed. */
export class SafetensorsError extends SealedTensorsError {
  static readonly code = 'ERR_SAFETENSORS';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SAFETENSORS', message, options);
  }
}

/** A tensor, shard or file that was asked for does not exist. */
export class NotFoundError extends SealedTensorsError {
  static readonly code = 'ERR_NOT_FOUND';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NOT_FOUND', message, options);
  }
}

/** The operating system refused a read, write or rename. */
export class IoError extends SealedTensorsError {
  static readonly code = 'ERR_IO';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_IO', message, options);
  }
}

/**
 * A remote source of sealed bytes failed: unreachable, refused (`status`), redirected, answered
 * something unusable, cut short or stalled. Code ERR_IO, like a local read that fails; a source whose
 * bytes changed while they were read is an IntegrityError instead.
 */
export class SourceError extends IoError {
  /** The HTTP status, when the server answered with one. */
  readonly status: number | undefined;
  constructor(message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options);
    this.status = options?.status;
  }
}

/** An input asks for more memory or work than this library allows for it. */
export class ResourceLimitError extends SealedTensorsError {
  static readonly code = 'ERR_RESOURCE_LIMIT';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_RESOURCE_LIMIT', message, options);
  }
}

/** The native addon could not be loaded. */
export class NativeUnavailableError extends SealedTensorsError {
  static readonly code = 'ERR_NATIVE_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NATIVE_UNAVAILABLE', message, options);
  }
}

/** Memory could not be locked (RLIMIT_MEMLOCK too low); we never fall back to swappable memory. */
export class MemlockError extends SealedTensorsError {
  static readonly code = 'ERR_MEMLOCK';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_MEMLOCK', message, options);
  }
}

/** A secure buffer, key handle or reader was used after release. */
export class ReleasedError extends SealedTensorsError {
  static readonly code = 'ERR_RELEASED';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_RELEASED', message, options);
  }
}

/** No trusted execution environment was found on this machine. */
export class NoTeeError extends SealedTensorsError {
  static readonly code = 'ERR_NO_TEE';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NO_TEE', message, options);
  }
}

/** Attestation evidence does not parse as the structure its type promises. */
export class EvidenceFormatError extends SealedTensorsError {
  static readonly code = 'ERR_EVIDENCE_FORMAT';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_EVIDENCE_FORMAT', message, options);
  }
}

/** An attestation signature does not verify. */
export class EvidenceSignatureError extends SealedTensorsError {
  static readonly code = 'ERR_EVIDENCE_SIGNATURE';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_EVIDENCE_SIGNATURE', message, options);
  }
}

/** A certificate chain does not lead to a pinned root, or a certificate is not valid at the verification time. */
export class EvidenceChainError extends SealedTensorsError {
  static readonly code = 'ERR_EVIDENCE_CHAIN';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_EVIDENCE_CHAIN', message, options);
  }
}

/**
 * The vendor has revoked what signed or describes the evidence (a certificate on a CRL, a TCB level
 * marked Revoked). Code ERR_EVIDENCE_CHAIN, like any untrusted chain; no policy can accept it.
 */
export class EvidenceRevokedError extends EvidenceChainError {}

/** A policy (file or object) is invalid. A policy's denial is a verdict, not an error. */
export class PolicyError extends SealedTensorsError {
  static readonly code = 'ERR_POLICY';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_POLICY', message, options);
  }
}

/** A key-release protocol message (KBS RCAR) is malformed, too large, or out of sequence. */
export class ProtocolError extends SealedTensorsError {
  static readonly code = 'ERR_PROTOCOL';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PROTOCOL', message, options);
  }
}

/** The key broker could not be reached, failed, timed out, or answered something unusable. */
export class BrokerError extends SealedTensorsError {
  static readonly code = 'ERR_BROKER';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BROKER', message, options);
  }
}

/**
 * The key broker refused: no valid session or token (401), a policy denied the release (403), or no
 * such key (404). `status` is the HTTP status; `reasons` are the broker's, check by check.
 */
export class DeniedError extends SealedTensorsError {
  static readonly code = 'ERR_DENIED';
  readonly status: number;
  readonly reasons: readonly string[];
  constructor(message: string, options?: { cause?: unknown; status?: number; reasons?: readonly string[] }) {
    super('ERR_DENIED', message, options);
    this.status = options?.status ?? 403;
    this.reasons = Object.freeze([...(options?.reasons ?? [])]);
  }
}

/**
 * The session could not authenticate the key broker's signed answers: the attestation token or a
 * release receipt is not signed by the pinned broker key (`brokerKey`), names another issuer or
 * audience, or a release came without the receipt a pinned broker must send. Nothing is released.
 */
export class BrokerTrustError extends SealedTensorsError {
  static readonly code = 'ERR_BROKER_UNTRUSTED';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BROKER_UNTRUSTED', message, options);
  }
}

/**
 * A broker folder (made by `broker init`) is incomplete, malformed, or has unsafe permissions: a
 * missing file, a private file readable by others, a file owned by another user, a bad config.json.
 */
export class BrokerConfigError extends SealedTensorsError {
  static readonly code = 'ERR_BROKER_CONFIG';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BROKER_CONFIG', message, options);
  }
}

/**
 * The broker's keystore does not authenticate or is inconsistent: modified, rolled back to an older
 * copy, malformed, or opened with the wrong key-encryption key. Nothing is read from it then.
 */
export class KeystoreError extends SealedTensorsError {
  static readonly code = 'ERR_KEYSTORE';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_KEYSTORE', message, options);
  }
}

/** A data key was revoked at the broker: it is never released again. */
export class KeyRevokedError extends SealedTensorsError {
  static readonly code = 'ERR_KEY_REVOKED';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_KEY_REVOKED', message, options);
  }
}

/** The broker's audit log is malformed or its hash chain is broken; the broker appends nothing to it then. */
export class AuditLogError extends SealedTensorsError {
  static readonly code = 'ERR_AUDIT';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AUDIT', message, options);
  }
}

export function isSealedTensorsError(value: unknown): value is SealedTensorsError {
  return value instanceof SealedTensorsError;
}
