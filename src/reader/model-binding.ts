/**
 * The model-level rules of FORMAT.md section 7 that both readers (reference and native) apply:
 * which file a path names, and whether a shard belongs to its sealed index.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { constantTimeEqual, toHex } from '../bytes.js';
import { FormatError, IntegrityError, IoError, NotFoundError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import type { PublicHeader } from '../format/header.js';
import type { IndexTable } from '../format/table.js';

/** What the binding checks need of an opened sealed file, whichever reader opened it. */
export interface OpenedSealedFile {
  readonly description: string;
  readonly header: PublicHeader;
  readonly headerDigest: Uint8Array;
  has(name: string): boolean;
}

/** `path`: a sealed model file, a sealed index file, or a folder holding exactly one sealed index. */
export async function resolveSealedModelPath(path: string): Promise<string> {
  const info = await stat(path).catch((cause) => {
    throw new IoError(`cannot open ${path} (${cause.code ?? cause.message}): check the path`, { cause });
  });
  if (!info.isDirectory()) return path;
  const candidates = (await readdir(path)).filter((n) => n.endsWith('.index.json.sealed'));
  if (candidates.length !== 1) {
    throw new NotFoundError(
      candidates.length === 0
        ? `${path} holds no sealed index (*.index.json.sealed): pass a sealed model file or a sealed model folder`
        : `${path} holds several sealed indexes: pass one of them`,
    );
  }
  return join(path, candidates[0]!);
}

/** A shard opened on its own is a mistake worth its own message. */
export function refuseLoneShard(file: OpenedSealedFile): void {
  if (file.header.kind === FileKind.SHARD) {
    throw new FormatError(`${file.description} is one shard of a sharded model: open the model's sealed index (or its folder) instead`);
  }
}

/** Shard i must be the very file the index pins, from the same sealing run, key and position. */
export function checkShardBinding(index: OpenedSealedFile, shard: OpenedSealedFile, i: number, expectedDigestHex: string): void {
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

/**
 * Every tensor the index's weight map names must be in the shard it names. `shards` by position;
 * `names`: check only these (a selection, whose shards alone were opened).
 */
export function checkWeightMap(table: IndexTable, shards: readonly (OpenedSealedFile | undefined)[], names?: readonly string[]): void {
  const entries = names ? names.map((n) => [n, table.weightMap[n]!] as const) : Object.entries(table.weightMap);
  for (const [name, source] of entries) {
    const i = table.shards.findIndex((s) => s.source === source);
    if (!shards[i]?.has(name)) throw new IntegrityError(`the sealed index places "${name}" in ${source}, whose sealed shard lacks it`);
  }
}
