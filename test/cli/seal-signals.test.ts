// A seal interrupted by SIGINT, SIGTERM or SIGHUP leaves no hidden .partial-* output behind, and
// exits 128 + the signal's number as a shell expects. Runs the built CLI as a separate process.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/sealed-tensors.js');
const hasBuild = existsSync(join(ROOT, 'dist/cli/main.js'));
if (!hasBuild) console.warn('SKIPPED seal-signals: dist/ is not built (npm test builds it first)');

const dir = tempDir();
const keyPath = join(dir, 'k.key');
// Zeros seal as slowly as any bytes; with 4 KiB chunks this takes a few seconds, time to interrupt it.
const SIZE = 64 << 20;
const input = join(dir, 'big.safetensors');
const sharded = join(dir, 'sharded');

function partials(): string[] {
  return readdirSync(dir, { recursive: true }).map(String).filter((n) => /\.(partial|old)-/.test(n));
}

/** Starts a seal, waits until its partial output exists, sends `signal`, and returns how it ended. */
async function interrupt(args: string[], signal: NodeJS.Signals): Promise<{ code: number | null; stderr: string; sawPartial: boolean }> {
  const child = spawn(process.execPath, [BIN, 'seal', ...args, '--key', keyPath, '--chunk-size', '4KiB'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let sawPartial = false;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && child.exitCode === null) {
    if (partials().length > 0) {
      sawPartial = true;
      // Let it write a little into the partial output first.
      await new Promise((r) => setTimeout(r, 20));
      child.kill(signal);
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const code = await exited;
  return { code, stderr, sawPartial };
}

describe.runIf(hasBuild)('seal interrupted by a signal', () => {
  it('prepares a large model and a key', async () => {
    writeSafetensors(input, [{ name: 'w', dtype: 'U8', shape: [SIZE], data: new Uint8Array(SIZE) }]);
    mkdirSync(sharded);
    const half = SIZE / 2;
    writeSafetensors(join(sharded, 'a.safetensors'), [{ name: 'a', dtype: 'U8', shape: [half], data: new Uint8Array(half) }]);
    writeSafetensors(join(sharded, 'b.safetensors'), [{ name: 'b', dtype: 'U8', shape: [half], data: new Uint8Array(half) }]);
    writeFileSync(join(sharded, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'a.safetensors', b: 'b.safetensors' } }));
    expect(await main(['keygen', '-o', keyPath], { stdout: () => {}, stderr: () => {} })).toBe(0);
  });

  for (const [signal, exitCode] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    it(`${signal} during a single-file seal removes the partial file and exits ${exitCode}`, async () => {
      const out = join(dir, `${signal}.sealed`);
      const r = await interrupt([input, '-o', out], signal);
      expect(r.sawPartial, r.stderr).toBe(true);
      expect(r.code, r.stderr).toBe(exitCode);
      expect(r.stderr).toMatch(new RegExp(`interrupted by ${signal}: removed the partial output`));
      expect(partials()).toEqual([]);
      expect(existsSync(out)).toBe(false);
    });
  }

  it('SIGTERM during a sharded seal removes the partial folder', async () => {
    const out = join(dir, 'sharded.sealed');
    const r = await interrupt([sharded, '-o', out], 'SIGTERM');
    expect(r.sawPartial, r.stderr).toBe(true);
    expect(r.code, r.stderr).toBe(143);
    expect(partials()).toEqual([]);
    expect(existsSync(out)).toBe(false);
  });
});
