/**
 * The hardened reader: the same format as SealedFileReader (its executable twin), but the data key
 * is an opaque native handle, and plaintext exists only in the addon's locked, non-dumpable memory.
 * Chunks are pread straight into secure memory, decrypted in place and digested in the same pass
 * on `threads` cores, off the JS thread. From a source other than a local file (an HTTP range
 * source), the reader fetches the sealed bytes of only the chunks it needs and feeds them to the
 * same native code (native-feed.ts).
 */
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import { fromHex, toHex } from '../bytes.js';
import { FormatError, IntegrityError, InvalidArgumentError, NotFoundError, ReleasedError } from '../errors.js';
import type { Sha256 } from '../crypto/backend.js';
import { TensorDigest } from '../crypto/digest.js';
import type { PublicHeader } from '../format/header.js';
import { chunkFileOffset, type Layout } from '../format/layout.js';
import { parseSealedTable, type IndexTable, type TensorEntry, type TensorTable } from '../format/table.js';
import { awaitNative, callNative, loadAddon, type NativeOpenResult, type NativeRunOptions, type NativeRunResult, type NativeSealedFile } from '../native/addon.js';
import type { NativeKeyHandle } from '../native/key.js';
import { SecureBuffer } from '../native/secure-buffer.js';
import { FileSealedSource } from '../sources/file.js';
import type { OpenedSource, SealedSource } from '../sources/types.js';
import { DEFAULT_WINDOW_BYTES, feedRun } from './native-feed.js';
import { FileSource } from './source.js';
import { readPublicHeader } from './public-header.js';
import type { TensorCheck, TensorInfo } from './sealed-file.js';

/** Which tensors to read: names (each must exist), or a predicate over names. */
export type TensorSelection = readonly string[] | ((name: string) => boolean);

export interface NativeReaderOptions {
  /** Decryption threads; default: every core (os.availableParallelism()). */
  threads?: number;
  /** Plaintext bytes per read-decrypt-hash step (tuning; multiple of 4096). */
  subBlock?: number;
  /**
   * Only these tensors: the others are not listed and their chunks never read. For a model or shard
   * file; an index ignores it (NativeSealedModelReader applies it to the shards). `verify` then checks
   * the selected tensors only (not the payload padding).
   */
  only?: TensorSelection;
  /**
   * From a source other than a local file: sealed bytes fetched and handed to the addon per step
   * (default 16 MiB; always at least one chunk). About two windows of ciphertext are held at a time.
   */
  windowBytes?: number;
  /** Aborts reads from a source other than a local file: they reject with its reason, nothing handed out. */
  signal?: AbortSignal;
}

/** One tensor in secure memory. `bytes` is valid until `release()`. */
export interface SecureTensor {
  info: TensorInfo;
  readonly bytes: Uint8Array;
  release(): void;
}

/** Every tensor of a file in one secure buffer, handed out only after every digest matched. */
export interface LoadedTensors {
  tensors: Map<string, SecureTensor>;
  byteLength: number;
  release(): void;
}

/** What `verify` reports for one tensor: the reference reader's TensorCheck, plus a verdict. */
export interface NativeTensorCheck extends Omit<TensorCheck, 'sha256'> {
  ok: boolean;
  /** Present when `plainSha256` was asked for and the tensor verified. */
  sha256?: string;
  /** Why it failed (which chunk, or the digest), when it did. */
  problem?: string;
}

export function defaultThreads(): number {
  return availableParallelism();
}

export class NativeSealedFileReader {
  #file: NativeSealedFile | null;
  /** Null for a local file (the addon preads it); else where the run's sealed bytes are fetched from. */
  #input: OpenedSource | null;
  /** The selected tensors, in file order; `#all` when that is every tensor. */
  readonly #selected: readonly TensorEntry[];
  readonly #all: boolean;
  readonly #byName: Map<string, TensorEntry>;
  readonly #threads: number;
  readonly #subBlock: number | undefined;
  readonly #windowBytes: number;
  readonly #signal: AbortSignal | undefined;

  private constructor(
    file: NativeSealedFile,
    input: OpenedSource | null,
    readonly description: string,
    /** The file's name (what an index calls it). */
    readonly name: string,
    readonly header: PublicHeader,
    readonly headerDigest: Uint8Array,
    readonly layout: Layout,
    private readonly tensorTable: TensorTable | null,
    readonly indexTable: IndexTable | null,
    options: NativeReaderOptions,
  ) {
    this.#file = file;
    this.#input = input;
    const entries = tensorTable?.tensors ?? [];
    this.#selected = selectEntries(entries, tensorTable ? options.only : undefined, description);
    this.#all = this.#selected.length === entries.length;
    this.#byName = new Map(this.#selected.map((t) => [t.name, t]));
    this.#threads = options.threads ?? defaultThreads();
    this.#subBlock = options.subBlock;
    this.#windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
    this.#signal = options.signal;
  }

