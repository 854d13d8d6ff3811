/**
 * Loads the native addon (build/Release/sealed_tensors.node) and translates its errors.
 * The loader tries its candidates in order and, when none loads, says what was tried and what to do.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import {
  FormatError,
  IntegrityError,
  InvalidArgumentError,
  IoError,
  KeyMismatchError,
  MemlockError,
  NativeUnavailableError,
  NotFoundError,
  ReleasedError,
  ResourceLimitError,
  SafetensorsError,
  SealedTensorsError,
  TruncatedError,
  UnsupportedError,
  UnsupportedVersionError,
  type ErrorCode,
} from '../errors.js';

/** An opaque data key living in the addon's secure memory. */
export interface NativeKeyHandle {
  release(): boolean;
  readonly released: boolean;
}

export interface NativeHardening {
  notDumpable: boolean;
  noCore: boolean;
  /** prctl(PR_GET_DUMPABLE) right now: 0 once hardened. */
  dumpable: number;
  /**
   * OpenSSL's secure heap (where it keeps ephemeral private keys) exists and the kernel reports its
   * mapping locked and excluded from core dumps. False until the first ephemeral key sets it up.
   */
  opensslSecureHeap: boolean;
  opensslSecureHeapDetail: {
    initialized: boolean;
    /** VmFlags "lo" on the heap's mapping. False when RLIMIT_MEMLOCK had no room: then it is swappable. */
    locked: boolean;
    /** VmFlags "dd". */
    dontDump: boolean;
    /** Who set it up: this addon, or Node (`node --secure-heap=N`). */
    initializedBy: 'addon' | 'node' | null;
    /** CRYPTO_secure_malloc_init's result when the addon called it: 1 locked, 2 not locked, 0 failed; -1 not called. */
    initResult: number;
    /** The heap's mapping size in bytes (0 when unknown). */
    size: number;
    /** CRYPTO_secure_used(): bytes allocated in it now (Node's own keys too). */
    used: number;
  };
}

/** The session's ephemeral key pair; the private half never leaves the addon. */
export interface NativeEphemeralKey {
  release(): boolean;
  readonly released: boolean;
  readonly kind: 'ec-p256' | 'rsa-3072';
}

/** A flattened JWE's members, decoded, as `jweUnwrapDataKey` takes them. */
export interface NativeJweInput {
  /** The `protected` member exactly as received: its ASCII bytes are the AAD. */
  protectedB64: string;
  alg: 'ECDH-ES+A256KW' | 'RSA-OAEP-256';
  /** ECDH-ES only: the sender's ephemeral P-256 point (32 bytes each). */
  epk?: { x: Uint8Array; y: Uint8Array };
  /** ECDH-ES only, optional: Concat KDF PartyUInfo / PartyVInfo. */
  apu?: Uint8Array;
  apv?: Uint8Array;
  encryptedKey: Uint8Array;
  iv: Uint8Array;
  ciphertext: Uint8Array;
  tag: Uint8Array;
}

/** What `sealedOpen` resolves to: the file stays open natively, keys derived into secure memory. */
export interface NativeOpenResult {
  file: NativeSealedFile;
  /** The public header bytes the addon read and authenticated the table against. */
  header: Uint8Array;
  fileSize: number;
  /** Decrypted table JSON (metadata, not weights). */
  table: Uint8Array;
}

export interface NativeRunOptions {
  /** [begin0, end0, begin1, end1, ...] payload ranges, ascending and disjoint; one digest each. */
  ranges: Float64Array;
  /**
   * Secure ArrayBuffer to decrypt into; omit to verify only (streaming, buffers reused). The job
   * takes its memory and detaches it; the result's `dest` is a new ArrayBuffer over the same memory.
   */
  dest?: ArrayBuffer;
  /** Instead of `dest`: the job allocates a secure buffer of this size (locked by the workers as they fill it). */
  destSize?: number;
  /** Where each range starts in `dest`. */
  destOffsets?: Float64Array;
  /** Authenticate every chunk of the file, not only those the ranges touch. */
  allChunks: boolean;
  /** Stop at the first chunk that fails to authenticate (loading), or go on (verify reports all). */
  stopOnFailure: boolean;
  threads: number;
  /** Also compute each range's plain SHA-256 (in payload order; costs a sequential pass). */
  plainSha256?: boolean;
  /** Plaintext bytes per read-decrypt-hash step, a multiple of 4096 (tuning). */
  subBlock?: number;
}

