import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const addonPath = fileURLToPath(new URL('../../build/Release/sealed_tensors.node', import.meta.url));
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** VmLck from /proc/self/status, in bytes. */
export function vmLckBytes(): number {
  const m = /^VmLck:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no VmLck in /proc/self/status');
  return Number(m[1]) * 1024;
}

export interface Mapping {
  start: bigint;
  end: bigint;
  perms: string;
  sizeKb: number;
  /** Resident, locked, and backed by transparent huge pages (kB). */
  rssKb: number;
  lockedKb: number;
  anonHugeKb: number;
  flags: string[];
}

/** /proc/self/smaps, parsed: what the kernel says about each mapping (VmFlags: lo, dd, wf ...). */
export function smaps(): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | undefined;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) /.exec(line);
    if (head) {
      cur = { start: BigInt('0x' + head[1]), end: BigInt('0x' + head[2]), perms: head[3]!, sizeKb: 0, rssKb: 0, lockedKb: 0, anonHugeKb: 0, flags: [] };
      out.push(cur);
    } else if (cur && line.startsWith('Size:')) {
      cur.sizeKb = Number(/(\d+)/.exec(line)![1]);
    } else if (cur && /^(Rss|Locked|AnonHugePages):/.test(line)) {
      const kb = Number(/(\d+)/.exec(line)![1]);
      if (line.startsWith('Rss:')) cur.rssKb = kb;
      else if (line.startsWith('Locked:')) cur.lockedKb = kb;
      else cur.anonHugeKb = kb;
    } else if (cur && line.startsWith('VmFlags:')) {
      cur.flags = line.slice(8).trim().split(/\s+/);
    }
  }
  return out;
}

/** Runs a CommonJS snippet in a fresh node with the addon as `addon`; returns its parsed JSON stdout. */
export function runChild(
  code: string,
  opts: { prefix?: string[]; nodeArgs?: string[]; env?: Record<string, string> } = {},
): { status: number | null; json: unknown; stderr: string } {
  const script = `const addon = require(${JSON.stringify(addonPath)});\n${code}`;
  const argv = [...(opts.prefix ?? []), process.execPath, ...(opts.nodeArgs ?? []), '-e', script];
  const env = opts.env ? { ...process.env, ...opts.env } : undefined;
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', cwd: repoRoot, timeout: 60_000, env });
  let json: unknown;
  try {
    json = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
  } catch {
    json = undefined;
  }
  return { status: r.status, json, stderr: r.stderr + (r.error ? String(r.error) : '') };
}

export function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export const tmpRoot = join(repoRoot, '.tmp');

/**
 * Whether this process may lock `bytes` more: CAP_IPC_LOCK, or RLIMIT_MEMLOCK above what is
 * locked already. Tests that lock more than a typical 8 MiB default skip (and say so) without it.
 */
export function canLock(bytes: number): boolean {
  const status = readFileSync('/proc/self/status', 'utf8');
  const cap = BigInt('0x' + (/^CapEff:\s+(\w+)/m.exec(status)?.[1] ?? '0'));
  if (cap & (1n << 14n)) return true;
  const m = /^Max locked memory\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  if (!m || m[1] === 'unlimited') return true;
  return Number(m[1]) - vmLckBytes() >= bytes;
}
