/**
 * One writer at a time per broker folder, across processes (`broker serve` appending to the audit
 * log while an operator runs `broker key revoke`) and within one. Node has no flock(2), so the lock
 * is a file created with O_EXCL holding the owner's pid; a lock whose process is gone (killed
 * mid-write) is taken over. Holders keep it for one read-modify-write, milliseconds.
 */
import { constants } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IoError } from '../errors.js';

export const LOCK_FILE = '.lock';

/** In-process queue per folder: the file lock is taken by one task of this process at a time. */
const queues = new Map<string, Promise<unknown>>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function acquire(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    try {
      const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        await fh.write(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new IoError(`cannot create the broker lock ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
      }
    }
    // Held. By a live process other than us (this process's own holders are queued above, so a
    // lock naming our pid was left by a failed release): wait; otherwise it is stale.
    const text = await readFile(path, 'utf8').catch(() => '');
    const pid = /^(\d+)\n$/.test(text) ? Number(text.trim()) : NaN;
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      if (Date.now() > deadline) {
        throw new IoError(`the broker folder is locked by process ${pid} (${path}) for more than ${timeoutMs} ms: another broker command is running; retry when it is done`);
      }
    } else if (text === '' && Date.now() <= deadline) {
      // Created but not yet written by its owner: give it a moment.
    } else {
      await unlink(path).catch(() => {});
      continue;
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 50);
  }
}

/**
 * Runs `fn` holding the folder's lock. Not re-entrant: code running under the lock calls the
 * `*Locked` variants of other operations instead of taking it again.
 */
export async function withBrokerLock<T>(dir: string, fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const key = resolve(dir);
  const previous = queues.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const tail = previous.then(() => mine);
  queues.set(key, tail);
  await previous;
  const path = join(key, LOCK_FILE);
  try {
    await acquire(path, timeoutMs);
    try {
      return await fn();
    } finally {
      await unlink(path).catch(() => {});
    }
  } finally {
    release();
    if (queues.get(key) === tail) queues.delete(key);
  }
}
