// ThreadSanitizer check of the addon (not part of `npm test`: it needs libtsan and a minute).
//   node test/native/tsan.mjs
// Builds native/*.cc with -fsanitize=thread into .tmp/tsan/, then runs a parallel workload (the
// native sealer on 4 threads, jobs on one file at once, close and key release during a job, two worker_threads environments) in a node
// with libtsan preloaded, through the built dist/. Node and V8 are not instrumented, so reports whose
// accesses are all inside them (their atomics are invisible to TSan) are listed but do not fail;
// a report with an access in the addon does. Exit 0: no race in the addon.
// ST_TSAN_NO_BUILD=1 reruns the workload with the addon already in .tmp/tsan/.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const out = join(root, '.tmp', 'tsan');
const addon = join(out, 'sealed_tensors.node');

if (process.env.ST_TSAN_WORKLOAD) {
  await workload();
} else {
  if (!process.env.ST_TSAN_NO_BUILD) build();
  const lib = spawnSync('g++', ['-print-file-name=libtsan.so'], { encoding: 'utf8' }).stdout.trim();
  for (const f of readdirSync(out)) if (f.startsWith('report.')) rmSync(join(out, f));
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
    stdio: 'inherit',
    env: {
      ...process.env,
      ST_TSAN_WORKLOAD: '1',
      SEALED_TENSORS_ADDON: addon,
      LD_PRELOAD: lib,
      TSAN_OPTIONS: `exitcode=0 halt_on_error=0 report_signal_unsafe=0 log_path=${join(out, 'report')}`,
    },
  });
  if (r.status !== 0) {
    console.error(`workload failed (status ${r.status}, signal ${r.signal})`);
    process.exit(1);
  }
  process.exit(summarize());
}

