/**
 * SecureBuffer: bytes in an mlocked, MADV_DONTDUMP, guard-paged mapping owned by the addon.
 * `release()` zeroizes and unmaps at once and detaches every view; a finalizer does the same if the
 * owner forgets (when the ArrayBuffer is collected).
 */
import { ReleasedError } from '../errors.js';
import { assertSafeInteger } from '../bytes.js';
import { awaitNative, callNative, loadAddon } from './addon.js';

export class SecureBuffer {
  readonly #buffer: ArrayBuffer;
  readonly #size: number;
  #released = false;

  /**
   * Allocates `size` bytes of locked memory (ERR_MEMLOCK if RLIMIT_MEMLOCK does not allow it),
   * populated before it returns: this blocks the JS thread (about 150 ms per GiB); prefer
   * `allocateAsync` for big buffers.
   */
  static allocate(size: number): SecureBuffer {
    assertSafeInteger(size, 'size', 0, Number.MAX_SAFE_INTEGER);
    const addon = loadAddon();
    return new SecureBuffer(callNative(() => addon.secureAlloc(size)), size);
  }

  /** The same, but locking and populating (about 150 ms per GiB) happen off the JS thread. */
  static async allocateAsync(size: number): Promise<SecureBuffer> {
    assertSafeInteger(size, 'size', 0, Number.MAX_SAFE_INTEGER);
    const addon = loadAddon();
    return new SecureBuffer(await awaitNative(callNative(() => addon.secureAllocAsync(size))), size);
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

  /** A view of the whole buffer; views become empty (detached) after release. */
  get bytes(): Uint8Array {
    if (this.#released) throw new ReleasedError('secure buffer was released');
    return new Uint8Array(this.#buffer);
  }

  /** @internal the backing ArrayBuffer, for native jobs that write into it. */
  get arrayBuffer(): ArrayBuffer {
    if (this.#released) throw new ReleasedError('secure buffer was released');
    return this.#buffer;
  }

  /** Zeroizes, unlocks and unmaps now. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    callNative(() => loadAddon().secureRelease(this.#buffer));
  }
}
