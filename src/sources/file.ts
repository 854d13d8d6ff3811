/**
 * A sealed file on a local file system. The hardened reader recognises this source and lets the
 * addon open the path and pread chunks straight into secure memory (the fast path); `open()` gives
 * the same bytes to code that reads through the generic interface.
 */
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InvalidArgumentError, TruncatedError } from '../errors.js';
import { isPlainFileName } from '../format/table.js';
import { openRegularFile } from '../regular-file.js';
import type { OpenedSource, SealedSource, SpanReader } from './types.js';

export class FileSealedSource implements SealedSource {
  readonly description: string;
  readonly name: string;

  constructor(readonly path: string) {
    if (typeof path !== 'string' || path === '' || path.includes('\0')) {
      throw new InvalidArgumentError('a sealed file path must be a non-empty string without NUL characters');
    }
    this.description = path;
    this.name = basename(path);
  }

  async open(): Promise<OpenedSource> {
    const { fh, size } = await openRegularFile(this.path, 'pass the path of a sealed model file or folder');
    return new OpenedFile(fh, size, this.path);
  }

  sibling(fileName: string): FileSealedSource {
    if (!isPlainFileName(fileName)) throw new InvalidArgumentError(`a sibling must be a plain file name, got ${JSON.stringify(fileName)}`);
    return new FileSealedSource(join(dirname(this.path), fileName));
  }
}

class OpenedFile implements OpenedSource {
  #fetched = 0;

  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly description: string,
  ) {}

  get bytesFetched(): number {
    return this.#fetched;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    await this.#fill(buf, offset);
    return buf;
  }

  async readSpan(offset: number, length: number, signal?: AbortSignal): Promise<SpanReader> {
    let at = offset;
    const end = offset + length;
    return {
      readFully: async (into: Uint8Array): Promise<void> => {
        signal?.throwIfAborted();
        if (at + into.length > end) throw new InvalidArgumentError('read past the end of the span');
        await this.#fill(into, at);
        at += into.length;
      },
      close: () => {},
    };
  }

  async #fill(buf: Uint8Array, offset: number): Promise<void> {
    const end = offset + buf.length;
    if (end > this.size) throw truncated(this.description, end, this.size);
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await this.fh.read(buf, done, buf.length - done, offset + done);
      if (bytesRead === 0) throw truncated(this.description, end, offset + done);
      done += bytesRead;
      this.#fetched += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

function truncated(what: string, needed: number, have: number): TruncatedError {
  return new TruncatedError(`${what} ends at byte ${have} but ${needed} are needed: the file is truncated`);
}
