import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { constantTimeEqual, toHex } from '../bytes.js';
import { FormatError, IntegrityError, IoError, NotFoundError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import type { IndexTable } from '../format/table.js';
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
    const info = await stat(path).catch((cause) => {
      throw new IoError(`cannot open ${path} (${cause.code ?? cause.message}): check the path`, { cause });
    });
    const file = info.isDirectory() ? await findSealedIndex(path) : path;
    const first = await SealedFileReader.open(file, dataKey, options);
    if (first.header.kind === FileKind.MODEL) return new SealedModelReader(null, [first]);
    if (first.header.kind === FileKind.SHARD) {
      await first.close();
      throw new FormatError(`${file} is one shard of a sharded model: open the model's sealed index (or its folder) instead`);
    }
    const shards: SealedFileReader[] = [];
    try {
      const table = first.indexTable as IndexTable;
      for (let i = 0; i < table.shards.length; i++) {
        const entry = table.shards[i]!;
        const shard = await SealedFileReader.open(join(dirname(file), entry.file), dataKey, options);
        shards.push(shard);
        checkShardBinding(first, shard, i, entry.headerDigest);
      }
      for (const [name, source] of Object.entries(table.weightMap)) {
        const i = table.shards.findIndex((s) => s.source === source);
        if (!shards[i]!.has(name)) throw new IntegrityError(`the sealed index places "${name}" in ${source}, whose sealed shard lacks it`);
      }
      return new SealedModelReader(first, shards);
    } catch (err) {
      await Promise.all([first.close(), ...shards.map((s) => s.close())]);
      throw err;
    }
  }

  tensors(): (TensorInfo & { file: string })[] {
    return this.files.flatMap((f) => f.tensors().map((t) => ({ ...t, file: basename(f.description) })));
  }

  readTensor(name: string): Promise<Uint8Array> {
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

function checkShardBinding(index: SealedFileReader, shard: SealedFileReader, i: number, expectedDigestHex: string): void {
  const problems: string[] = [];
  if (toHex(shard.headerDigest) !== expectedDigestHex) problems.push('its header digest is not the one the index pins');
  if (shard.header.kind !== FileKind.SHARD) problems.push('it is not a shard');
  if (!constantTimeEqual(shard.header.bundleId, index.header.bundleId)) problems.push('it was sealed in another run (bundle id)');
  if (shard.header.shardIndex !== i) problems.push(`it is shard ${shard.header.shardIndex}, the index expects ${i}`);
  if (shard.header.shardCount !== index.header.shardCount) problems.push('its shard count differs from the index');
  if (shard.header.keyId !== index.header.keyId) problems.push('its key id differs from the index');
  if (problems.length > 0) {
    throw new IntegrityError(
      `${shard.description} does not belong to this sealed model: ${problems.join('; ')}. Shards cannot be mixed between models or versions: use the shards sealed with this index`,
    );
  }
}

async function findSealedIndex(dir: string): Promise<string> {
  const names = await readdir(dir);
  const candidates = names.filter((n) => n.endsWith('.index.json.sealed'));
  if (candidates.length !== 1) {
    throw new NotFoundError(
      candidates.length === 0
        ? `${dir} holds no sealed index (*.index.json.sealed): pass a sealed model file or a sealed model folder`
        : `${dir} holds several sealed indexes: pass one of them`,
    );
  }
  return join(dir, candidates[0]!);
}
