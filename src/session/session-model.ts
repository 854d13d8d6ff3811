/**
 * A sealed model opened inside an EnclaveSession: the native reader behind a narrow API that hands
 * out only authenticated, digest-checked tensors in secure memory, tracks every one it handed out,
 * and wipes them all when it closes. A read that fails (tampering, I/O, a cut-short file) or is
 * aborted during a load closes the model: nothing it decrypted stays behind.
 */
import { EventEmitter } from 'node:events';
import { InvalidArgumentError, NotFoundError, ReleasedError } from '../errors.js';
import { SecureBuffer } from '../native/secure-buffer.js';
import type { NativeSealedModelReader } from '../reader/native-model.js';
import type { LoadedTensors, SecureTensor, TensorSelection } from '../reader/native-file.js';
import { SecureArena } from '../native/secure-arena.js';
import type { TensorInfo } from '../reader/sealed-file.js';

/** Which tensors to read: the readers' own type (names, each must exist; or a predicate over names). */
export type { TensorSelection };

export interface ProgressEvent {
  /** Plaintext bytes read (authenticated and digest-checked) so far. */
  bytes: number;
  /** Tensors read so far. */
  tensors: number;
  /** Bytes per second since the first read began. */
  bytesPerSecond: number;
  /** What the selection holds in all, for a progress bar. */
  totalBytes: number;
  totalTensors: number;
}

/** A tensor of an opened model, with the shard it lives in (sharded models). */
export type SessionTensorInfo = TensorInfo & { file: string };

export interface SessionModelInfo {
  /** The top-level file opened (model file or sealed index): a path, or a URL without query or credentials. */
  path: string;
  keyId: string;
  bundleId: string;
  headerDigest: string;
  sharded: boolean;
}

/** Every selected tensor in secure memory (SessionModel.loadAll); valid until `release()` or the model's close(). */
export interface LoadedModel {
  tensors: Map<string, SecureTensor>;
  byteLength: number;
  release(): void;
}

export interface SessionModelEvents {
  progress: [ProgressEvent];
}

export class SessionModel extends EventEmitter<SessionModelEvents> {
  #reader: NativeSealedModelReader | null;
  readonly #selected: SessionTensorInfo[];
  readonly #byName: Map<string, SessionTensorInfo>;
  readonly #handedOut = new Set<{ release(): void }>();
  readonly #signal: AbortSignal | undefined;
  readonly #onClose: (model: SessionModel) => void;
  readonly #checkLive: () => void;
  readonly #totalBytes: number;
  readonly #isSelection: boolean;
  readonly #arena: SecureArena | undefined;
  #bytes = 0;
  #tensors = 0;
  #startedAt: number | null = null;

  /** @internal EnclaveSession.open makes these. */
  constructor(
    reader: NativeSealedModelReader,
    isSelection: boolean,
    readonly info: SessionModelInfo,
    signal: AbortSignal | undefined,
    onClose: (model: SessionModel) => void,
    /** Throws once the session is closed or expired: required, so no model reads past its session. */
    checkLive: () => void,
    /** The session's: loadAll() takes its buffers from it and gives them back wiped on release. */
    arena?: SecureArena,
  ) {
    super();
    this.#reader = reader;
    // The reader was opened with the selection: it lists (and can read) only those tensors.
    const selected = reader.tensors();
    this.#selected = selected;
    this.#byName = new Map(selected.map((t) => [t.name, t]));
    this.#signal = signal;
    this.#onClose = onClose;
    this.#checkLive = checkLive;
    this.#totalBytes = selected.reduce((n, t) => n + t.byteLength, 0);
    this.#isSelection = isSelection;
    this.#arena = arena;
  }

  get closed(): boolean {
    return this.#reader === null;
  }

  /** The selected tensors' names, in file order (shard by shard). */
  names(): string[] {
    return this.#selected.map((t) => t.name);
  }

  /** The selected tensors' public descriptions (name, dtype, shape, sizes, digest), in file order. */
  list(): SessionTensorInfo[] {
    return this.#selected.map((t) => ({ ...t, shape: [...t.shape] }));
  }

  /** Plaintext bytes the selection holds. */
  get byteLength(): number {
    return this.#totalBytes;
  }

  /**
   * Every selected tensor in file order, each read from only its own chunks, authenticated and
   * digest-checked before it is yielded. Each stays valid until its `release()` or the model's
   * `close()`. A failure or an abort closes the model (every tensor it handed out is wiped).
   */
  async *tensors(): AsyncGenerator<SecureTensor, void, undefined> {
    for (const t of this.#selected) {
      yield await this.#read(t.name, true);
    }
  }

