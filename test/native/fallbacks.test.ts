/**
 * The addon's fallback paths, reached on any kernel: a child node runs under an LD_PRELOAD shim
 * (test/native/shim/faults.c) that makes the system calls in question fail, and checks the bytes
 * of every tensor it reads against the plaintext.
 */
import { chmodSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sealFile } from '../../src/seal/seal-file.js';
import { FileSource } from '../../src/reader/source.js';
import { readPublicHeader } from '../../src/reader/sealed-file.js';
import { SealedFileReader } from '../../src/reader/sealed-file.js';
import { Suite } from '../../src/format/constants.js';
import { toHex } from '../../src/bytes.js';
import { writeSafetensors, type TensorSpec } from '../helpers/safetensors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { addonPath, repoRoot, which } from './helpers.js';

const dir = tempDir('st-fallback-');
const hasCc = which('cc');
const CS = 4096;

let shimPath: string | undefined;
function shim(): string {
  if (shimPath) return shimPath;
  const out = join(dir, 'faults.so');
  const r = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-o', out, join(repoRoot, 'test/native/shim/faults.c'), '-ldl', '-lpthread'], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`cannot build the test shim: ${r.stderr}`);
  chmodSync(out, 0o755);
  shimPath = out;
  return out;
}

interface Sealed {
  path: string;
  header: string;
  tensors: { name: string; begin: number; end: number; sha256: string }[];
}

/** Seals tensors that mostly start and end off page boundaries, several chunks each. */
async function sealUnaligned(): Promise<Sealed> {
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

// Reads every tensor on its own (what readTensor asks of the addon) and all of them into one buffer
// (what loadAll asks), and prints which came back with the wrong bytes.
const CHILD = `
const { createHash } = require('node:crypto');
const a = JSON.parse(process.env.ST_ARGS);
const sha = (u8) => createHash('sha256').update(u8).digest('hex');
(async () => {
  const key = addon.keyImport(Uint8Array.from(Buffer.from(a.key, 'hex')));
  const { file } = await addon.sealedOpen(a.path, key, Uint8Array.from(Buffer.from(a.header, 'hex')));
  const wrong = [];
  for (const t of a.tensors) {
    const r = await file.run({ ranges: Float64Array.of(t.begin, t.end), destSize: t.end - t.begin,
      destOffsets: Float64Array.of(0), allChunks: false, stopOnFailure: true, threads: a.threads });
    if (r.failedChunks.length || sha(new Uint8Array(r.dest)) !== t.sha256) wrong.push('read ' + t.name);
  }
  const all = await file.run({ ranges: Float64Array.from(a.tensors.flatMap((t) => [t.begin, t.end])),
    destSize: a.tensors.at(-1).end, destOffsets: Float64Array.from(a.tensors, (t) => t.begin),
    allChunks: true, stopOnFailure: true, threads: a.threads });
  const bytes = new Uint8Array(all.dest);
  for (const t of a.tensors) if (sha(bytes.subarray(t.begin, t.end)) !== t.sha256) wrong.push('load ' + t.name);
  console.log(JSON.stringify({ wrong }));
})().catch((e) => { console.log(JSON.stringify({ error: e.code ?? String(e), message: e.message })); process.exitCode = 1; });
`;

function runChild(sealed: Sealed, threads: number, env: Record<string, string>, prefix: string[] = []) {
  const script = `const addon = require(${JSON.stringify(addonPath)});\n${CHILD}`;
  const argv = [...prefix, process.execPath, '-e', script];
  const r = spawnSync(argv[0]!, argv.slice(1), {
    encoding: 'utf8',
    cwd: repoRoot,
    timeout: 60_000,
    env: { ...process.env, ...env, ST_ARGS: JSON.stringify({ ...sealed, key: toHex(TEST_KEY), threads }) },
  });
  let json: unknown;
  try {
    json = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
  } catch {
    json = undefined;
  }
  return { status: r.status, signal: r.signal, json, stderr: r.stderr };
}

describe('without MADV_POPULATE_WRITE (kernels before 5.14, or when that madvise fails)', () => {
  it.skipIf(!hasCc)('every tensor read alone or loaded whole has its exact bytes (needs cc for the LD_PRELOAD shim)', async () => {
    const sealed = await sealUnaligned();
    for (const threads of [1, 3]) {
      const r = runChild(sealed, threads, { LD_PRELOAD: shim(), ST_SHIM_NO_POPULATE: '1' });
      expect(r.stderr).toContain('st-shim: refused MADV_POPULATE_WRITE'); // the fallback ran
      expect(r.json, r.stderr).toEqual({ wrong: [] });
      expect(r.status).toBe(0);
    }
  });
});