  /**
   * Checks header and length (the reference rules), then key commitment and table natively.
   * `source`: a path (the addon opens and preads the file itself), or any SealedSource (an
   * HttpRangeSource): then only the header, the sealed table and later the chunks of the tensors
   * read are fetched.
   */
  static async open(source: string | SealedSource, key: NativeKeyHandle, options: NativeReaderOptions = {}): Promise<NativeSealedFileReader> {
    const addon = loadAddon();
    if (options.windowBytes !== undefined && (!Number.isSafeInteger(options.windowBytes) || options.windowBytes < 1)) {
      throw new InvalidArgumentError(`windowBytes must be a positive integer, got ${String(options.windowBytes)}`);
    }
    const src = typeof source === 'string' ? new FileSealedSource(source) : source;
    let opened: NativeOpenResult;
    let parsed: Awaited<ReturnType<typeof readPublicHeader>>;
    let input: OpenedSource | null = null;
    if (src instanceof FileSealedSource) {
      const file = await FileSource.open(src.path);
      try {
        parsed = await readPublicHeader(file);
      } finally {
        await file.close();
      }
      const headerBytes = parsed.headerBytes;
      opened = await awaitNative(callNative(() => addon.sealedOpen(src.path, key, headerBytes)));
    } else {
      input = await src.open();
      try {
        parsed = await readPublicHeader(input);
        const { headerBytes, layout } = parsed;
        // Header and sealed table: ciphertext and public bytes, authenticated by the addon.
        const prefix = await input.read(0, layout.headerLength + layout.tableLength);
        const size = input.size;
        opened = await awaitNative(callNative(() => addon.sealedOpenFed(src.description, key, headerBytes, prefix, size)));
      } catch (err) {
        await input.close().catch(() => {});
        throw err;
      }
    }
    const { header, headerBytes, layout } = parsed;
    try {
      const headerDigest = addon.sha256([headerBytes]);
      const { tensorTable, indexTable } = parseSealedTable(opened.table, header);
      const name = src instanceof FileSealedSource ? basename(src.path) : src.name;
      const reader = new NativeSealedFileReader(opened.file, input, src.description, name, header, headerDigest, layout, tensorTable, indexTable, options);
      input = null; // the reader owns it now
      try {
        // An index carries no tensor data, but its one empty chunk is authenticated all the same
        // (as the reference reader does), so every byte of an index is checked before it is trusted.
        if (indexTable) await reader.#authenticateEmptyPayload();
      } catch (err) {
        reader.close();
        throw err;
      }
      return reader;
    } catch (err) {
      opened.file.close();
      await input?.close().catch(() => {});
      throw err;
    } finally {
      opened.table.fill(0);
    }
  }