  /**
   * Every selected tensor at once, a few large native jobs (one per file) instead of one per tensor:
   * each file's tensors land in one secure buffer, every chunk authenticated and every digest
   * checked before anything is returned. `release()` wipes them all (as does the model's close()).
   * A failure or an abort closes the model. The buffers come from the session's arena (unless
   * `reuseMemory: false`): a release wipes them at once, detaches every view, and keeps them locked
   * for the session's next load; a failed load releases them instead.
   *
   * `into` (a single-file model): load into this secure buffer, already allocated and touched, instead
   * of fresh memory (reloading a model of the same size: the first touch of fresh locked memory costs
   * more than decrypting it). It is lent to the job and wiped whole if the load fails; `release()`
   * and close() then wipe the loaded bytes and leave the buffer to its owner.
   */
  async loadAll(options: { into?: SecureBuffer } = {}): Promise<LoadedModel> {
    const reader = this.#openReader();
    this.#sessionLive(); // as for every read: the session's release must still hold
    const into = options.into;
    if (into !== undefined) {
      if (!(into instanceof SecureBuffer)) throw new InvalidArgumentError('into must be a SecureBuffer (SecureBuffer.allocate): plaintext goes only to secure memory');
      if (reader.sharded) throw new InvalidArgumentError('into takes a single-file model: a sharded model loads one secure buffer per shard');
    }
    if (this.#signal?.aborted) {
      this.close();
      throw this.#signal.reason;
    }
    this.#startedAt ??= performance.now();
    let handedRelease = (): void => {};
    // Tensors in buffers this model does not own: their own release() would free the buffer, so
    // each goes through the handed-out release, and reads are refused once that ran.
    const wrap = (files: LoadedTensors[]): Map<string, SecureTensor> => {
      const tensors = new Map<string, SecureTensor>();
      for (const file of files) {
        for (const [name, t] of file.tensors) {
          tensors.set(name, {
            info: t.info,
            get bytes() {
              if (released) throw new ReleasedError(`tensor "${name}" was released (its bytes wiped)`);
              return t.bytes;
            },
            release: () => handedRelease(),
          });
        }
      }
      return tensors;
    };
    // discard: what a failed load does with its memory (unmapped, not kept for the next load).
    let loaded: { tensors: Map<string, SecureTensor>; byteLength: number; release(): void; discard?: () => void };
    try {
      if (into) {
        const file = await reader.files[0]!.loadAll({ into });
        // Wipe what was loaded and leave the buffer to its owner.
        const wipe = (): void => {
          if (!into.released) into.bytes.fill(0, 0, file.byteLength);
        };
        loaded = { tensors: wrap([file]), byteLength: file.byteLength, release: wipe };
      } else if (this.#arena) {
        const { files, buffers } = await this.#loadFromArena(reader, this.#arena);
        const arena = this.#arena;
        // Back to the session's arena: wiped now (every view detached), kept for the next load.
        const giveBack = (): void => {
          let first: unknown;
          for (const b of buffers) {
            try {
              arena.give(b); // on failure it released the buffer: go on with the rest
            } catch (err) {
              first ??= err;
            }
          }
          if (first !== undefined) throw first;
        };
        const discard = (): void => buffers.forEach((b) => b.release());
        loaded = { tensors: wrap(files), byteLength: files.reduce((n, f) => n + f.byteLength, 0), release: giveBack, discard };
      } else {
        loaded = await this.#roomy(() => reader.loadAll());
      }
    } catch (err) {
      this.close();
      throw err;
    }
    const fail = loaded.discard ?? loaded.release;
    try {
      this.#sessionLive(); // the release may have run out while the load ran (this closes the model)
    } catch (err) {
      fail();
      throw err;
    }
    if (this.#reader === null || this.#signal?.aborted) {
      fail();
      if (this.#reader === null) throw new ReleasedError('this model was closed (or its session ended) while it was being loaded');
      this.close();
      throw this.#signal!.reason;
    }
    let released = false;
    const handed = {
      release: (failed = false): void => {
        if (released) return;
        released = true;
        this.#handedOut.delete(handed);
        (failed ? fail : loaded.release)();
      },
    };
    handedRelease = handed.release;
    this.#handedOut.add(handed);
    try {
      this.#progress(loaded.byteLength, loaded.tensors.size);
    } catch (err) {
      // A listener threw: the caller never gets the tensors; the load ends.
      handed.release(true);
      this.close();
      throw err;
    }
    return { tensors: loaded.tensors, byteLength: loaded.byteLength, release: () => handed.release() };
  }

  /** One selected tensor, authenticated and digest-checked. */
  async tensor(name: string): Promise<SecureTensor> {
    return this.#read(name, false);
  }

  /**
   * Decrypts one tensor and copies it into `target` (a SecureBuffer: plaintext goes only to secure
   * memory) at `offset`; the intermediate buffer is wiped. Returns the tensor's description.
   */
  async readInto(name: string, target: SecureBuffer, offset = 0): Promise<SessionTensorInfo> {
    if (!(target instanceof SecureBuffer)) {
      throw new InvalidArgumentError('target must be a SecureBuffer (SecureBuffer.allocate): plaintext goes only to secure memory');
    }
    const info = this.#info(name);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + info.byteLength > target.size) {
      throw new InvalidArgumentError(`target holds ${target.size} bytes; "${name}" needs ${info.byteLength} at offset ${offset}`);
    }
    const t = await this.#read(name, false);
    try {
      target.bytes.set(t.bytes, offset);
    } finally {
      t.release();
    }
    return { ...info, shape: [...info.shape] };
  }