export interface NativeRunResult {
  /** 32 bytes per range: the FORMAT.md section 6 tensor digest. */
  digests: Uint8Array;
  /** Indices of chunks whose tag did not verify (their plaintext was wiped). */
  failedChunks: number[];
  chunksProcessed: number;
  /** 32 bytes per range when plainSha256 was asked for. */
  sha256?: Uint8Array;
  /**
   * The secure buffer the job allocated (destSize), filled and authenticated; absent (wiped) if a
   * chunk failed. With `dest`: that memory back in a new ArrayBuffer, wiped whole if a chunk failed.
   */
  dest?: ArrayBuffer;
}

/**
 * A run whose ciphertext the caller feeds (a file opened with sealedOpenFed): the same decryption,
 * authentication and digests as `run`, window by window. Every secure byte of the run is wiped by
 * `abort()`, by a failed window, by `finish()` before every chunk was fed, or when it is collected.
 */
export interface NativeSealedRun {
  /** The chunks the run needs, ascending: feed their sealed bytes in this order. */
  readonly chunks: Float64Array;
  /**
   * The file's bytes from `fileOffset` (that of the next chunk to feed), given as pieces: exactly the
   * next whole chunks, consecutive in the file. Copied at once; resolves once they are processed, to
   * true while the run wants more (false once a chunk failed with stopOnFailure). One at a time.
   */
  feed(fileOffset: number, pieces: Uint8Array[]): Promise<boolean>;
  /** Once every chunk was fed (or one failed): the same result as `run`. */
  finish(): NativeRunResult;
  /** Wipes and frees the run's secure memory (after the window in flight, if any). Idempotent. */
  abort(): void;
}

export interface NativeSealedFile {
  /** Only for a file the addon opened itself (sealedOpen); fed files use `begin`. */
  run(options: NativeRunOptions): Promise<NativeRunResult>;
  begin(options: NativeRunOptions): NativeSealedRun;
  close(): void;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly payloadLength: number;
}

/** What `sealBegin` takes: one output file's header and payload plan, the input's and output's open descriptors. */
export interface NativeSealOptions {
  /** The data key; the addon derives the key commitment and subkeys from it (FORMAT.md section 4). */
  key: NativeKeyHandle;
  /** The encoded public header; its key commitment bytes (88..120) are filled in by the addon. */
  header: Uint8Array;
  /** Descriptor of the safetensors input (duplicated by the addon) and its path, for messages. */
  input: number;
  inputPath: string;
  /** The input's byte buffer; payload beyond `dataLength` is zero padding. */
  dataStart: number;
  dataLength: number;
  /** Descriptor of the (partial) output file (duplicated by the addon) and its path. */
  output: number;
  outputPath: string;
  /** [begin0, end0, ...] the tensors' payload ranges, ascending and disjoint: one digest each. */
  ranges: Float64Array;
  threads: number;
  /** Also compute each range's plain SHA-256, in the same pass. */
  plainSha256?: boolean;
}

/**
 * One sealing run: `payload()` writes every chunk (pread plaintext into secure memory, leaf hashes
 * and encryption in place, pwrite at its final offset, on `threads` threads); `finish(table)`
 * encrypts the padded table plaintext and writes it and the header. Keys wiped by finish or abort.
 */
export interface NativeSealer {
  /** The public header with its key commitment. */
  readonly header: Uint8Array;
  payload(): Promise<{ digests: Uint8Array; sha256?: Uint8Array }>;
  /** The padded table plaintext (u32le(n) || json || zeros); wiped once copied into secure memory. */
  finish(tablePlain: Uint8Array): Promise<void>;
  /** Stops a running payload job at the next chunk; wipes the keys. Idempotent. */
  abort(): void;
}

