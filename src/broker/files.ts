/**
 * File plumbing for the broker folder: atomic replacement (temp, fsync, rename, folder fsync) with
 * the final mode applied at creation, and reads that check the opened descriptor (no symbolic
 * link, a regular file, owned by this user, not writable, or for secrets not readable, by others).
 */
import { constants } from 'node:fs';
import { link, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { BrokerConfigError, IoError } from '../errors.js';

const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;
const APPEND_FLAGS = constants.O_RDWR | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

function errno(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ?? (e instanceof Error ? e.message : String(err));
}

/** fsync a folder, so a rename or a new name in it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    await fh.sync();
  } catch (cause) {
    throw new IoError(`cannot sync folder ${dir} (${errno(cause)})`, { cause });
  } finally {
    await fh?.close().catch(() => {});
  }
}

async function writeAll(fh: FileHandle, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length; ) done += (await fh.write(data, done, data.length - done)).bytesWritten;
}

/**
 * Writes a new file with `mode` from its creation (O_EXCL), all of `data`, fsync'd. The caller
 * decides where it goes; on failure the file is removed.
 */
export async function writeNewFile(path: string, data: Uint8Array | string, mode: number): Promise<void> {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  } catch (cause) {
    throw new IoError(`cannot create ${path} (${errno(cause)})`, { cause });
  }
  try {
    await writeAll(fh, bytes);
    await fh.sync();
  } catch (cause) {
    await fh.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw new IoError(`cannot write ${path} (${errno(cause)})`, { cause });
  }
  await fh.close();
}

/**
 * Replaces (or creates) `path` atomically: a reader sees the old file or the new one, never a mix,
 * and after a crash the folder holds one of them. The temp file gets `mode` at creation, so the
 * content is never readable with a looser mode. `noClobber`: fail with EEXIST instead of replacing.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, opts: { mode: number; noClobber?: boolean }): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
  await writeNewFile(tmp, data, opts.mode);
  try {
    if (opts.noClobber) {
      await link(tmp, path);
      await unlink(tmp);
    } else {
      await rename(tmp, path);
    }
  } catch (cause) {
    await unlink(tmp).catch(() => {});
    if (errno(cause) === 'EEXIST') throw new IoError(`${path} already exists: it is never overwritten`, { cause });
    throw new IoError(`cannot replace ${path} (${errno(cause)})`, { cause });
  }
  await fsyncDir(dir);
}

export interface GuardedReadOptions {
  /** Largest size accepted; bigger is refused before reading. */
  maxBytes: number;
  /** Refuse any permission bit for group and others (keys); otherwise only write bits are refused. */
  secret?: boolean;
  /** Exact size required (a raw key). */
  exactBytes?: number;
  /** Read into memory of its own (not Node's shared Buffer pool), for the caller to wipe. */
  ownMemory?: boolean;
}

/**
 * Opens a file of the broker folder and checks the opened descriptor: a regular file (not through
 * a symbolic link), owned by this user, not writable by others, and for secrets not accessible to
 * them at all. `what` names it in messages ("kek", "config.json"). The caller closes it.
 */
export async function openGuardedFile(path: string, what: string, opts: { secret?: boolean; append?: boolean }): Promise<{ fh: FileHandle; size: number; ino: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, opts.append ? APPEND_FLAGS : READ_FLAGS);
  } catch (cause) {
    const code = errno(cause);
    if (code === 'ENOENT') throw new BrokerConfigError(`${what} is missing (${path}): is this a folder made by "sealed-tensors broker init"?`, { cause });
    if (code === 'ELOOP') throw new BrokerConfigError(`${what} (${path}) is a symbolic link: broker files are never read through links`, { cause });
    throw new BrokerConfigError(`cannot open ${what} (${path}): ${code}`, { cause });
  }
  try {
    const st = await fh.stat().catch((cause) => {
      throw new BrokerConfigError(`cannot stat ${what} (${path}): ${errno(cause)}`, { cause });
    });
    if (!st.isFile()) throw new BrokerConfigError(`${what} (${path}) is not a regular file`);
    const uid = process.geteuid?.();
    if (uid !== undefined && st.uid !== uid) {
      throw new BrokerConfigError(`${what} (${path}) belongs to uid ${st.uid}, not to this user (uid ${uid}): the broker's files must be owned by the user that runs it (chown them)`);
    }
    const mode = st.mode & 0o777;
    if (opts.secret && (mode & 0o077) !== 0) {
      throw new BrokerConfigError(`${what} (${path}) is accessible to group or others (mode ${mode.toString(8)}): run chmod 600 ${path}, and consider the secret exposed`);
    }
    if ((mode & 0o022) !== 0) {
      throw new BrokerConfigError(`${what} (${path}) is writable by group or others (mode ${mode.toString(8)}): run chmod go-w ${path}`);
    }
    return { fh, size: st.size, ino: st.ino };
  } catch (err) {
    await fh.close().catch(() => {});
    throw err;
  }
}

/** The checks of openGuardedFile, without reading. */
export async function checkGuardedFile(path: string, what: string, opts: { secret?: boolean }): Promise<void> {
  const { fh } = await openGuardedFile(path, what, opts);
  await fh.close().catch(() => {});
}

/** Reads a file of the broker folder after the checks of openGuardedFile, within a size limit. */
export async function readGuardedFile(path: string, what: string, opts: GuardedReadOptions): Promise<Uint8Array> {
  const { fh, size } = await openGuardedFile(path, what, opts);
  try {
    if (opts.exactBytes !== undefined && size !== opts.exactBytes) {
      throw new BrokerConfigError(`${what} (${path}) is ${size} bytes, not ${opts.exactBytes}: it is not the file broker init wrote`);
    }
    if (size > opts.maxBytes) throw new BrokerConfigError(`${what} (${path}) is ${size} bytes, over the ${opts.maxBytes}-byte limit`);
    const buf = opts.ownMemory ? new Uint8Array(new ArrayBuffer(opts.maxBytes + 1)) : new Uint8Array(Math.min(opts.maxBytes, size) + 1);
    let length = 0;
    try {
      for (;;) {
        const { bytesRead } = await fh.read(buf, length, buf.length - length, length);
        if (bytesRead === 0) break;
        length += bytesRead;
        if (length > opts.maxBytes || length === buf.length) {
          throw new BrokerConfigError(`${what} (${path}) grew past the ${opts.maxBytes}-byte limit while being read`);
        }
      }
      if (opts.exactBytes !== undefined && length !== opts.exactBytes) {
        throw new BrokerConfigError(`${what} (${path}) changed size while being read`);
      }
    } catch (err) {
      if (opts.ownMemory) buf.fill(0);
      if (err instanceof BrokerConfigError) throw err;
      throw new BrokerConfigError(`cannot read ${what} (${path}): ${errno(err)}`, { cause: err });
    }
    if (!opts.ownMemory) return buf.subarray(0, length);
    const out = new Uint8Array(new ArrayBuffer(length));
    out.set(buf.subarray(0, length));
    buf.fill(0);
    return out;
  } finally {
    await fh.close().catch(() => {});
  }
}
