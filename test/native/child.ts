/** Child node processes for native tests whose failure mode is a crash or a hang. */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { sealFile } from '../../src/seal/seal-file.js';
import { FileSource } from '../../src/reader/source.js';
import { readPublicHeader, SealedFileReader } from '../../src/reader/sealed-file.js';
import { Suite } from '../../src/format/constants.js';
import { toHex } from '../../src/bytes.js';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { TEST_KEY } from '../helpers/tmp.js';
import { addonPath, repoRoot } from './helpers.js';

/** What a child needs to open a sealed file with the raw addon and check each tensor's bytes. */
export interface SealedForChild {
  path: string;
  /** The public header bytes (hex), as sealedOpen takes them. */
  header: string;
  tensors: { name: string; begin: number; end: number; sha256: string }[];
}

export const CS = 4096;

/** Seals (into `dir`) tensors that mostly start and end off page boundaries, several chunks each. */
export async function sealUnaligned(dir: string): Promise<SealedForChild> {
  const specs: TensorSpec[] = [
    { name: 'a', dtype: 'U8', shape: [100] },
    { name: 'b', dtype: 'U8', shape: [3 * CS + 17] },
    { name: 'c', dtype: 'F32', shape: [2 * 1024 + 3] },
    { name: 'd', dtype: 'U8', shape: [CS - 1] },
    { name: 'e', dtype: 'U8', shape: [5 * CS + 2049] },
  ];
  const id = Math.random().toString(36).slice(2);
  const input = join(dir, `${id}.safetensors`);
  const path = join(dir, `${id}.sealed`);
  const data = writeSafetensors(input, specs);
  await sealFile(input, path, { dataKey: TEST_KEY, keyId: 'test-key', suite: Suite.AES_256_GCM, chunkSize: CS });
  const source = await FileSource.open(path);
  const { headerBytes } = await readPublicHeader(source).finally(() => source.close());
  const ref = await SealedFileReader.open(path, TEST_KEY);
  const tensors = ref.tensors().map((t) => ({
    name: t.name,
    begin: t.begin,
    end: t.end,
    sha256: createHash('sha256').update(data.get(t.name)!).digest('hex'),
  }));
  await ref.close();
  return { path, header: toHex(headerBytes), tensors };
}

/**
 * Runs a CommonJS snippet in a fresh node with the addon as `addon` (and its path as `addonPath`);
 * `json` is its last stdout line, parsed. A crash shows as a signal instead of killing the test runner.
 */
export function spawnNode(
  code: string,
  env: Record<string, string> = {},
  prefix: string[] = [],
  timeoutMs = 60_000,
  // A child run as another user may not reach the checkout (a clone in a 0700 folder): it gets a
  // copy of the addon and a working folder it can enter.
  at: { addon?: string; cwd?: string } = {},
) {
  const script = `const addonPath = ${JSON.stringify(at.addon ?? addonPath)};\nconst addon = require(addonPath);\n${code}`;
  const argv = [...prefix, process.execPath, '-e', script];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', cwd: at.cwd ?? repoRoot, timeout: timeoutMs, env: { ...process.env, ...env } });
  let json: unknown;
  try {
    json = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
  } catch {
    json = undefined;
  }
  return { status: r.status, signal: r.signal, json, stdout: r.stdout, stderr: r.stderr + (r.error ? String(r.error) : '') };
}
