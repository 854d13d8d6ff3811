import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { IoError } from './errors.js';

// O_NONBLOCK: opening a FIFO with no writer (or a tty, a device) returns at once instead of
// blocking a threadpool thread forever; the type check below then refuses it. Regular files
// ignore the flag. Node adds O_CLOEXEC itself.
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isDirectory()) return 'a folder';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Opens `path` for reading only if it is a regular file (checked on the open descriptor), with
 * its size. `hint` says what the caller expected, for the error message.
 */
export async function openRegularFile(path: string, hint: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await open(path, READ_FLAGS);
  } catch (cause) {
    const e = cause as NodeJS.ErrnoException;
    throw new IoError(`cannot open ${path} (${e.code ?? e.message}): check the path and permissions`, { cause });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new IoError(`${path} is ${kindOf(st)}, not a regular file: ${hint}`);
    return { fh, size: st.size };
  } catch (err) {
    await fh.close().catch(() => {});
    throw err;
  }
}

/** The whole of a regular file (small inputs such as a shard index). */
export async function readRegularFile(path: string, hint: string): Promise<Uint8Array> {
  const { fh } = await openRegularFile(path, hint);
  try {
    return new Uint8Array(await fh.readFile());
  } finally {
    await fh.close();
  }
}
