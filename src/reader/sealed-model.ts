import { basename, dirname, join } from 'node:path';
import { NotFoundError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import type { IndexTable } from '../format/table.js';
import { checkShardBinding, checkWeightMap, refuseLoneShard, resolveSealedModelPath } from './model-binding.js';
import { SealedFileReader, type ReaderOptions, type TensorCheck, type TensorInfo } from './sealed-file.js';

export interface ShardCheck {
  file: string;
  tensors: TensorCheck[];
}

/**
 * A whole sealed model, single-file or sharded, opened with its data key (owner tooling, like
 * SealedFileReader). For a sharded model every shard is checked against the sealed index:
 * header digest, bundle id, shard index and count, key id.
 */
export class SealedModelReader {
  private readonly owner = new Map<string, SealedFileReader>();

  private constructor(
    readonly index: SealedFileReader | null,
    readonly files: SealedFileReader[],
  ) {
    for (const f of files) for (const t of f.tensors()) this.owner.set(t.name, f);
  }

  get sharded(): boolean {
    return this.index !== null;
  }

  /** `path`: a sealed model file, a sealed index file, or a folder holding one sealed index. */
  static async open(path: string, dataKey: Uint8Array, options: ReaderOptions = {}): Promise<SealedModelReader> {
    const file = await resolveSealedModelPath(path);
    const first = await SealedFileReader.open(file, dataKey, options);
    if (first.header.kind === FileKind.MODEL) return new SealedModelReader(null, [first]);
    const shards: SealedFileReader[] = [];
    try {
      refuseLoneShard(first);
      const table = first.indexTable as IndexTable;
      for (let i = 0; i < table.shards.length; i++) {
        const entry = table.shards[i]!;
        const shard = await SealedFileReader.open(join(dirname(file), entry.file), dataKey, options);
        shards.push(shard);
        checkShardBinding(first, shard, i, entry.headerDigest);
      }
      checkWeightMap(table, shards);
      return new SealedModelReader(first, shards);
    } catch (err) {
      await Promise.all([first.close(), ...shards.map((s) => s.close())]);
      throw err;
    }
  }

  tensors(): (TensorInfo & { file: string })[] {
    return this.files.flatMap((f) => f.tensors().map((t) => ({ ...t, file: basename(f.description) })));
  }

  async readTensor(name: string): Promise<Uint8Array> {
    const f = this.owner.get(name);
    if (!f) throw new NotFoundError(`no tensor named "${name}" in this model`);
    return f.readTensor(name);
  }

  async verify(): Promise<ShardCheck[]> {
    const out: ShardCheck[] = [];
    for (const f of this.files) out.push({ file: basename(f.description), tensors: await f.verify() });
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([this.index?.close(), ...this.files.map((f) => f.close())]);
  }
}
