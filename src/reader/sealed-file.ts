/**
 * The key-in-hand reference reader: model-owner tooling and the executable twin of docs/FORMAT.md.
 *
 * It needs the raw data key and hands plaintext out as ordinary Uint8Arrays on the JS heap, so it
 * is NOT the loading API for production inference: that is EnclaveSession, which keeps keys and
 * plaintext in native secure memory. Use this to check, inspect and test sealed files you own.
 */
import { constantTimeEqual, fromHex, toHex, wipe } from '../bytes.js';
import { FormatError, IntegrityError, NotFoundError, ReleasedError, SealedTensorsError } from '../errors.js';
import { type Dtype, TAG_LENGTH } from '../format/constants.js';
import type { PublicHeader } from '../format/header.js';
import { chunkCount, chunkFileOffset, chunkPlainLength, chunksCovering, type Layout } from '../format/layout.js';
import { parseSealedTable, type IndexTable, type TensorEntry, type TensorTable } from '../format/table.js';
import { backendByName, type CryptoBackend } from '../crypto/backend.js';
import { TensorDigest } from '../crypto/digest.js';
import { deriveCheckedFileKeys, type FileKeys } from '../crypto/file-keys.js';
import { TABLE_NONCE, chunkNonce } from '../crypto/stream.js';
import { FileSource, type ByteSource } from './source.js';
import { readPublicHeader } from './public-header.js';

// Also here: the reference reader's module was its home before native-file.ts needed it without this module's crypto.
export { readPublicHeader };

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  byteLength: number;
  /** Offsets into the payload plaintext. */
  begin: number;
  end: number;
  /** Tree digest (FORMAT.md section 6), hex. */
  digest: string;
}

export interface TensorCheck {
  name: string;
  dtype: Dtype;
  shape: number[];
  byteLength: number;
  /** The format's tree digest, checked. */
  digest: string;
  /** Plain SHA-256 of the tensor's bytes, to compare with the source file. */
  sha256: string;
}

export interface ReaderOptions {
  /** Which vetted library does the crypto: node:crypto (OpenSSL, default) or @noble. */
  backend?: 'node' | 'noble' | CryptoBackend;
}

export class SealedFileReader {
  private keys: FileKeys | null;
  private readonly byName: Map<string, TensorEntry>;

  private constructor(
    private readonly source: ByteSource,
    private readonly ownsSource: boolean,
    private readonly backend: CryptoBackend,
    keys: FileKeys,
    readonly header: PublicHeader,
    readonly headerDigest: Uint8Array,
    readonly layout: Layout,
    private readonly tensorTable: TensorTable | null,
    readonly indexTable: IndexTable | null,
  ) {
    this.keys = keys;
    this.byName = new Map((tensorTable?.tensors ?? []).map((t) => [t.name, t]));
  }

  /** Open a sealed file with its data key: checks header, file length, key commitment and table. */
  static async open(file: string | ByteSource, dataKey: Uint8Array, options: ReaderOptions = {}): Promise<SealedFileReader> {
    const backend = typeof options.backend === 'object' ? options.backend : await backendByName(options.backend ?? 'node');
    const ownsSource = typeof file === 'string';
    const source = typeof file === 'string' ? await FileSource.open(file) : file;
    let keys: FileKeys | null = null;
    try {
      const { header, headerBytes, layout } = await readPublicHeader(source);
      keys = deriveCheckedFileKeys(backend, dataKey, header);
      const headerDigest = backend.sha256().update(headerBytes).digest();
      const sealedTable = await source.read(layout.headerLength, layout.tableLength);
      let tablePlain: Uint8Array;
      try {
        tablePlain = backend.aeadOpen(header.suite, keys.tableKey, TABLE_NONCE, headerDigest, sealedTable);
      } catch (cause) {
        throw new IntegrityError(
          `${source.description}: the header or the tensor table failed authentication: the file is corrupted or was tampered with`,
          { cause },
        );
      }
      let tables: ReturnType<typeof parseSealedTable>;
      try {
        tables = parseSealedTable(tablePlain, header);
      } finally {
        wipe(tablePlain); // names and shapes are confidential too; the parsed table is all we keep
      }
      const { tensorTable, indexTable } = tables;
      const reader = new SealedFileReader(source, ownsSource, backend, keys, header, headerDigest, layout, tensorTable, indexTable);
      // An index carries no tensor data, but its one empty chunk is authenticated all the same,
      // so every byte of an index file is checked by the time it is trusted.
      if (indexTable) for await (const _ of reader.openChunks(0, 0));
      return reader;
    } catch (err) {
      keys?.destroy();
      if (ownsSource) await source.close();
      throw err;
    }
  }

