/**
 * A whole sealed model (single file or sharded) on the hardened native path: the twin of
 * SealedModelReader, with the same shard-binding checks (FORMAT.md section 7), a key handle
 * instead of raw key bytes, and plaintext only in secure memory.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { constantTimeEqual, toHex } from '../bytes.js';
import { FormatError, IntegrityError, IoError, NotFoundError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import type { IndexTable } from '../format/table.js';
import type { NativeKeyHandle } from '../native/key.js';
import type { TensorCheck, TensorInfo } from './sealed-file.js';
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
    const info = await stat(path).catch((cause) => {
      throw new IoError(`cannot open ${path} (${cause.code ?? cause.message}): check the path`, { cause });
    });
    const file = info.isDirectory() ? await findSealedIndex(path) : path;
    const first = await NativeSealedFileReader.open(file, key, options);
    if (first.header.kind === FileKind.MODEL) return new NativeSealedModelReader(null, [first]);
    if (first.header.kind === FileKind.SHARD) {
      first.close();
      throw new FormatError(`${file} is one shard of a sharded model: open the model's sealed index (or its folder) instead`);
    }
    const shards: NativeSealedFileReader[] = [];
    try {
      // The index's only chunk is empty but still authenticated, as the reference reader does on verify.
      await first.verifyOrThrow();
      const table = first.indexTable as IndexTable;
      for (let i = 0; i < table.shards.length; i++) {
        const entry = table.shards[i]!;
        const shard = await NativeSealedFileReader.open(join(dirname(file), entry.file), key, options);
        shards.push(shard);
        checkShardBinding(first, shard, i, entry.headerDigest);
      }
      for (const [name, source] of Object.entries(table.weightMap)) {
        const i = table.shards.findIndex((s) => s.source === source);
        if (!shards[i]!.has(name)) throw new IntegrityError(`the sealed index places "${name}" in ${source}, whose sealed shard lacks it`);
      }
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

  readTensor(name: string): Promise<SecureTensor> {
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

function checkShardBinding(index: NativeSealedFileReader, shard: NativeSealedFileReader, i: number, expectedDigestHex: string): void {
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
