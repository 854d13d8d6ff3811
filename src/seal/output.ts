// Where the sealer writes, and what it may replace. The rule: never delete or overwrite anything
// the sealer did not write. An output is replaced only when it is itself sealed output (a sealed
// file, or a folder holding nothing but sealed shards and a sealed index), never when it is, holds
// or sits inside the input, and always by renaming a finished `.partial-*` sibling into place.
import { constants as fsc, linkSync, renameSync, rmSync, unlinkSync, type Stats } from 'node:fs';
import { lstat, open, readdir, realpath, rm, rmdir, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, relative, resolve, sep, isAbsolute } from 'node:path';
import { IoError, InvalidArgumentError, SealedTensorsError } from '../errors.js';
import { FileKind } from '../format/constants.js';
import { readPublicHeader } from '../reader/public-header.js';
import type { ByteSource } from '../reader/source.js';
import type { PublicHeader } from '../format/header.js';

/** Work in progress of this process: removed on failure, and by `removePartialsOnSignals`. */
const partials = new Set<string>();

/** A fresh hidden sibling of `output` to write into, registered for removal until committed. */
export function partialPath(output: string, tag = 'partial'): string {
  const p = join(dirname(resolve(output)), `.${basename(output)}.${tag}-${randomBytes(6).toString('hex')}`);
  partials.add(p);
  return p;
}

/** Remove a partial file or folder (after a failure) and stop tracking it. */
export async function removePartial(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true, maxRetries: 3 });
  partials.delete(path);
}

/** Paths this process is writing now (tests and diagnostics). */
export function pendingPartials(): string[] {
  return [...partials];
}

const SIGNAL_EXIT: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };

/**
 * For a command-line process: on SIGINT, SIGTERM or SIGHUP remove every partial output and exit
 * with 128 + the signal's number (Node's default handlers would exit without cleaning up).
 * Returns a function that takes the handlers away again.
 */
export function removePartialsOnSignals(onSignal: (signal: string) => void = () => {}): () => void {
  const handlers = Object.entries(SIGNAL_EXIT).map(([signal, code]) => {
    const handler = (): void => {
      for (const p of partials) {
        try {
          rmSync(p, { recursive: true, force: true, maxRetries: 3 });
        } catch {
          // Best effort: the process is going away; keep removing the others.
        }
      }
      partials.clear();
      onSignal(signal);
      process.exit(code);
    };
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  return () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  };
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new IoError(`cannot check ${path} (${errnoCode(err) ?? (err as Error).message})`, { cause: err });
  }
}

/** The real path of `path`, or, when it does not exist yet, of its folder joined with its name. */
async function realTarget(path: string): Promise<string> {
  const abs = resolve(path);
  try {
    return await realpath(abs);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw new IoError(`cannot resolve ${path} (${errnoCode(err)})`, { cause: err });
  }
  const parent = dirname(abs);
  try {
    return join(await realpath(parent), basename(abs));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') {
      throw new IoError(`the output folder ${parent} does not exist: create it first, or choose another output`, { cause: err });
    }
    throw new IoError(`cannot resolve ${parent} (${errnoCode(err)})`, { cause: err });
  }
}

/** True when `inner` is `outer` or lies inside it (both real paths). */
function within(inner: string, outer: string): boolean {
  const r = relative(outer, inner);
  return r === '' || (!isAbsolute(r) && r !== '..' && !r.startsWith(`..${sep}`));
}

/** The kind of a regular file if it is a sealed file, else null. Never follows a link or blocks on a FIFO. */
async function sealedKind(path: string): Promise<number | null> {
  return (await sealedHeader(path))?.kind ?? null;
}

/** The public header of a regular file if it is a sealed file, else null. Never follows a link or blocks on a FIFO. */
async function sealedHeader(path: string): Promise<PublicHeader | null> {
  let fh;
  try {
    fh = await open(path, fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_NOFOLLOW | fsc.O_NOCTTY);
  } catch {
    return null;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return null;
    const source: ByteSource = {
      size: st.size,
      description: path,
      read: async (offset, length) => {
        const buf = new Uint8Array(length);
        const { bytesRead } = await fh.read(buf, 0, length, offset);
        if (bytesRead !== length) throw new IoError(`${path} changed while being checked`);
        return buf;
      },
      close: async () => {},
    };
    const { header } = await readPublicHeader(source);
    return header;
  } catch (err) {
    if (err instanceof SealedTensorsError) return null;
    throw err;
  } finally {
    await fh.close();
  }
}

