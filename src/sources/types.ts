/**
 * Where sealed bytes come from. A source only delivers ciphertext (and the public header): it is
 * never trusted. The readers authenticate every byte they use, so a source that lies, changes or
 * stops ends in a typed error, never in wrong plaintext.
 */

/** A sealed file somewhere: a local path, a URL. */
export interface SealedSource {
  /** For messages: a path, or a URL without its query string or credentials. */
  readonly description: string;
  /** The file's name (a path's base name, a URL's last path segment): what a model's index calls it. */
  readonly name: string;
  /** Opens it for reading. Its size is fixed from here on: a source whose size then changes is an error. */
  open(): Promise<OpenedSource>;
  /** The sealed file `fileName` (a plain file name, from an authenticated index table) next to this one. */
  sibling(fileName: string): SealedSource;
}

/** An opened source: random access to exactly `size` bytes, and contiguous spans streamed in pieces. */
export interface OpenedSource {
  readonly description: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset`, or a typed error (TruncatedError when past the end). */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Bytes [offset, offset + length) for reading in order (bounded memory: fetched as they are read).
   * A source cut short, stalled or changed makes a read throw a typed error. Close it when done.
   */
  readSpan(offset: number, length: number, signal?: AbortSignal): Promise<SpanReader>;
  /** Bytes received from the source so far (headers not counted). */
  readonly bytesFetched: number;
  close(): Promise<void>;
}

/** A span being read in order. */
export interface SpanReader {
  /** The span's next `into.length` bytes, into `into` (never more than the span has left). */
  readFully(into: Uint8Array): Promise<void>;
  /** Lets go of what the span holds (a connection); idempotent. */
  close(): void;
}
