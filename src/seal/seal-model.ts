import { mkdir, readdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { IoError, SafetensorsError } from '../errors.js';
import { BUNDLE_ID_LENGTH, FileKind, MAX_SHARDS } from '../format/constants.js';
import type { ShardEntry } from '../format/table.js';
import { parseShardIndex } from './safetensors.js';
import { readRegularFile, openRegularFile } from '../regular-file.js';
import { checkFolderOutput, commitFolder, partialPath, removePartial } from './output.js';
import {
  SAFETENSORS_HINT,
  readSafetensorsLayout,
  resolveSealOptions,
  sealIndexFile,
  sealSafetensors,
  type ResolvedOptions,
  type SealOptions,
  type SealedFileSummary,
} from './seal-file.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SEALED_SUFFIX = '.sealed';

export interface SealedModelSummary {
  directory: string;
  index: SealedFileSummary;
  shards: SealedFileSummary[];
}

/** The index file in a sharded model's folder: `model.safetensors.index.json`, or the only `*.safetensors.index.json`. */
export async function findIndexFile(dir: string): Promise<string> {
  const names = await readdir(dir).catch((cause) => {
    throw new IoError(`cannot list ${dir}: ${cause.message}`, { cause });
  });
  if (names.includes(INDEX_FILE)) return join(dir, INDEX_FILE);
  const candidates = names.filter((n) => n.endsWith('.safetensors.index.json'));
  if (candidates.length === 1) return join(dir, candidates[0]!);
  throw new SafetensorsError(
    candidates.length === 0
      ? `${dir} has no ${INDEX_FILE}: a sharded model's folder needs its index`
      : `${dir} has several *.safetensors.index.json files (${candidates.join(', ')}): keep one`,
  );
}

/**
 * Seal a sharded model folder into `outputDir`: one sealed shard per shard, plus a sealed index
 * that pins every shard's header digest. The folder appears complete or not at all.
 */
export async function sealModelDirectory(inputDir: string, outputDir: string, options: SealOptions): Promise<SealedModelSummary> {
  return sealModelDirectoryResolved(inputDir, outputDir, resolveSealOptions(options));
}

/** Internal (not exported by the package): `sealModelDirectory` with options already resolved. */
export async function sealModelDirectoryResolved(inputDir: string, outputDir: string, o: ResolvedOptions): Promise<SealedModelSummary> {
  const indexPath = await findIndexFile(inputDir);
  const indexBytes = await readRegularFile(indexPath, SAFETENSORS_HINT);
  const index = parseShardIndex(indexBytes);
  if (index.shardFiles.length > MAX_SHARDS) throw new SafetensorsError(`more than ${MAX_SHARDS} shards`);
  await checkFolderOutput(inputDir, [indexPath, ...index.shardFiles.map((f) => join(inputDir, f))], outputDir, o.overwrite);

  // Every tensor the index names must be in its shard, and every shard tensor must be indexed.
  for (const file of index.shardFiles) {
    const { fh } = await openRegularFile(join(inputDir, file), SAFETENSORS_HINT);
    try {
      const layout = await readSafetensorsLayout(fh, join(inputDir, file));
      const inShard = new Set(layout.tensors.map((t) => t.name));
      for (const t of inShard) {
        if (index.weightMap[t] !== file) {
          throw new SafetensorsError(`${file} holds tensor "${t}", which the index ${index.weightMap[t] ? `places in ${index.weightMap[t]}` : 'does not list'}`);
        }
      }
      for (const [name, f] of Object.entries(index.weightMap)) {
        if (f === file && !inShard.has(name)) throw new SafetensorsError(`the index places "${name}" in ${file}, which does not hold it`);
      }
    } finally {
      await fh.close();
    }
  }

  const target = resolve(outputDir);
  const staging = partialPath(target);
  await mkdir(staging, { recursive: false });
  try {
    const bundleId = o.randomBytes(BUNDLE_ID_LENGTH);
    const shardCount = index.shardFiles.length;
    const shards: SealedFileSummary[] = [];
    const entries: ShardEntry[] = [];
    for (let i = 0; i < shardCount; i++) {
      const source = index.shardFiles[i]!;
      const file = source + SEALED_SUFFIX;
      const summary = await sealSafetensors(join(inputDir, source), join(staging, file), o, {
        kind: FileKind.SHARD,
        shardIndex: i,
        shardCount,
        bundleId,
      });
      shards.push(summary);
      entries.push({ file, source, headerDigest: summary.headerDigest });
    }
    const indexSummary = await sealIndexFile(
      join(staging, basename(indexPath) + SEALED_SUFFIX),
      o,
      { kind: FileKind.INDEX, shardIndex: 0, shardCount, bundleId },
      { shards: entries, indexMetadata: index.metadata, weightMap: index.weightMap },
    );
    await commitFolder(staging, target, o.overwrite);
    const moved = (s: SealedFileSummary): SealedFileSummary => ({ ...s, path: join(target, basename(s.path)) });
    return { directory: target, index: moved(indexSummary), shards: shards.map(moved) };
  } catch (err) {
    await removePartial(staging);
    throw err;
  }
}
