import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOCK_FILE, withBrokerLock } from '../../src/broker/lock.js';
import { tempDir } from '../helpers/tmp.js';

describe('the broker folder lock', () => {
  it('serializes holders in one process, and is gone after each', async () => {
    const dir = tempDir();
    const order: string[] = [];
    await Promise.all(
      ['a', 'b', 'c'].map((n) =>
        withBrokerLock(dir, async () => {
          order.push(`${n}+`);
          expect(readFileSync(join(dir, LOCK_FILE), 'utf8')).toBe(`${process.pid}\n`);
          await new Promise((r) => setTimeout(r, 5));
          order.push(`${n}-`);
        }),
      ),
    );
    expect(order).toEqual(['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    await expect(withBrokerLock(dir, async () => { throw new Error('inside'); })).rejects.toThrow('inside');
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
  });

  it('takes over a lock left by a process that is gone; waits for a live one, then gives up with a typed error', async () => {
    const dir = tempDir();
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    writeFileSync(join(dir, LOCK_FILE), `${dead}\n`);
    expect(await withBrokerLock(dir, async () => 'taken over')).toBe('taken over');

    const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      writeFileSync(join(dir, LOCK_FILE), `${live.pid}\n`);
      await expect(withBrokerLock(dir, async () => 'never', 150)).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining(`locked by process ${live.pid}`) });
      expect(readFileSync(join(dir, LOCK_FILE), 'utf8')).toBe(`${live.pid}\n`);
    } finally {
      live.kill('SIGKILL');
      await new Promise((r) => live.once('exit', r));
    }
    // Its holder died: the next caller proceeds.
    expect(await withBrokerLock(dir, async () => 'after')).toBe('after');
  });
});