function build() {
  mkdirSync(out, { recursive: true });
  const inc = createRequire(import.meta.url)('node-addon-api').include_dir.replace(/"/g, '');
  const nodeInc = join(process.execPath, '..', '..', 'include', 'node');
  const objs = [];
  for (const f of readdirSync(join(root, 'native')).filter((f) => f.endsWith('.cc'))) {
    const obj = join(out, f.replace(/\.cc$/, '.o'));
    const args = ['-c', '-std=c++20', '-fsanitize=thread', '-fPIC', '-O1', '-g', '-fexceptions', '-DNAPI_VERSION=8',
      '-DNAPI_CPP_EXCEPTIONS', '-DNODE_ADDON_API_DISABLE_DEPRECATED', `-I${nodeInc}`, `-I${join(root, inc)}`, join(root, 'native', f), '-o', obj];
    const r = spawnSync('g++', args, { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`g++ failed on ${f}`);
    objs.push(obj);
  }
  const r = spawnSync('g++', ['-shared', '-fsanitize=thread', '-o', addon, ...objs], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('link failed');
}

// Each report: the two accesses' stacks. In the addon when a frame before the first Node/V8 frame is ours.
function summarize() {
  let ours = 0;
  let theirs = 0;
  for (const f of readdirSync(out).filter((f) => f.startsWith('report.'))) {
    for (const report of readFileSync(join(out, f), 'utf8').split(/^={18}$/m).filter((r) => r.includes('WARNING: ThreadSanitizer'))) {
      const accesses = report.split(/^ {2}(?=Write|Read|Previous|Atomic)/m).slice(1);
      const inAddon = accesses.some((a) => {
        const frames = a.split('\n').filter((l) => /^\s+#\d+ /.test(l) && !l.includes('libtsan'));
        return frames.length > 0 && /sealed_tensors\.node|\/native\//.test(frames[0]);
      });
      if (inAddon) {
        ours++;
        console.error(report);
      } else {
        theirs++;
        console.log('in Node/V8, not the addon:', /SUMMARY: (.*)/.exec(report)?.[1] ?? '?');
      }
    }
  }
  console.log(`ThreadSanitizer: ${ours} report(s) in the addon, ${theirs} inside Node/V8 only`);
  return ours === 0 ? 0 : 1;
}

async function workload() {
  const { sealFile } = await import('../../dist/seal/seal-file.js');
  const { NativeSealedFileReader } = await import('../../dist/reader/native-file.js');
  const { importKey } = await import('../../dist/native/key.js');
  const dir = join(out, 'data');
  mkdirSync(dir, { recursive: true });
  const sizes = [100, 3 * 65536 + 17, 1 << 20, 5 * 65536 + 2049, 4 << 20, 12345];
  const header = {};
  let off = 0;
  sizes.forEach((n, i) => {
    header[`t${i}`] = { dtype: 'U8', shape: [n], data_offsets: [off, off + n] };
    off += n;
  });
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const bytes = Buffer.alloc(8 + json.length + off);
  bytes.writeBigUInt64LE(BigInt(json.length), 0);
  bytes.write(json, 8);
  for (let i = 8 + json.length; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  const input = join(dir, 'm.safetensors');
  const file = join(dir, 'm.sealed');
  writeFileSync(input, bytes);
  const KEY = () => new Uint8Array(32).fill(7);
  // The native sealer on 4 threads, with the ordered plain hashes and without (the file read below is the second).
  await sealFile(input, file, { dataKey: KEY(), keyId: 'k', chunkSize: 65536, overwrite: true, threads: 4, tensorSha256: true });
  await sealFile(input, file, { dataKey: KEY(), keyId: 'k', chunkSize: 65536, overwrite: true, threads: 4 });
  rmSync(input);
  const k = importKey(KEY());
  const r = await NativeSealedFileReader.open(file, k, { threads: 4, subBlock: 16384 });
  for (let round = 0; round < 3; round++) {
    const jobs = [r.loadAll().then((a) => a.release()), r.verify({ plainSha256: true }), r.verifyOrThrow({ plainSha256: true })];
    for (const t of r.tensors()) jobs.push(r.readTensor(t.name).then((s) => s.release()));
    await Promise.all(jobs);
  }
  // Fed runs (the path of non-file sources): parallel runs on one file, a run aborted while its window is decrypted.
  const { FileSealedSource } = await import('../../dist/sources/file.js');
  const fedSource = { description: file, name: 'm.sealed', open: () => new FileSealedSource(file).open(), sibling: () => { throw new Error('none'); } };
  const f = await NativeSealedFileReader.open(fedSource, k, { threads: 4, subBlock: 16384, windowBytes: 3 * 65536 });
  for (let round = 0; round < 2; round++) {
    const jobs = [f.loadAll().then((a) => a.release()), f.verify({ plainSha256: true }), f.verifyOrThrow({ plainSha256: true })];
    for (const t of f.tensors()) jobs.push(f.readTensor(t.name).then((s) => s.release()));
    await Promise.all(jobs);
  }
  const { loadAddon } = await import('../../dist/native/addon.js');
  const raw = readFileSync(file);
  const hl = 120 + raw[13];
  const tl = raw.readUInt32LE(28);
  const opened = await loadAddon().sealedOpenFed('tsan', k, raw.subarray(0, hl), raw.subarray(0, hl + tl), raw.length);
  const run = opened.file.begin({ ranges: Float64Array.of(0, 4 << 20), destSize: 4 << 20, destOffsets: Float64Array.of(0), allChunks: false, stopOnFailure: true, threads: 4 });
  const busy = run.feed(hl + tl, [raw.subarray(hl + tl, hl + tl + 40 * (65536 + 16))]);
  run.abort();
  await busy;
  opened.file.close();
  f.close();
  const k2 = importKey(KEY());
  const r2 = await NativeSealedFileReader.open(file, k2, { threads: 3 });
  const pending = r2.loadAll();
  r2.close();
  k2.release();
  (await pending).release();
  r.close();
  k.release();
  const { Worker } = await import('node:worker_threads');
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    (async () => {
      const { NativeSealedFileReader } = await import(workerData.root + 'dist/reader/native-file.js');
      const { importKey } = await import(workerData.root + 'dist/native/key.js');
      const k = importKey(new Uint8Array(32).fill(7));
      const r = await NativeSealedFileReader.open(workerData.file, k, { threads: 2, subBlock: 16384 });
      (await r.loadAll()).release();
      await r.verify({ plainSha256: true });
      r.close();
      k.release();
      parentPort.postMessage('ok');
    })();`;
  const workers = [0, 1].map(() => new Worker(code, { eval: true, workerData: { root, file } }));
  await Promise.all(workers.map((w) => new Promise((res, rej) => w.once('message', res).once('error', rej))));
  rmSync(dir, { recursive: true, force: true });
}
