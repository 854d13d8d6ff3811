/**
 * A whole sealed model (single file or sharded) on the hardened native path: the twin of
 * SealedModelReader, with the same shard-binding checks (FORMAT.md section 7), a key handle
 * instead of raw key bytes, and plaintext only in secure memory. From a path or any SealedSource
 * (an HTTP range source: shards are fetched next to the index); with `only`, just the shards that
 * hold the selected tensors are opened, and just those tensors' chunks are ever read.
 */
import { NotFoundError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import type { IndexTable } from '../format/table.js';
import type { NativeKeyHandle } from '../native/key.js';
import type { TensorCheck, TensorInfo } from './sealed-file.js';
import { FileSealedSource } from '../sources/file.js';
import type { SealedSource } from '../sources/types.js';
import { checkShardBinding, checkWeightMap, refuseLoneShard, resolveSealedModelPath } from './model-binding.js';
import { checkSelection, NativeSealedFileReader, type LoadedTensors, type NativeReaderOptions, type NativeTensorCheck, type SecureTensor, type TensorSelection } from './native-file.js';

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

  /**
   * `source`: a path (a sealed model file, a sealed index file, or a folder holding one sealed index)
   * or a SealedSource naming a model file or an index (its shards are its siblings).
   * `options.only`: the tensors to read (names, each must exist; or a predicate): the model then lists
   * only those, and opens only the shards that hold them.
   */
  static async open(source: string | SealedSource, key: NativeKeyHandle, options: NativeReaderOptions = {}): Promise<NativeSealedModelReader> {
    const src =
      typeof source === 'string'
        ? new FileSealedSource(await resolveSealedModelPath(source))
        : source instanceof FileSealedSource
          ? new FileSealedSource(await resolveSealedModelPath(source.path))
          : source;
    const first = await NativeSealedFileReader.open(src, key, options);
    if (first.header.kind === FileKind.MODEL) return new NativeSealedModelReader(null, [first]);
    const shards: NativeSealedFileReader[] = [];
    try {
      refuseLoneShard(first);
      // (NativeSealedFileReader.open has authenticated the index's one empty chunk.)
      const table = first.indexTable as IndexTable;
      const wanted = selectShards(table, options.only);
      const byPosition: (NativeSealedFileReader | undefined)[] = [];
      for (let i = 0; i < table.shards.length; i++) {
        const entry = table.shards[i]!;
        const names = wanted?.get(i);
        if (wanted && !names) continue; // holds none of the selected tensors: never fetched
        // A predicate, not the list: a shard lacking a name the index places in it is checkWeightMap's IntegrityError.
        const only = names ? new Set(names) : undefined;
        const shard = await NativeSealedFileReader.open(src.sibling(entry.file), key, { ...options, ...(only ? { only: (n: string) => only.has(n) } : {}) });
        shards.push(shard);
        byPosition[i] = shard;
        checkShardBinding(first, shard, i, entry.headerDigest);
      }
      checkWeightMap(table, byPosition, wanted ? [...wanted.values()].flat() : undefined);
      return new NativeSealedModelReader(first, shards);
    } catch (err) {
      first.close();
      for (const s of shards) s.close();
      throw err;
    }
  }

  tensors(): (TensorInfo & { file: string })[] {
    return this.files.flatMap((f) => f.tensors().map((t) => ({ ...t, file: f.name })));
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
    for (const f of this.files) out.push({ file: f.name, tensors: await f.verify(options) });
    return out;
  }

  /** The reference reader's contract: the first failure throws (same messages), else every check. */
  async verifyOrThrow(options: { plainSha256?: boolean } = {}): Promise<{ file: string; tensors: TensorCheck[] }[]> {
    const out: { file: string; tensors: TensorCheck[] }[] = [];
    for (const f of this.files) out.push({ file: f.name, tensors: await f.verifyOrThrow(options) });
    return out;
  }

  close(): void {
    this.index?.close();
    for (const f of this.files) f.close();
  }
}

/**
 * Shard position -> the selected tensors it holds, from the index's weight map; null without `only`.
 * A name the weight map lacks is NotFoundError; a predicate selects among the weight map's names.
 */
function selectShards(table: IndexTable, only: TensorSelection | undefined): Map<number, string[]> | null {
  if (only === undefined) return null;
  let names: string[];
  if (typeof only === 'function') {
    names = Object.keys(table.weightMap).filter((n) => only(n));
  } else {
    checkSelection(only);
    names = [...new Set(only)];
    for (const n of names) if (!Object.hasOwn(table.weightMap, n)) throw new NotFoundError(`no tensor named "${n}" in this model`);
  }
  const out = new Map<number, string[]>();
  for (const n of names) {
    // A weight map entry naming no shard of the index is caught by checkWeightMap.
    const i = table.shards.findIndex((s) => s.source === table.weightMap[n]);
    const list = out.get(i) ?? [];
    list.push(n);
    out.set(i, list);
  }
  return out;
}