  get description(): string {
    return this.source.description;
  }

  get metadata(): Record<string, string> | null {
    return this.tensorTable?.metadata ?? null;
  }

  /** Tensors in payload order. */
  tensors(): TensorInfo[] {
    return (this.tensorTable?.tensors ?? []).map(toInfo);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** One tensor, read and decrypted from only the chunks that cover it, digest checked. */
  async readTensor(name: string): Promise<Uint8Array> {
    const entry = this.byName.get(name);
    if (!entry) throw new NotFoundError(`no tensor named "${name}" in ${this.source.description}`);
    const out = new Uint8Array(entry.end - entry.begin);
    const digest = new TensorDigest(this.backend);
    const range = chunksCovering(this.layout, entry.begin, entry.end);
    try {
      // An empty payload's one chunk covers no tensor byte but is authenticated all the same.
      if (this.layout.payloadLength === 0) for await (const _ of this.openChunks(0, 0));
      if (range) {
        let i = range.first;
        for await (const plain of this.openChunks(range.first, range.last)) {
          try {
            const chunkStart = i++ * this.layout.chunkSize;
            const a = Math.max(entry.begin, chunkStart);
            const b = Math.min(entry.end, chunkStart + plain.length);
            const piece = plain.subarray(a - chunkStart, b - chunkStart);
            out.set(piece, a - entry.begin);
            digest.update(piece);
            digest.endLeaf();
          } finally {
            wipe(plain);
          }
        }
      }
      this.checkDigest(entry, digest);
    } catch (err) {
      wipe(out); // nothing unverified leaves this function
      throw err;
    }
    return out;
  }

  /** Every tensor in payload order, each chunk decrypted once; a tensor is yielded only after its digest matched. */
  async *entries(): AsyncGenerator<{ info: TensorInfo; data: Uint8Array }> {
    const tensors = this.tensorTable?.tensors ?? [];
    let pending: { entry: TensorEntry; data: Uint8Array; digest: TensorDigest } | null = null;
    let next = 0;
    const count = chunkCount(this.layout.payloadLength, this.layout.chunkSize);
    const ready: { info: TensorInfo; data: Uint8Array }[] = [];
    try {
      let i = 0;
      for await (const plain of this.openChunks(0, count - 1)) {
        const chunkStart = i++ * this.layout.chunkSize;
        const chunkEnd = chunkStart + plain.length;
        try {
          while (true) {
            if (pending === null) {
              if (next >= tensors.length) break;
              const entry = tensors[next]!;
              if (entry.begin >= chunkEnd && entry.end > entry.begin) break;
              next++;
              pending = { entry, data: new Uint8Array(entry.end - entry.begin), digest: new TensorDigest(this.backend) };
            }
            const { entry, data, digest } = pending;
            const a = Math.max(entry.begin, chunkStart);
            const b = Math.min(entry.end, chunkEnd);
            if (b > a) {
              const piece = plain.subarray(a - chunkStart, b - chunkStart);
              data.set(piece, a - entry.begin);
              digest.update(piece);
              digest.endLeaf();
            }
            if (entry.end > chunkEnd) break; // continues in the next chunk
            this.checkDigest(entry, digest);
            ready.push({ info: toInfo(entry), data });
            pending = null;
          }
        } finally {
          wipe(plain);
        }
        while (ready.length > 0) yield ready.shift()!;
      }
    } finally {
      if (pending) wipe(pending.data);
      for (const r of ready) wipe(r.data);
    }
  }

  /**
   * Decrypt everything, check every chunk, the last-chunk flag and every digest, without holding
   * more than one chunk. Returns each tensor's digest and plain SHA-256.
   */
  async verify(): Promise<TensorCheck[]> {
    const tensors = this.tensorTable?.tensors ?? [];
    const results: TensorCheck[] = [];
    const count = chunkCount(this.layout.payloadLength, this.layout.chunkSize);
    let t = 0;
    let tree = new TensorDigest(this.backend);
    let plainHash = this.backend.sha256();
    const finishEmptyTensors = (): void => {
      while (t < tensors.length && tensors[t]!.end === tensors[t]!.begin) finish();
    };
    const finish = (): void => {
      const entry = tensors[t]!;
      this.checkDigest(entry, tree);
      results.push({ ...checkFields(entry), sha256: toHex(plainHash.digest()) });
      t++;
      tree = new TensorDigest(this.backend);
      plainHash = this.backend.sha256();
    };
    let i = 0;
    for await (const plain of this.openChunks(0, count - 1)) {
      try {
        const chunkStart = i++ * this.layout.chunkSize;
        const chunkEnd = chunkStart + plain.length;
        finishEmptyTensors();
        while (t < tensors.length && tensors[t]!.begin < chunkEnd) {
          const entry = tensors[t]!;
          const piece = plain.subarray(Math.max(entry.begin, chunkStart) - chunkStart, Math.min(entry.end, chunkEnd) - chunkStart);
          tree.update(piece);
          tree.endLeaf();
          plainHash.update(piece);
          if (entry.end > chunkEnd) break;
          finish();
          finishEmptyTensors();
        }
        checkZeroPadding(plain, chunkStart, this.layout.payloadLength - (this.tensorTable?.payloadPadding ?? 0), this.source.description);
      } finally {
        wipe(plain);
      }
    }
    finishEmptyTensors();
    if (results.length !== tensors.length) throw new FormatError('the tensor table does not cover the payload (reader bug or damaged table)');
    return results;
  }

  /**
   * Decrypted, authenticated chunks first..last in order. The read of chunk i+1 is under way
   * while chunk i is decrypted and used, so I/O and crypto overlap.
   */
  private async *openChunks(first: number, last: number): AsyncGenerator<Uint8Array> {
    let next = first <= last ? this.readSealedChunk(first) : null;
    for (let i = first; i <= last; i++) {
      const sealed = await next!;
      next = i < last ? this.readSealedChunk(i + 1) : null;
      next?.catch(() => {}); // awaited next round; not unhandled if this round throws
      yield this.decryptChunk(i, sealed);
    }
  }

  private readSealedChunk(index: number): Promise<Uint8Array> {
    return this.source.read(chunkFileOffset(this.layout, index), chunkPlainLength(this.layout, index) + TAG_LENGTH);
  }

  /** Authenticate and decrypt payload chunk i; nothing of it is returned unless the tag verified. */
  private decryptChunk(index: number, sealed: Uint8Array): Uint8Array {
    const keys = this.keys;
    if (!keys) throw new ReleasedError(`${this.source.description} was closed: open it again to read`);
    const count = chunkCount(this.layout.payloadLength, this.layout.chunkSize);
    try {
      return this.backend.aeadOpen(this.header.suite, keys.payloadKey, chunkNonce(index, index === count - 1), this.headerDigest, sealed);
    } catch (cause) {
      if (!(cause instanceof SealedTensorsError)) throw cause;
      throw new IntegrityError(
        `${this.source.description}: chunk ${index} at offset ${chunkFileOffset(this.layout, index)} failed authentication: the file is corrupted or was tampered with (chunks moved, swapped or cut)`,
        { cause },
      );
    }
  }

  private checkDigest(entry: TensorEntry, digest: TensorDigest): void {
    // Constant-time, as on the native path: both digests are of plaintext the secret table describes.
    if (!constantTimeEqual(digest.digest(), fromHex(entry.digest, 'digest'))) {
      throw new IntegrityError(
        `${this.source.description}: tensor "${entry.name}" does not match its digest: the sealer was faulty or memory is corrupt; re-seal the model`,
      );
    }
  }

  /** Forget the subkeys and close the file. Further reads fail with ERR_RELEASED. */
  async close(): Promise<void> {
    this.keys?.destroy();
    this.keys = null;
    if (this.ownsSource) await this.source.close();
  }
}

/** Payload padding (section 5.3) is zeros: anything else means a broken sealer. */
function checkZeroPadding(plain: Uint8Array, chunkStart: number, dataEnd: number, description: string): void {
  for (let i = Math.max(0, dataEnd - chunkStart); i < plain.length; i++) {
    if (plain[i] !== 0) throw new FormatError(`${description}: payload padding holds a non-zero byte at ${chunkStart + i}: written by a broken sealer`);
  }
}

function toInfo(e: TensorEntry): TensorInfo {
  return { name: e.name, dtype: e.dtype, shape: [...e.shape], byteLength: e.end - e.begin, begin: e.begin, end: e.end, digest: e.digest };
}

function checkFields(e: TensorEntry): Omit<TensorCheck, 'sha256'> {
  return { name: e.name, dtype: e.dtype, shape: [...e.shape], byteLength: e.end - e.begin, digest: e.digest };
}

