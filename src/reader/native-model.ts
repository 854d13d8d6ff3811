/**
 * A whole sealed model (single file or sharded) on the hardened native path: the twin of
 * SealedModelReader, with the same shard-binding checks (FORMAT.md section 7), a key handle
 * instead of raw key bytes, and plaintext only in secure memory.
 */
import { basename, dirname, join } from 'node:path';
import { NotFoundError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import type { IndexTable } from '../format/table.js';
import type { NativeKeyHandle } from '../native/key.js';
import type { TensorCheck, TensorInfo } from './sealed-file.js';
import { checkShardBinding, checkWeightMap, refuseLoneShard, resolveSealedModelPath } from './model-binding.js';
import { NativeSealedFileReader, type LoadedTensors, type NativeReaderOptions, type NativeTensorCheck, type SecureTensor } from './native-file.js';

export interface NativeShardCheck {
  file: string;
  tensors: NativeTensorCheck[];
}

export class NativeSealedModelReader {
  readonly #owner = new Map<string, NativeSealedFileReader>();

  private constructor(
    readonly index: NativeSealedFileReader | null,
    readonly files: NativeSealedFileReader[],
  ) {
    for (const f of files) for (const t of f.tensors()) this.#owner.set(t.name, f);
  }

  get sharded(): boolean {
    return this.index !== null;
  }

  /** `path`: a sealed model file, a sealed index file, or a folder holding one sealed index. */
  static async open(path: string, key: NativeKeyHandle, options: NativeReaderOptions = {}): Promise<NativeSealedModelReader> {
    const file = await resolveSealedModelPath(path);
    const first = await NativeSealedFileReader.open(file, key, options);
    if (first.header.kind === FileKind.MODEL) return new NativeSealedModelReader(null, [first]);
    const shards: NativeSealedFileReader[] = [];
    try {
      refuseLoneShard(first);
      // (NativeSealedFileReader.open has authenticated the index's one empty chunk.)
      const table = first.indexTable as IndexTable;
      for (let i = 0; i < table.shards.length; i++) {
        const entry = table.shards[i]!;
        const shard = await NativeSealedFileReader.open(join(dirname(file), entry.file), key, options);
        shards.push(shard);
        checkShardBinding(first, shard, i, entry.headerDigest);
      }
      checkWeightMap(table, shards);
      return new NativeSealedModelReader(first, shards);
    } catch (err) {
      first.close();
      for (const s of shards) s.close();
      throw err;
    }
  }

  tensors(): (TensorInfo & { file: string })[] {
    return this.files.flatMap((f) => f.tensors().map((t) => ({ ...t, file: basename(f.description) })));
  }

  async readTensor(name: string): Promise<SecureTensor> {
    const f = this.#owner.get(name);
    if (!f) throw new NotFoundError(`no tensor named "${name}" in this model`);
    return f.readTensor(name);
  }

  /** Every tensor of every file into secure memory; all or nothing. */
  async loadAll(): Promise<{ tensors: Map<string, SecureTensor>; byteLength: number; release(): void }> {
    const loaded: LoadedTensors[] = [];
    try {
      for (const f of this.files) loaded.push(await f.loadAll());
    } catch (err) {
      for (const l of loaded) l.release();
      throw err;
    }
    const tensors = new Map<string, SecureTensor>();
    for (const l of loaded) for (const [k, v] of l.tensors) tensors.set(k, v);
    return {
      tensors,
      byteLength: loaded.reduce((n, l) => n + l.byteLength, 0),
      release: () => loaded.forEach((l) => l.release()),
    };
  }

  /** Per-tensor verdicts for every file (see NativeSealedFileReader.verify). */
  async verify(options: { plainSha256?: boolean } = {}): Promise<NativeShardCheck[]> {
    const out: NativeShardCheck[] = [];
    for (const f of this.files) out.push({ file: basename(f.description), tensors: await f.verify(options) });
    return out;
  }

  /** The reference reader's contract: the first failure throws (same messages), else every check. */
  async verifyOrThrow(options: { plainSha256?: boolean } = {}): Promise<{ file: string; tensors: TensorCheck[] }[]> {
    const out: { file: string; tensors: TensorCheck[] }[] = [];
    for (const f of this.files) out.push({ file: basename(f.description), tensors: await f.verifyOrThrow(options) });
    return out;
  }

  close(): void {
    this.index?.close();
    for (const f of this.files) f.close();
  }
}
