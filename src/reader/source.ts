import type { FileHandle } from 'node:fs/promises';
import { TruncatedError } from '../errors.js';
import { openRegularFile } from '../regular-file.js';

/** Random-access bytes of one sealed file: a local file today, an HTTP range source later. */
export interface ByteSource {
  readonly size: number;
  readonly description: string;
  /** Exactly `length` bytes at `offset`, or TruncatedError. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export class FileSource implements ByteSource {
  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly description: string,
  ) {}

  static async open(path: string): Promise<FileSource> {
    const { fh, size } = await openRegularFile(path, 'pass the path of a sealed model file or folder');
    return new FileSource(fh, size, path);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset + length > this.size) throw truncated(this.description, offset + length, this.size);
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw truncated(this.description, offset + length, offset + done);
      done += bytesRead;
    }
    return buf;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** A sealed file already in memory (tests, downloads held whole). */
export class MemorySource implements ByteSource {
  readonly size: number;
  constructor(
    private readonly bytes: Uint8Array,
    readonly description = 'sealed bytes in memory',
  ) {
    this.size = bytes.length;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset + length > this.size) throw truncated(this.description, offset + length, this.size);
    return this.bytes.slice(offset, offset + length);
  }

  async close(): Promise<void> {}
}

function truncated(what: string, needed: number, have: number): TruncatedError {
  return new TruncatedError(`${what} ends at byte ${have} but ${needed} are needed: the file is truncated`);
}