export interface NativeAddon {
  modules: string[];
  sealBegin(options: NativeSealOptions): NativeSealer;
  secureAlloc(size: number): ArrayBuffer;
  /** The same, locked and populated on the threadpool. */
  secureAllocAsync(size: number): Promise<ArrayBuffer>;
  /** Locked at once (the limit is checked now), populated only as it is written (a load populates it on its threads). */
  secureReserve(size: number): ArrayBuffer;
  /** Zeroizes, keeps the memory locked and mapped, detaches `buffer` and returns a new ArrayBuffer over the same memory. */
  secureWipe(buffer: ArrayBuffer): ArrayBuffer;
  secureRelease(buffer: ArrayBuffer): boolean;
  secureLockedBytes(): number;
  hardening(): NativeHardening;
  keyImport(bytes: Uint8Array): NativeKeyHandle;
  /** SHA-256 of the parts concatenated (OpenSSL): the native path's digests without loading node:crypto. */
  sha256(parts: Uint8Array[]): Uint8Array;
  /** Constant-time equality (CRYPTO_memcmp); false for different lengths (a length is not secret). */
  timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean;
  /** A key pair made in the addon; only the public JWK (JSON text) comes back. Synchronous (RSA takes up to seconds). */
  ephemeralKeyGenerate(kind?: 'ec-p256' | 'rsa-3072'): { handle: NativeEphemeralKey; jwk: string };
  /**
   * Opens a data-key JWE with the ephemeral key: plaintext "STK1" || key || manifest. The key goes into
   * a new handle; the manifest (public JSON) is copied out. ERR_INTEGRITY for any failure to open it.
   */
  jweUnwrapDataKey(ephemeral: NativeEphemeralKey, jwe: NativeJweInput): { key: NativeKeyHandle; manifest: Uint8Array };
  /** Opens a sealed file whose public header the caller already validated (`header`: those bytes). */
  sealedOpen(path: string, key: NativeKeyHandle, header: Uint8Array): Promise<NativeOpenResult>;
  /**
   * Opens a sealed file read from another source: `prefix` is its bytes from 0 to the end of the
   * sealed table, `fileSize` its size as the source reports it. Its chunks are fed with `begin`.
   */
  sealedOpenFed(description: string, key: NativeKeyHandle, header: Uint8Array, prefix: Uint8Array, fileSize: number): Promise<NativeOpenResult>;
  _testing: {
    setReleaseProbe(enabled: boolean): void;
    releaseProbe(): { releases: number; bytesScanned: number; nonzeroBytes: number };
    /** The next secure ArrayBuffer the addon makes fails to be created, as napi may refuse one. */
    failNextArrayBuffer(): void;
    /** The ephemeral key's private parts in native byte order, in a secure buffer (EC: 32 bytes; RSA: d, p, q, dP, dQ, qInv). */
    /** Present only when SEALED_TENSORS_TEST_HOOKS=1 at load (the tests set it). */
    ephemeralPrivate(handle: NativeEphemeralKey): ArrayBuffer;
    /** CRYPTO_secure_used(), 0 before the heap exists. */
    opensslSecureUsed(): number;
  };
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let cached: { addon: NativeAddon } | { error: NativeUnavailableError } | undefined;

function candidates(): string[] {
  const list: string[] = [];
  const fromEnv = process.env['SEALED_TENSORS_ADDON'];
  if (fromEnv) list.push(resolve(fromEnv));
  list.push(join(packageRoot, 'build', 'Release', 'sealed_tensors.node'));
  list.push(join(packageRoot, 'build', 'Debug', 'sealed_tensors.node'));
  return list;
}

/** The addon, or a NativeUnavailableError that lists every path tried and how to fix it. */
export function loadAddon(): NativeAddon {
  // An explicit switch to the reference path (comparisons, debugging); read on every call.
  if (process.env['SEALED_TENSORS_NATIVE'] === '0') {
    throw new NativeUnavailableError('the native addon is disabled by SEALED_TENSORS_NATIVE=0');
  }
  if (cached === undefined) cached = tryLoad();
  if ('error' in cached) throw cached.error;
  return cached.addon;
}

function tryLoad(): { addon: NativeAddon } | { error: NativeUnavailableError } {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  let lastError: unknown;
  if (process.platform !== 'linux') {
    return {
      error: new NativeUnavailableError(
        `the native addon supports Linux only (this is ${process.platform}); the TypeScript reference path is unhardened`,
      ),
    };
  }
  for (const path of candidates()) {
    if (!existsSync(path)) {
      tried.push(`${path}: not found`);
      continue;
    }
    try {
      const addon = require(path) as NativeAddon;
      if (typeof addon.secureAlloc !== 'function' || typeof addon.sealedOpen !== 'function' || typeof addon.sha256 !== 'function') {
        tried.push(`${path}: loaded but lacks the expected exports (stale build?)`);
        continue;
      }
      return { addon };
    } catch (err) {
      lastError = err;
      tried.push(`${path}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  const message = [
    'the sealed-tensors native addon could not be loaded. Tried:',
    ...tried.map((t) => `  - ${t}`),
    'Possible solutions:',
    '  1. Build it: `npm run build:native` in the package directory (needs python3, make and a C++20 compiler).',
    '  2. If it was built for another Node version (NODE_MODULE_VERSION mismatch), rebuild it with this node: ' +
      `${process.version}.`,
    '  3. Point SEALED_TENSORS_ADDON at a prebuilt sealed_tensors.node.',
    '  4. Or accept the unhardened TypeScript path explicitly (allowUnhardened: true).',
  ].join('\n');
  return { error: new NativeUnavailableError(message, { cause: lastError }) };
}

export interface NativeStatus {
  /** True when plaintext goes only to locked, non-dumpable memory: the native path is active. */
  hardened: boolean;
  available: boolean;
  /** Why the native path is not available. */
  reason?: string;
  modules?: string[];
  processHardening?: NativeHardening;
}

/** Which path is active; never throws. Calling it hardens the process when the addon loads. */
export function nativeStatus(): NativeStatus {
  try {
    const addon = loadAddon();
    const processHardening = addon.hardening();
    return {
      hardened: processHardening.notDumpable,
      available: true,
      modules: [...addon.modules],
      processHardening,
    };
  } catch (err) {
    return { hardened: false, available: false, reason: (err as Error).message };
  }
}

/**
 * Gate for loading APIs: the native (hardened) path, or an explicit opt-in to the TypeScript path.
 * Returns the addon, or null when the caller allowed the unhardened fallback and the addon is missing.
 */
export function requireHardened(allowUnhardened = false): NativeAddon | null {
  try {
    return loadAddon();
  } catch (err) {
    if (allowUnhardened) return null;
    throw err;
  }
}

const classes: Record<string, new (message: string, options?: { cause?: unknown }) => SealedTensorsError> = {
  ERR_INVALID_ARGUMENT: InvalidArgumentError,
  ERR_FORMAT: FormatError,
  ERR_UNSUPPORTED_VERSION: UnsupportedVersionError,
  ERR_UNSUPPORTED: UnsupportedError,
  ERR_TRUNCATED: TruncatedError,
  ERR_INTEGRITY: IntegrityError,
  ERR_KEY_MISMATCH: KeyMismatchError,
  ERR_NOT_FOUND: NotFoundError,
  ERR_IO: IoError,
  ERR_RESOURCE_LIMIT: ResourceLimitError,
  ERR_MEMLOCK: MemlockError,
  ERR_RELEASED: ReleasedError,
  ERR_SAFETENSORS: SafetensorsError,
};

/** Turns an addon error ({ code, message }) into this library's error class; other values pass through. */
export function fromNative(err: unknown): unknown {
  if (err instanceof SealedTensorsError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code in classes) {
    const Cls = classes[code as ErrorCode]!;
    return new Cls((err as Error).message);
  }
  return err;
}

/** Runs `fn`, rethrowing addon errors as library errors. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fromNative(err);
  }
}

export async function awaitNative<T>(promise: Promise<T>): Promise<T> {
  try {
    return await promise;
  } catch (err) {
    throw fromNative(err);
  }
}