  /**
   * Each file into a buffer from the session's arena (memory a previous load already populated, or
   * reserved memory the load populates). All or nothing: on any failure every buffer is released
   * (wiped and unmapped), not kept.
   */
  async #loadFromArena(reader: NativeSealedModelReader, arena: SecureArena): Promise<{ files: LoadedTensors[]; buffers: SecureBuffer[] }> {
    const files: LoadedTensors[] = [];
    const buffers: SecureBuffer[] = [];
    try {
      for (const f of reader.files) {
        const buffer = arena.take(f.loadByteLength);
        buffers.push(buffer);
        files.push(await f.loadAll({ into: buffer }));
      }
    } catch (err) {
      for (const b of buffers) b.release();
      throw err;
    }
    return { files, buffers };
  }

  /**
   * Runs a read that allocates its own secure memory; where RLIMIT_MEMLOCK had no room for it while
   * the sessions' arenas keep (wiped) buffers, they give those up and it runs once more: memory kept
   * for reuse must not make a read fail that fits without it.
   */
  async #roomy<T>(read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_MEMLOCK' || this.#reader === null || SecureArena.trimAll() === 0) throw err;
      return read();
    }
  }

  /** Wipes every tensor this model handed out and closes its files. Idempotent. */
  close(): void {
    const reader = this.#reader;
    if (reader === null) return;
    this.#reader = null;
    try {
      for (const t of this.#handedOut) t.release();
      this.#handedOut.clear();
    } finally {
      reader.close();
      this.#onClose(this);
    }
  }

  /** Throws (and closes this model, wiping what it handed out) once the session's release no longer holds. */
  #sessionLive(): void {
    try {
      this.#checkLive();
    } catch (err) {
      this.close();
      throw err;
    }
  }

  #info(name: string): SessionTensorInfo {
    const info = this.#byName.get(name);
    if (!info) throw new NotFoundError(`no tensor named "${name}" among this model's ${this.#isSelection ? 'selected ' : ''}tensors`);
    return info;
  }

  #openReader(): NativeSealedModelReader {
    const reader = this.#reader;
    if (reader === null) throw new ReleasedError('this model was closed (or its session ended): open it again');
    return reader;
  }

  #progress(bytes: number, tensors: number): void {
    this.#bytes += bytes;
    this.#tensors += tensors;
    const seconds = (performance.now() - this.#startedAt!) / 1000;
    this.emit('progress', {
      bytes: this.#bytes,
      tensors: this.#tensors,
      bytesPerSecond: seconds > 0 ? this.#bytes / seconds : 0,
      totalBytes: this.#totalBytes,
      totalTensors: this.#selected.length,
    });
  }

  async #read(name: string, loading: boolean): Promise<SecureTensor> {
    const reader = this.#openReader();
    const info = this.#info(name);
    // The session's release must still hold (token and key not expired, session not closed): the
    // open reader holds its own reference to the key, so the session's check is what stops it.
    this.#sessionLive();
    if (this.#signal?.aborted) {
      if (loading) this.close();
      throw this.#signal.reason;
    }
    this.#startedAt ??= performance.now();
    let tensor: SecureTensor;
    try {
      tensor = await this.#roomy(() => reader.readTensor(name));
    } catch (err) {
      // A chunk that fails its tag, a digest mismatch, a file cut short: stop trusting this model.
      this.close();
      throw err;
    }
    if (this.#reader === null) {
      tensor.release(); // closed while the read ran
      throw new ReleasedError('this model was closed (or its session ended) while a tensor was being read');
    }
    try {
      this.#sessionLive();
    } catch (err) {
      tensor.release(); // the release ran out while this tensor was being read
      throw err;
    }
    if (this.#signal?.aborted) {
      tensor.release();
      if (loading) this.close();
      throw this.#signal.reason;
    }
    const handed: SecureTensor = {
      info: tensor.info,
      get bytes() {
        return tensor.bytes;
      },
      release: () => {
        this.#handedOut.delete(handed);
        tensor.release();
      },
    };
    this.#handedOut.add(handed);
    try {
      this.#progress(info.byteLength, 1);
    } catch (err) {
      // A listener threw: the caller never gets this tensor, so nothing may keep it; a load ends.
      handed.release();
      if (loading) this.close();
      throw err;
    }
    return handed;
  }
}
