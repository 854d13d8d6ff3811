/**
 * A sealed model opened inside an EnclaveSession: the native reader behind a narrow API that hands
 * out only authenticated, digest-checked tensors in secure memory, tracks every one it handed out,
 * and wipes them all when it closes. A read that fails (tampering, I/O, a cut-short file) or is
 * aborted during a load closes the model: nothing it decrypted stays behind.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { InvalidArgumentError, NotFoundError, ReleasedError } from '../errors.js';
import { SecureBuffer } from '../native/secure-buffer.js';
import type { NativeSealedModelReader } from '../reader/native-model.js';
import type { SecureTensor } from '../reader/native-file.js';
import type { TensorInfo } from '../reader/sealed-file.js';

/** Which tensors to read: a list of names (each must exist) or a predicate over names. */
export type TensorSelection = readonly string[] | ((name: string) => boolean);

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
  /** The top-level file opened (model file or sealed index). */
  path: string;
  keyId: string;
  bundleId: string;
  headerDigest: string;
  sharded: boolean;
}

export interface SessionModelEvents {
  progress: [ProgressEvent];
}

export class SessionModel extends EventEmitter<SessionModelEvents> {
  #reader: NativeSealedModelReader | null;
  readonly #selected: SessionTensorInfo[];
  readonly #byName: Map<string, SessionTensorInfo>;
  readonly #handedOut = new Set<SecureTensor>();
  readonly #signal: AbortSignal | undefined;
  readonly #onClose: (model: SessionModel) => void;
  readonly #checkLive: () => void;
  readonly #totalBytes: number;
  readonly #available: number;
  #bytes = 0;
  #tensors = 0;
  #startedAt: number | null = null;

  /** @internal EnclaveSession.open makes these. */
  constructor(
    reader: NativeSealedModelReader,
    selected: SessionTensorInfo[],
    readonly info: SessionModelInfo,
    signal: AbortSignal | undefined,
    onClose: (model: SessionModel) => void,
    checkLive: () => void = () => {},
  ) {
    super();
    this.#reader = reader;
    this.#selected = selected;
    this.#byName = new Map(selected.map((t) => [t.name, t]));
    this.#signal = signal;
    this.#onClose = onClose;
    this.#checkLive = checkLive;
    this.#totalBytes = selected.reduce((n, t) => n + t.byteLength, 0);
    this.#available = reader.tensors().length;
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
  #live(): void {
    try {
      this.#checkLive();
    } catch (err) {
      this.close();
      throw err;
    }
  }

  #info(name: string): SessionTensorInfo {
    const info = this.#byName.get(name);
    if (!info) throw new NotFoundError(`no tensor named "${name}" among this model's ${this.#selected.length < this.#available ? 'selected ' : ''}tensors`);
    return info;
  }

  async #read(name: string, loading: boolean): Promise<SecureTensor> {
    const reader = this.#reader;
    if (reader === null) throw new ReleasedError('this model was closed (or its session ended): open it again');
    const info = this.#info(name);
    // The session's release must still hold (token and key not expired, session not closed): the
    // open reader holds its own reference to the key, so the session's check is what stops it.
    this.#live();
    if (this.#signal?.aborted) {
      if (loading) this.close();
      throw this.#signal.reason;
    }
    this.#startedAt ??= performance.now();
    let tensor: SecureTensor;
    try {
      tensor = await reader.readTensor(name);
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
      this.#live();
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
    this.#bytes += info.byteLength;
    this.#tensors += 1;
    const seconds = (performance.now() - this.#startedAt) / 1000;
    try {
      this.emit('progress', {
        bytes: this.#bytes,
        tensors: this.#tensors,
        bytesPerSecond: seconds > 0 ? this.#bytes / seconds : 0,
        totalBytes: this.#totalBytes,
        totalTensors: this.#selected.length,
      });
    } catch (err) {
      // A listener threw: the caller never gets this tensor, so nothing may keep it; a load ends.
      handed.release();
      if (loading) this.close();
      throw err;
    }
    return handed;
  }
}