/**
 * Why an existing folder is not one sealed model folder, or null if it is one (or empty): one
 * sealed index and shards of that index's bundle only. A folder collecting sealed shards of
 * several models, or shards whose index is gone, is the owner's, not output to replace.
 */
async function notSealedFolderReason(dir: string, checked: string[] = []): Promise<string | null> {
  const names = await readdir(dir).catch((cause) => {
    throw new IoError(`cannot list ${dir} (${errnoCode(cause)})`, { cause });
  });
  checked.push(...names);
  const shards: [string, PublicHeader][] = [];
  let index: [string, PublicHeader] | null = null;
  for (const name of names) {
    const st = await lstat(join(dir, name));
    if (!st.isFile()) return `it holds ${name}, which is not a regular file`;
    const header = name.endsWith('.sealed') ? await sealedHeader(join(dir, name)) : null;
    if (header?.kind === FileKind.SHARD) shards.push([name, header]);
    else if (header?.kind === FileKind.INDEX && !index) index = [name, header];
    else if (header?.kind === FileKind.INDEX) return `it holds two sealed indexes, ${index![0]} and ${name}`;
    else return `it holds ${name}, which is not a sealed shard or sealed index`;
  }
  if (names.length === 0) return null;
  if (!index) return `it holds sealed shards but no sealed index`;
  const [indexName, ih] = index;
  for (const [name, h] of shards) {
    if (Buffer.compare(h.bundleId, ih.bundleId) !== 0 || h.shardCount !== ih.shardCount) {
      return `${name} is a shard of another sealed model than ${indexName}`;
    }
  }
  return null;
}

function alreadyExists(output: string): IoError {
  return new IoError(`${output} already exists: choose another output or allow overwriting (--force)`);
}

/**
 * Before sealing one file: the output must not be the input (by path, through links, or as a
 * hard link to it), and an existing output is replaced only with `overwrite` and only if it is a
 * sealed file.
 */
export async function checkFileOutput(input: string, output: string, overwrite: boolean): Promise<void> {
  const target = await realTarget(output);
  const inputReal = await realpath(resolve(input)).catch(() => resolve(input));
  const inputStat = await stat(input).catch(() => null);
  const existing = await lstatOrNull(output);
  if (target === inputReal || (existing && inputStat && existing.dev === inputStat.dev && existing.ino === inputStat.ino)) {
    throw new InvalidArgumentError(`the output ${output} is the input ${input}: choose another output path`);
  }
  if (!existing) return;
  if (!overwrite) throw alreadyExists(output);
  if (existing.isSymbolicLink()) {
    throw new IoError(`${output} is a symbolic link: not replacing it (remove it, or choose another output)`);
  }
  if (existing.isDirectory()) throw new IoError(`${output} is a folder: not replacing it with a sealed file (choose another output)`);
  if ((await sealedKind(output)) !== FileKind.MODEL) {
    throw new IoError(`${output} exists and is not a sealed model file: --force replaces only sealed output, not other files (remove it yourself, or choose another output)`);
  }
}

/**
 * Before sealing a sharded model: the output folder must not be, hold or sit inside the input
 * folder or any input file, and an existing one is replaced only with `overwrite` and only if it
 * holds nothing but sealed shards and a sealed index.
 */
export async function checkFolderOutput(inputDir: string, inputFiles: readonly string[], output: string, overwrite: boolean): Promise<void> {
  const target = await realTarget(output);
  const inputs = [resolve(inputDir), ...inputFiles.map((f) => resolve(f))];
  for (const p of inputs) {
    const real = await realpath(p).catch(() => p);
    if (within(real, target) || within(target, real)) {
      throw new InvalidArgumentError(
        `the output ${output} ${target === real ? 'is' : within(real, target) ? 'contains' : 'is inside'} the input ${p === inputs[0] ? inputDir : p}: choose an output folder outside the input`,
      );
    }
  }
  const existing = await lstatOrNull(output);
  if (!existing) return;
  if (!overwrite) throw alreadyExists(output);
  if (existing.isSymbolicLink()) throw new IoError(`${output} is a symbolic link: not replacing it (remove it, or choose another output)`);
  if (!existing.isDirectory()) throw new IoError(`${output} exists and is not a folder: not replacing it (choose another output)`);
  const reason = await notSealedFolderReason(output);
  if (reason) {
    throw new IoError(`${output} is not a sealed model folder (${reason}): --force replaces only sealed output (remove it yourself, or choose another output)`);
  }
}

