/**
 * SecureArena: secure buffers kept for the next load instead of unmapped. The first touch of fresh
 * locked memory (a page fault and the kernel's zeroing per page, and on a VM often the host's
 * fault too) costs more than decrypting into it; a buffer that was loaded into once is already
 * populated. A buffer given back is wiped at once (every view of it detached) and stays locked,
 * mapped and undumpable until it is taken again or the arena closes, which releases (wipes and
 * unmaps) them all.
 */
import { ReleasedError } from '../errors.js';
import { SecureBuffer, setMemlockRelief } from './secure-buffer.js';

/** Every open arena (weakly: a session never closed is still collected), for trimAll(). */
const open = new Set<WeakRef<SecureArena>>();

export class SecureArena {
  readonly #free: SecureBuffer[] = [];
  #closed = false;
  readonly #ref = new WeakRef(this);

  constructor() {
    open.add(this.#ref);
  }

  /**
   * Releases the free buffers of every open arena in this process; returns the bytes given up.
   * What they keep counts against RLIMIT_MEMLOCK for everything else too (another session, a
   * single-tensor read, a caller's SecureBuffer): an allocation that hits the limit calls this and
   * tries once more, so kept memory never makes a load fail that would fit without it.
   */
  static trimAll(): number {
    let bytes = 0;
    for (const ref of [...open]) {
      const arena = ref.deref();
      if (!arena) {
        open.delete(ref);
        continue;
      }
      bytes += arena.freeBytes;
      arena.trim();
    }
    return bytes;
  }

  /**
   * A wiped buffer of at least `size` bytes: the smallest free one that fits, else a new one,
   * reserved (locked now, populated by the load that writes it). When RLIMIT_MEMLOCK has no room
   * for a new one, the free buffers of every arena are released first and it is tried once more.
   */
  take(size: number): SecureBuffer {
    if (this.#closed) throw new ReleasedError('this secure arena was closed');
    let best = -1;
    this.#free.forEach((b, i) => {
      if (b.size >= size && (best < 0 || b.size < this.#free[best]!.size)) best = i;
    });
    if (best >= 0) return this.#free.splice(best, 1)[0]!;
    try {
      return SecureBuffer.reserve(size);
    } catch (err) {
      // Room held by this arena or another one's free buffers: give it up and try once more.
      if ((err as { code?: string }).code !== 'ERR_MEMLOCK' || SecureArena.trimAll() === 0) throw err;
      return SecureBuffer.reserve(size);
    }
  }

  /** Takes a buffer back: wiped now (views detached), kept for the next `take`; released if the arena is closed. */
  give(buffer: SecureBuffer): void {
    if (buffer.released) return;
    if (this.#closed) {
      buffer.release();
      return;
    }
    try {
      buffer.wipe();
    } catch (err) {
      buffer.release();
      throw err;
    }
    this.#free.push(buffer);
  }

  /** Bytes held for reuse (wiped, locked). */
  get freeBytes(): number {
    return this.#free.reduce((n, b) => n + b.size, 0);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Releases (wipes and unmaps) every free buffer; buffers given back later are released too. Idempotent. */
  close(): void {
    this.#closed = true;
    open.delete(this.#ref);
    this.#releaseFree();
  }

  /** Releases (wipes and unmaps) every free buffer now; the arena stays open. */
  trim(): void {
    this.#releaseFree();
  }

  #releaseFree(): void {
    for (const b of this.#free.splice(0)) b.release();
  }
}

// A caller's own SecureBuffer.allocate/reserve that hits RLIMIT_MEMLOCK gets the kept memory too.
setMemlockRelief(() => SecureArena.trimAll());
