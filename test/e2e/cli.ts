/** The built command line, run as a user runs it: `node bin/sealed-tensors.js ...` in child processes. */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const ROOT = new URL('../../', import.meta.url).pathname;
export const BIN = join(ROOT, 'bin/sealed-tensors.js');
/** The CLI runs from dist/ (npm test builds it first). */
export const hasBuild = existsSync(join(ROOT, 'dist/cli/main.js'));

export interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

export function st(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: opts.cwd ?? ROOT, timeout: opts.timeoutMs ?? 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr + (r.error ? String(r.error) : '') };
}

export interface Served {
  url: string;
  child: ChildProcessWithoutNullStreams;
  out: () => string;
  err: () => string;
  /** SIGTERM, and the exit code. */
  stop: () => Promise<number | null>;
}

/** `broker serve --dir DIR --listen 127.0.0.1:0`; resolves once it printed its one line. */
export async function serve(dir: string): Promise<Served> {
  const child = spawn(process.execPath, [BIN, 'broker', 'serve', '--dir', dir, '--listen', '127.0.0.1:0'], { stdio: 'pipe' });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const url = await new Promise<string>((res, rej) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^listening on (https:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
      if (m) res(m[1]!);
    });
    void exited.then((code) => rej(new Error(`broker serve exited ${code} before listening: ${err}`)));
  });
  return {
    url,
    child,
    out: () => out,
    err: () => err,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}