/** Move a finished sealed file into place: atomically over a sealed file with `overwrite`, else only where nothing exists. */
export async function commitFile(temp: string, output: string, overwrite: boolean): Promise<void> {
  try {
    if (overwrite) {
      const existing = await lstatOrNull(output);
      // Checked again just before the rename: something else may have appeared meanwhile.
      // The same rule as before sealing: only a sealed model file (not a shard or index of a sharded model).
      if (existing && (!existing.isFile() || (await sealedKind(output)) !== FileKind.MODEL)) {
        throw new IoError(`${output} was replaced by something that is not sealed output while sealing: not overwriting it`);
      }
      renameSync(temp, output);
    } else {
      // link() fails if the name exists, so nothing appearing meanwhile is overwritten.
      try {
        linkSync(temp, output);
        unlinkSync(temp);
      } catch (err) {
        // File systems without hard links: check, then rename (a narrow race, as before link).
        if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes(errnoCode(err) ?? '')) throw err;
        if (await lstatOrNull(output)) throw alreadyExists(output);
        renameSync(temp, output);
      }
    }
    partials.delete(temp);
  } catch (cause) {
    if (cause instanceof SealedTensorsError) throw cause;
    if (errnoCode(cause) === 'EEXIST') throw alreadyExists(output);
    throw new IoError(`could not move the sealed file into place at ${output}: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Move a finished staging folder into place. An existing sealed model folder (checked again now)
 * is renamed aside and the new one renamed in, back to back with no await between them, then the
 * old one is removed; if the second rename fails the old folder is put back.
 */
export async function commitFolder(staging: string, output: string, overwrite: boolean): Promise<void> {
  const target = resolve(output);
  const existing = await lstatOrNull(target);
  try {
    if (!existing) {
      renameSync(staging, target); // fails on a non-empty folder that appeared meanwhile
      partials.delete(staging);
      return;
    }
    if (!overwrite) throw alreadyExists(output);
    const checked: string[] = [];
    if (!existing.isDirectory() || existing.isSymbolicLink() || (await notSealedFolderReason(target, checked)) !== null) {
      throw new IoError(`${output} was replaced by something that is not sealed output while sealing: not overwriting it`);
    }
    const old = partialPath(output, 'old');
    renameSync(target, old);
    try {
      renameSync(staging, target);
    } catch (err) {
      renameSync(old, target);
      partials.delete(old);
      throw err;
    }
    partials.delete(staging);
    // Not `rm -r`: a file that appeared in the folder after it was checked is not ours to delete.
    partials.delete(old);
    await removeCheckedFolder(old, checked, output);
  } catch (cause) {
    if (cause instanceof SealedTensorsError) throw cause;
    if (errnoCode(cause) === 'ENOTEMPTY' || errnoCode(cause) === 'EEXIST') throw alreadyExists(output);
    throw new IoError(`could not move the sealed model into place at ${output}: ${(cause as Error).message}`, { cause });
  }
}

/** Remove the sealed files `checked` found in a replaced folder, then the folder; keep anything else. */
async function removeCheckedFolder(old: string, checked: readonly string[], output: string): Promise<void> {
  for (const name of checked) {
    const kind = await sealedKind(join(old, name));
    if (kind === FileKind.SHARD || kind === FileKind.INDEX) await rm(join(old, name), { force: true });
  }
  try {
    await rmdir(old);
  } catch (cause) {
    if (errnoCode(cause) !== 'ENOTEMPTY' && errnoCode(cause) !== 'EEXIST') throw cause;
    const left = await readdir(old).catch(() => []);
    throw new IoError(
      `the new sealed model is in place at ${output}, but files appeared in the old one while it was replaced (${left.join(', ')}): not deleting them, they are in ${old}`,
      { cause },
    );
  }
}
