/**
 * SecureBuffer: bytes in an mlocked, MADV_DONTDUMP, guard-paged mapping owned by the addon.
 * `release()` zeroizes and unmaps at once and detaches every view; a finalizer does the same if the
 * owner forgets (when the ArrayBuffer is collected).
 *
 * A native job that writes into the buffer (`loadAll({ into })`) borrows it: its views are detached
 * for the job, so no unauthenticated plaintext is readable from JS, and `bytes` is refused until
 * the job hands the memory back. A `release()` meanwhile takes effect when the job ends.
 */
import { InvalidArgumentError, ReleasedError } from '../errors.js';
import { assertSafeInteger } from '../bytes.js';
import { awaitNative, callNative, loadAddon } from './addon.js';

/**
 * Gives up secure memory kept only for reuse (the session arenas' wiped buffers; set by
 * secure-arena.ts, which this module cannot import); returns the bytes released.
 */
let memlockRelief: (() => number) | undefined;

/** @internal secure-arena.ts registers SecureArena.trimAll here. */
export function setMemlockRelief(relief: () => number): void {
  memlockRelief = relief;
}

/** Runs `alloc`; where RLIMIT_MEMLOCK had no room while memory was kept for reuse, releases that and runs it once more. */
function withRoom<T>(alloc: () => T): T {
  try {
    return alloc();
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_MEMLOCK' || !memlockRelief || memlockRelief() === 0) throw err;
    return alloc();
  }
}

export class SecureBuffer {
  #buffer: ArrayBuffer;
  readonly #size: number;
  #released = false;
  #lent = false;

  /**
   * Allocates `size` bytes of locked memory (ERR_MEMLOCK if RLIMIT_MEMLOCK does not allow it),
   * populated before it returns: this blocks the JS thread (about 150 ms per GiB); prefer
   * `allocateAsync` for big buffers.
   */
  static allocate(size: number): SecureBuffer {
    assertSafeInteger(size, 'size', 0, Number.MAX_SAFE_INTEGER);
    const addon = loadAddon();
    return new SecureBuffer(withRoom(() => callNative(() => addon.secureAlloc(size))), size);
  }

  /** The same, but locking and populating (about 150 ms per GiB) happen off the JS thread. */
  static async allocateAsync(size: number): Promise<SecureBuffer> {
    assertSafeInteger(size, 'size', 0, Number.MAX_SAFE_INTEGER);
    const addon = loadAddon();
    const alloc = async (): Promise<ArrayBuffer> => awaitNative(callNative(() => addon.secureAllocAsync(size)));
    let buffer: ArrayBuffer;
    try {
      buffer = await alloc();
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_MEMLOCK' || !memlockRelief || memlockRelief() === 0) throw err;
      buffer = await alloc();
    }
    return new SecureBuffer(buffer, size);
  }

  /**
   * Locks `size` bytes now (ERR_MEMLOCK if RLIMIT_MEMLOCK does not allow it) without populating
   * them: each page appears (zeroed, and locked as it appears) when first written. For a buffer a
   * load will fill (`loadAll({ into })`): its decrypting threads populate the pages they write.
   */
  static reserve(size: number): SecureBuffer {
    assertSafeInteger(size, 'size', 0, Number.MAX_SAFE_INTEGER);
    const addon = loadAddon();
    return new SecureBuffer(withRoom(() => callNative(() => addon.secureReserve(size))), size);
  }

  /** @internal wraps an ArrayBuffer the addon made. */
  constructor(buffer: ArrayBuffer, size: number) {
    this.#buffer = buffer;
    this.#size = size;
  }

  get size(): number {
    return this.#size;
  }

  get released(): boolean {
    return this.#released;
  }

  /** A view of the whole buffer; views become empty (detached) after release, and during a job that writes into it. */
  get bytes(): Uint8Array {
    return new Uint8Array(this.arrayBuffer);
  }

  /** @internal the backing ArrayBuffer. */
  get arrayBuffer(): ArrayBuffer {
    if (this.#released) throw new ReleasedError('secure buffer was released');
    if (this.#lent) throw new InvalidArgumentError('secure buffer is in use by a running load: read it once the load has settled');
    return this.#buffer;
  }

  /**
   * @internal lends the buffer to a native job, which detaches it. Pair with `settle`: with the
   * job's new ArrayBuffer over the same memory, or with none when the job wiped and freed it.
   */
  lend(): ArrayBuffer {
    const buffer = this.arrayBuffer;
    this.#lent = true;
    return buffer;
  }

  /** @internal the job has ended (see `lend`); a release asked for meanwhile happens now. */
  settle(buffer: ArrayBuffer | undefined): void {
    this.#lent = false;
    if (buffer === undefined) {
      this.#released = true;
      return;
    }
    this.#buffer = buffer;
    if (this.#released) callNative(() => loadAddon().secureRelease(buffer));
  }

  /**
   * Zeroizes the buffer and keeps it (locked, mapped, populated) for reuse. Every view made before
   * is detached (reads as empty), so none sees what is written into the memory next.
   */
  wipe(): void {
    const buffer = this.arrayBuffer; // refused when released or lent to a running load
    try {
      this.#buffer = callNative(() => loadAddon().secureWipe(buffer));
    } catch (err) {
      // The addon could not hand the memory back: it wiped and unmapped it (or `buffer` was not live).
      this.#released = true;
      throw err;
    }
  }

  /**
   * Zeroizes, unlocks and unmaps now (when a job is writing into the buffer: as soon as the job
   * ends). Idempotent.
   */
  release(): void {
    if (this.#released) return;
    if (!this.#lent) callNative(() => loadAddon().secureRelease(this.#buffer));
    this.#released = true;
  }
}