  /** An empty payload's one chunk (no tensor covers it): IntegrityError if its tag fails. */
  async #authenticateEmptyPayload(): Promise<void> {
    const result = await this.#run({ ranges: new Float64Array(0), allChunks: true, stopOnFailure: true });
    this.#throwOnFailure(result, []);
  }

  /** The bytes `loadAll()` needs (its buffer's size, or the least an `into` buffer must hold). */
  get loadByteLength(): number {
    return this.#all
      ? this.layout.payloadLength - (this.tensorTable?.payloadPadding ?? 0)
      : this.#selected.reduce((n, e) => n + (e.end - e.begin), 0);
  }

  get metadata(): Record<string, string> | null {
    return this.tensorTable?.metadata ?? null;
  }

  /** The selected tensors (every tensor unless `only` was given), in file order. */
  tensors(): TensorInfo[] {
    return this.#selected.map(toInfo);
  }

  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** One tensor, decrypted from only the chunks that cover it into its own secure buffer, digest checked. */
  async readTensor(name: string): Promise<SecureTensor> {
    const entry = this.#byName.get(name);
    if (!entry) throw new NotFoundError(`no tensor named "${name}" in ${this.description}`);
    const size = entry.end - entry.begin;
    const result = await this.#run({
      ranges: Float64Array.of(entry.begin, entry.end),
      destSize: size,
      destOffsets: Float64Array.of(0),
      allChunks: this.layout.payloadLength === 0, // an empty payload's one chunk covers no byte but is authenticated
      stopOnFailure: true,
    });
    if (result.failedChunks.length > 0) this.#throwOnFailure(result, [entry]); // the addon already wiped its buffer
    const buffer = new SecureBuffer(result.dest!, size);
    try {
      this.#throwOnFailure(result, [entry]);
    } catch (err) {
      buffer.release();
      throw err;
    }
    return secureTensor(toInfo(entry), buffer, 0, size, () => buffer.release());
  }

  /**
   * Every tensor into one secure buffer: all chunks authenticated (the last one with its flag) and
   * every digest checked before anything is returned. The buffer is allocated and populated by the
   * decrypting threads themselves, chunk by chunk, so the JS thread never waits on page faults.
   *
   * `into`: reuse a secure buffer of at least the tensors' size instead. It is lent to the job and
   * detached until the load settles, so JS cannot read a chunk before its tag is checked; it is
   * wiped whole if a chunk fails, and released if the load fails for another reason (I/O); a
   * `release()` during the load takes effect when the job ends.
   */
  async loadAll(options: { into?: SecureBuffer } = {}): Promise<LoadedTensors> {
    const entries = this.#selected;
    // Every tensor: at their payload offsets (padding is not loaded). A selection: packed in file order.
    const offsets = this.#all ? entries.map((e) => e.begin) : packedOffsets(entries);
    const size = this.loadByteLength;
    const into = options.into;
    if (into !== undefined && !(into instanceof SecureBuffer)) {
      throw new InvalidArgumentError('into must be a SecureBuffer (SecureBuffer.allocate): plaintext goes only to secure memory');
    }
    if (into && into.size < size) throw new InvalidArgumentError(`into holds ${into.size} bytes; this file's tensors need ${size}`);
    const opts = {
      ranges: rangesOf(entries),
      destOffsets: Float64Array.from(offsets),
      allChunks: this.#all,
      stopOnFailure: true,
    };
    let result: NativeRunResult;
    if (into) {
      const lent = into.lend();
      let job: Promise<NativeRunResult>;
      try {
        job = this.#start({ ...opts, dest: lent });
      } catch (err) {
        into.settle(lent); // refused before the addon took it
        throw err;
      }
      try {
        result = await awaitNative(job);
      } catch (err) {
        into.settle(undefined); // the addon wiped and freed it
        throw err;
      }
      into.settle(result.dest);
      if (into.released) throw new ReleasedError(`the buffer passed as into was released while ${this.description} was loading into it`);
    } else {
      result = await this.#run({ ...opts, destSize: size });
    }
    if (result.failedChunks.length > 0) this.#throwOnFailure(result, entries); // the addon already wiped the buffer
    const buffer = into ?? new SecureBuffer(result.dest!, size);
    try {
      this.#throwOnFailure(result, entries);
    } catch (err) {
      buffer.bytes.fill(0);
      if (!into) buffer.release();
      throw err;
    }
    const tensors = new Map<string, SecureTensor>();
    const release = (): void => buffer.release();
    entries.forEach((e, i) => tensors.set(e.name, secureTensor(toInfo(e), buffer, offsets[i]!, e.end - e.begin, release)));
    return { tensors, byteLength: size, release };
  }

  /**
   * Streams the whole file through small reused secure buffers: every chunk authenticated, every
   * digest checked. Never throws for a bad chunk or digest: each tensor gets a verdict.
   */
  async verify(options: { plainSha256?: boolean } = {}): Promise<NativeTensorCheck[]> {
    const entries = this.#selected;
    const result = await this.#run({ ranges: this.#rangesWithPadding(entries), allChunks: this.#all, stopOnFailure: false, plainSha256: options.plainSha256 ?? false });
    const failed = new Set(result.failedChunks);
    const checks = entries.map((e, i): NativeTensorCheck => {
      const base = checkFields(e);
      const badChunk = this.#firstFailedChunk(e, failed);
      if (badChunk !== undefined) return { ...base, ok: false, problem: this.#chunkProblem(badChunk) };
      if (!digestsEqual(result.digests.subarray(32 * i, 32 * i + 32), fromHex(e.digest, 'digest'))) {
        return { ...base, ok: false, problem: this.#digestProblem(e) };
      }
      const check: NativeTensorCheck = { ...base, ok: true };
      if (result.sha256) check.sha256 = toHex(result.sha256.subarray(32 * i, 32 * i + 32));
      return check;
    });
    // The table's tensors cover the payload without holes, so only an empty payload's one chunk
    // and chunks of nothing but padding belong to no tensor: their failure is the whole file's.
    const dataEnd = this.layout.payloadLength - (this.tensorTable?.payloadPadding ?? 0);
    const orphan = result.failedChunks.find((c) => this.layout.payloadLength === 0 || (this.#all && c * this.layout.chunkSize >= dataEnd));
    if (orphan !== undefined) throw new IntegrityError(this.#chunkProblem(orphan));
    this.#checkZeroPadding(result, entries.length);
    return checks;
  }

  /** The reference reader's contract: the first bad chunk or digest throws (same messages), else every check. */
  async verifyOrThrow(options: { plainSha256?: boolean } = {}): Promise<TensorCheck[]> {
    const entries = this.#selected;
    const result = await this.#run({ ranges: this.#rangesWithPadding(entries), allChunks: this.#all, stopOnFailure: false, plainSha256: options.plainSha256 ?? false });
    this.#throwOnFailure(result, entries);
    this.#checkZeroPadding(result, entries.length);
    return entries.map((e, i) => ({
      ...checkFields(e),
      sha256: result.sha256 ? toHex(result.sha256.subarray(32 * i, 32 * i + 32)) : '',
    }));
  }

  /**
   * A whole-file check hashes the payload padding (section 5.3) as one more range after the
   * tensors, so its tree digest can be compared with that of zeros, as the reference reader's
   * verify() checks the padding byte by byte. Nothing else ever reads padding.
   */
  #rangesWithPadding(entries: readonly TensorEntry[]): Float64Array {
    const padding = this.#all ? (this.tensorTable?.payloadPadding ?? 0) : 0; // a selection checks its tensors only
    const ranges = rangesOf(entries);
    if (padding === 0) return ranges;
    const out = new Float64Array(ranges.length + 2);
    out.set(ranges);
    out[ranges.length] = this.layout.payloadLength - padding;
    out[ranges.length + 1] = this.layout.payloadLength;
    return out;
  }

  #checkZeroPadding(result: NativeRunResult, paddingRange: number): void {
    const padding = this.#all ? (this.tensorTable?.payloadPadding ?? 0) : 0;
    if (padding === 0) return;
    const expected = zeroTreeDigest(this.layout.payloadLength - padding, this.layout.payloadLength, this.layout.chunkSize);
    if (!digestsEqual(result.digests.subarray(32 * paddingRange, 32 * paddingRange + 32), expected)) {
      throw new FormatError(`${this.description}: payload padding holds a non-zero byte: written by a broken sealer`);
    }
  }

  /** Bytes fetched from a source other than a local file so far (0 for a local file: the addon preads it). */
  get bytesFetched(): number {
    return this.#input?.bytesFetched ?? 0;
  }

  close(): void {
    this.#file?.close();
    this.#file = null;
    const input = this.#input;
    this.#input = null;
    void input?.close().catch(() => {});
  }

  async #run(opts: Omit<NativeRunOptions, 'threads' | 'subBlock'>): Promise<NativeRunResult> {
    return awaitNative(this.#start(opts));
  }

  /** Starts a job; throws synchronously when it is refused before it starts. */
  #start(opts: Omit<NativeRunOptions, 'threads' | 'subBlock'>): Promise<NativeRunResult> {
    const file = this.#file;
    if (!file) throw new ReleasedError(`${this.description} was closed: open it again to read`);
    const run = { ...opts, threads: this.#threads, ...(this.#subBlock ? { subBlock: this.#subBlock } : {}) };
    const input = this.#input;
    if (!input) return callNative(() => file.run(run));
    const fed = callNative(() => file.begin(run));
    return feedRun(fed, input, this.layout, { windowBytes: this.#windowBytes, ...(this.#signal ? { signal: this.#signal } : {}) });
  }

  /** Same order and messages as the reference reader: the first bad chunk, else the first bad digest. */
  #throwOnFailure(result: NativeRunResult, entries: readonly TensorEntry[]): void {
    if (result.failedChunks.length > 0) throw new IntegrityError(this.#chunkProblem(result.failedChunks[0]!));
    entries.forEach((e, i) => {
      if (!digestsEqual(result.digests.subarray(32 * i, 32 * i + 32), fromHex(e.digest, 'digest'))) {
        throw new IntegrityError(this.#digestProblem(e));
      }
    });
  }

  #firstFailedChunk(e: TensorEntry, failed: Set<number>): number | undefined {
    if (e.end <= e.begin || failed.size === 0) return undefined;
    const cs = this.layout.chunkSize;
    for (let c = Math.floor(e.begin / cs); c <= Math.floor((e.end - 1) / cs); c++) if (failed.has(c)) return c;
    return undefined;
  }

  #chunkProblem(index: number): string {
    return `${this.description}: chunk ${index} at offset ${chunkFileOffset(this.layout, index)} failed authentication: the file is corrupted or was tampered with (chunks moved, swapped or cut)`;
  }

  #digestProblem(e: TensorEntry): string {
    return `${this.description}: tensor "${e.name}" does not match its digest: the sealer was faulty or memory is corrupt; re-seal the model`;
  }
}

// The native path's digests and compares go through the addon's OpenSSL, not node:crypto, whose
// JS (about twenty internal modules) would add ~10 ms to every process that verifies or loads.

/** Constant-time, as the digests come from decrypted plaintext and the secret table. */
function digestsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return loadAddon().timingSafeEqual(a, b);
}

/** A SHA-256 for TensorDigest: the parts are hashed by the addon in one call at digest(). */
const nativeSha256 = {
  sha256(): Sha256 {
    const parts: Uint8Array[] = [];
    const hash: Sha256 = {
      update(bytes: Uint8Array): Sha256 {
        parts.push(bytes.slice());
        return hash;
      },
      digest: (): Uint8Array => loadAddon().sha256(parts),
    };
    return hash;
  },
};

/** Tree digest (section 6) of zeros at payload bytes [begin, end): one hash per distinct leaf length. */
function zeroTreeDigest(begin: number, end: number, chunkSize: number): Uint8Array {
  const leafHashes = new Map<number, Uint8Array>();
  const zeros = new Uint8Array(Math.min(chunkSize, end - begin)); // one buffer for every leaf length
  const tree = new TensorDigest(nativeSha256);
  for (let c = Math.floor(begin / chunkSize); c * chunkSize < end; c++) {
    const length = Math.min(end, (c + 1) * chunkSize) - Math.max(begin, c * chunkSize);
    let hash = leafHashes.get(length);
    if (!hash) {
      hash = loadAddon().sha256([Uint8Array.of(0), zeros.subarray(0, length)]);
      leafHashes.set(length, hash);
    }
    tree.addLeafHash(hash, length);
  }
  return tree.digest();
}

/** The tensors `only` selects, in file order; every tensor without it. */
/** Refuses an `only` that is neither a list of tensor names nor a predicate (the one check for every reader and the session). */
export function checkSelection(only: unknown): asserts only is TensorSelection {
  if (typeof only === 'function') return;
  if (!Array.isArray(only) || !only.every((n) => typeof n === 'string')) {
    throw new InvalidArgumentError('only must be an array of tensor names or a predicate (name) => boolean');
  }
}

function selectEntries(entries: readonly TensorEntry[], only: TensorSelection | undefined, description: string): readonly TensorEntry[] {
  if (only === undefined) return entries;
  checkSelection(only);
  if (typeof only === 'function') return entries.filter((e) => only(e.name));
  const names = new Set(only);
  const present = new Set(entries.map((e) => e.name));
  for (const n of names) if (!present.has(n)) throw new NotFoundError(`no tensor named "${n}" in ${description}`);
  return entries.filter((e) => names.has(e.name));
}

function packedOffsets(entries: readonly TensorEntry[]): number[] {
  let at = 0;
  return entries.map((e) => {
    const offset = at;
    at += e.end - e.begin;
    return offset;
  });
}

function rangesOf(entries: readonly TensorEntry[]): Float64Array {
  const out = new Float64Array(entries.length * 2);
  entries.forEach((e, i) => {
    out[2 * i] = e.begin;
    out[2 * i + 1] = e.end;
  });
  return out;
}

function secureTensor(info: TensorInfo, buffer: SecureBuffer, offset: number, length: number, release: () => void): SecureTensor {
  return {
    info,
    get bytes(): Uint8Array {
      if (buffer.released) throw new ReleasedError(`tensor "${info.name}" was released`);
      return new Uint8Array(buffer.arrayBuffer, offset, length);
    },
    release,
  };
}

function toInfo(e: TensorEntry): TensorInfo {
  return { name: e.name, dtype: e.dtype, shape: [...e.shape], byteLength: e.end - e.begin, begin: e.begin, end: e.end, digest: e.digest };
}

function checkFields(e: TensorEntry): Omit<TensorCheck, 'sha256'> {
  return { name: e.name, dtype: e.dtype, shape: [...e.shape], byteLength: e.end - e.begin, digest: e.digest };
}

