#!/usr/bin/env node
// `npm run bench`: decryption at the speed of the hardware? Measures, in one run and on the same
// sealed models (1 GiB by default; --sizes 1,4 adds 4 GiB), in the page cache: the hardware limits,
// what users do today, and the library's paths. Prints one table and writes it as JSON to
// benchmarks/results/, with the thread-scaling plot as PNG beside it.
//
// Options: --sizes 1 (GiB, comma-separated; fractions allowed)  --repeat 3  --dir PATH (keep and
//          reuse the models)  --only seal (native verify and the seal section only)  --only scaling
//          (the scaling section only)  --tmpfs PATH (default /dev/shm)  --threads-max N (default:
//          every core; higher shows where a host with more cores would stop gaining)
// Scaling: native verify, load (loadAll into secure memory) and seal from 1 thread to --threads-max,
// against the combined AES-256-GCM + SHA-256 limit per core (openssl speed, same run) times cores;
// peak RSS of each in a fresh process per size; cold-cache figures where the page cache can be
// dropped (root with a writable /proc/sys/vm; skipped, saying so, otherwise).
// Sealing: the native and TypeScript sealers to tmpfs and to disk (with their fsync), against
// `dd conv=fsync` of the same bytes (the disk's limit) and `age -e`, interleaved in one run.
// Figures, not tests: they swing +-30% run to run on shared machines; ratios are taken within a run.
import { execFileSync, spawnSync } from 'node:child_process';
import { unlinkSync } from 'node:fs';
import { createDecipheriv, createHash, hkdfSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeModel } from './fixture.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const GiB = 1 << 30;
const sizes = opt('sizes', '1').split(',').map((s) => Math.round(Number(s) * GiB));
const repeat = Number(opt('repeat', '3'));
const keepDir = opt('dir', undefined);
const cores = availableParallelism();
const only = opt('only', 'all');
const tmpfsDir = opt('tmpfs', '/dev/shm');
const threadsMax = Number(opt('threads-max', String(cores)));
if (!Number.isInteger(threadsMax) || threadsMax < 1 || threadsMax > 1024) {
  console.error(`--threads-max must be an integer in [1, 1024], got ${opt('threads-max')}`);
  process.exit(2);
}
const mainSection = only !== 'scaling';

if (!existsSync(join(root, 'dist', 'reader', 'native-file.js'))) {
  console.error('benchmarks need the built library: run `npm run build` (and `npm run build:native`) first');
  process.exit(2);
}
const { NativeSealedFileReader } = await import('../dist/reader/native-file.js');
const { SealedFileReader, readPublicHeader } = await import('../dist/reader/sealed-file.js');
const { FileSource } = await import('../dist/reader/source.js');
const { importKey } = await import('../dist/native/key.js');
const { SecureBuffer } = await import('../dist/native/secure-buffer.js');
const { loadAddon, nativeStatus } = await import('../dist/native/addon.js');
const { hkdfInfo } = await import('../dist/format/constants.js');
const { resolveSealOptions, sealFileResolved } = await import('../dist/seal/seal-file.js');
const addon = loadAddon();
const scaling = await import('./lib/scaling.js');
const scalingLib = { NativeSealedFileReader, importKey, resolveSealOptions, sealFileResolved };

const dir = keepDir ?? join(tmpdir(), `sealed-tensors-bench-${process.pid}`);
mkdirSync(dir, { recursive: true });
const dataKey = new Uint8Array(32).map((_, i) => (i * 29 + 7) & 0xff);

/**
 * Best throughput of `repeat` runs, in GB/s (1e9 bytes), after one warm-up that also fills the page
 * cache. `after` (untimed) disposes of what a run produced, e.g. releases a loaded model.
 * Also records this process's CPU time for the best run: GB per CPU-second does not depend on
 * what else the machine runs, so it tells a busy machine from a slow path.
 */
const cpuPerRun = new Map();
async function measure(bytes, fn, after = () => {}, label = '') {
  await after(await fn());
  let best = Infinity;
  let bestCpu = NaN;
  for (let i = 0; i < repeat; i++) {
    const c = process.cpuUsage();
    const t = performance.now();
    const out = await fn();
    const wall = performance.now() - t;
    const cpu = process.cpuUsage(c);
    if (wall < best) {
      best = wall;
      bestCpu = (cpu.user + cpu.system) / 1000;
    }
    await after(out);
  }
  if (label) cpuPerRun.set(label, bytes / 1e6 / bestCpu);
  return bytes / 1e6 / best;
}

/**
 * Seal-to-target figures, interleaved: each round runs every contender once in turn (outputs
 * removed untimed between runs), so load on a shared machine hits them alike. Best of `repeat`
 * rounds after one warm-up round. Every contender ends with its data on stable storage where the
 * target has any: the sealers fsync, dd runs with conv=fsync; age does not sync (noted).
 */
async function sealRound(m, targets) {
  const contenders = [];
  for (const [where, folder] of targets) {
    const out = join(folder, `bench-seal-${process.pid}`);
    const clean = () => {
      try {
        unlinkSync(out);
      } catch {}
    };
    const seal = (engine, tensorSha256 = false) => async () => {
      const o = resolveSealOptions({ dataKey: new Uint8Array(dataKey), keyId: 'bench', overwrite: true, tensorSha256 }, undefined, engine);
      await sealFileResolved(m.plain, out, o);
    };
    contenders.push([`nativeSeal.${where}`, seal('native'), clean]);
    // With each tensor's plain SHA-256 too (seal --json): two SHA-256 passes per byte, as verify --json.
    contenders.push([`nativeSealPlainSha.${where}`, seal('native', true), clean]);
    contenders.push([`typescriptSeal.${where}`, seal('typescript'), clean]);
    contenders.push([`ddFsync.${where}`, () => void execFileSync('dd', [`if=${m.plain}`, `of=${out}`, 'bs=4M', 'conv=fsync'], { stdio: 'ignore' }), clean]);
    if (which('age')) {
      const a = ageFiles(m.plain);
      contenders.push([`ageEncrypt.${where}`, () => void execFileSync('age', ['-r', a.recipient, '-o', out, m.plain]), clean]);
    }
  }
  const best = new Map();
  for (let round = 0; round <= repeat; round++) {
    for (const [name, fn, clean] of contenders) {
      clean();
      const c = process.cpuUsage();
      const t = performance.now();
      await fn();
      const wall = performance.now() - t;
      const cpu = process.cpuUsage(c);
      clean();
      if (round === 0) continue; // warm-up
      const prev = best.get(name);
      if (!prev || wall < prev.wall) best.set(name, { wall, cpu: (cpu.user + cpu.system) / 1000 });
    }
  }
  return best;
}

function opensslSpeed(argv) {
  const r = spawnSync('openssl', ['speed', '-seconds', '3', '-bytes', '16384', ...argv], { encoding: 'utf8' });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  const m = /([\d.]+)k\s*$/.exec(last);
  return m ? (Number(m[1]) * 1000) / 1e9 : NaN;
}

function which(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

// ---- baselines -----------------------------------------------------------------------------

/** Plain pread of the sealed file into one page-aligned, pre-touched 4 MiB buffer (reused). */
function preadAligned(path) {
  const buf = addon.secureAlloc(4 << 20); // page-aligned and populated (locked)
  const view = new Uint8Array(buf);
  const fd = openSync(path, 'r');
  try {
    let pos = 0;
    for (;;) {
      const n = readSync(fd, view, 0, view.length, pos);
      if (n === 0) break;
      pos += n;
    }
  } finally {
    closeSync(fd);
    addon.secureRelease(buf);
  }
}

/** What a careful user would write with node:crypto: read, decipher each chunk, hash. */
async function nodeCryptoPipeline(path) {
  const src = await FileSource.open(path);
  const { header, headerBytes, layout } = await readPublicHeader(src);
  await src.close();
  const payloadKey = Buffer.from(hkdfSync('sha256', dataKey, header.salt, hkdfInfo('payload key', header), 32));
  const aad = createHash('sha256').update(headerBytes).digest();
  const fd = openSync(path, 'r');
  const cs = layout.chunkSize;
  const buf = Buffer.allocUnsafe(cs + 16);
  const count = Math.max(1, Math.ceil(layout.payloadLength / cs));
  const hash = createHash('sha256');
  let pos = layout.headerLength + layout.tableLength;
  try {
    for (let i = 0; i < count; i++) {
      const len = Math.min(cs, layout.payloadLength - i * cs);
      let got = 0;
      while (got < len + 16) got += readSync(fd, buf, got, len + 16 - got, pos + got);
      pos += len + 16;
      const nonce = Buffer.alloc(12);
      nonce.writeBigUInt64BE(BigInt(i), 3);
      nonce[11] = i === count - 1 ? 1 : 0;
      const d = createDecipheriv('aes-256-gcm', payloadKey, nonce);
      d.setAAD(aad);
      d.setAuthTag(buf.subarray(len, len + 16));
      hash.update(d.update(buf.subarray(0, len)));
      d.final();
    }
  } finally {
    closeSync(fd);
  }
  hash.digest();
}

function ageFiles(plain) {
  const identity = join(dir, 'age.key');
  if (!existsSync(identity)) execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' });
  const recipient = /public key: (\S+)/.exec(readFileSync(identity, 'utf8'))[1];
  const out = `${plain}.age`;
  if (!existsSync(out) && only !== 'seal') execFileSync('age', ['-r', recipient, '-o', out, plain]);
  return { identity, out, recipient };
}

/** Peak RSS (VmHWM) of a fresh process that streams `verify` over the file natively. */
function peakRssOfVerify(path, threads) {
  const script = `
    const { NativeSealedFileReader } = await import(${JSON.stringify(join(root, 'dist/reader/native-file.js'))});
    const { importKey } = await import(${JSON.stringify(join(root, 'dist/native/key.js'))});
    const key = importKey(new Uint8Array(${JSON.stringify([...dataKey])}));
    const r = await NativeSealedFileReader.open(${JSON.stringify(path)}, key, { threads: ${threads} });
    const checks = await r.verify();
    if (!checks.every((c) => c.ok)) throw new Error('verify failed');
    r.close();
    const s = require('fs').readFileSync('/proc/self/status', 'utf8');
    console.log(/VmHWM:\\s+(\\d+)/.exec(s)[1]);`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', `import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);${script}`], { encoding: 'utf8' });
  return Number(out.trim()) * 1024;
}

// ---- scaling ------------------------------------------------------------------------------

/** Warm GB/s per thread count, peak RSS per operation (fresh process each), cold-cache GB/s. */
async function scalingFor(m) {
  const threads = scaling.threadCounts(threadsMax);
  console.error(`  scaling of native verify, load (loadAll into secure memory) and seal (to ${tmpfsDir}) over threads ${threads.join(', ')}, interleaved ...`);
  const best = await scaling.measureScaling({ lib: scalingLib, m, dataKey, threads, repeat, tmpfsDir });
  const rows = threads.map((t) => ({
    threads: t,
    verify: best.verify[t],
    load: best.load[t],
    seal: best.seal[t],
    cryptoLimit: results.limits.combinedPerCoreGBs * Math.min(t, cores),
  }));
  for (const line of scaling.scalingTable(rows, results.limits.combinedPerCoreGBs, cores)) console.error(`    ${line}`);
  const peakRssBytes = {};
  for (const op of ['verify', 'load', 'seal']) {
    peakRssBytes[op] = scaling.peakRss({ root, m, dataKey, op, threads: cores, tmpfsDir });
    console.error(`  peak RSS of native ${op} (fresh process, ${cores} threads): ${(peakRssBytes[op] / 2 ** 20).toFixed(1)} MiB`);
  }
  let cold;
  const drop = scaling.canDropCaches();
  if (drop.ok) {
    console.error(`  cold cache (page cache dropped before each run, ${cores} threads) ...`);
    cold = { threads: cores, gbs: await scaling.measureCold({ lib: scalingLib, m, dataKey, threads: cores, repeat, tmpfsDir }) };
  } else {
    cold = { skipped: drop.why };
    console.error(`  cold cache: skipped, ${drop.why}`);
  }
  return { rows, peakRssBytes, cold };
}

// ---- run -----------------------------------------------------------------------------------

const results = {
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores, node: process.version, openssl: process.versions.openssl },
  hardened: nativeStatus().hardened,
  loadAverage: { start: loadavg().map((x) => x.toFixed(2)) },
  limits: {},
  models: [],
};

console.error(`openssl speed -evp (3 s each) ...`);
const aesDecrypt = opensslSpeed(['-decrypt', '-evp', 'aes-256-gcm']);
const sha256 = opensslSpeed(['-evp', 'sha256']);
results.limits = {
  aes256gcmDecryptGBs: aesDecrypt,
  sha256GBs: sha256,
  combinedPerCoreGBs: 1 / (1 / aesDecrypt + 1 / sha256),
};

for (const size of sizes) {
  console.error(`model of ${(size / GiB).toFixed(2)} GiB: generating/sealing in ${dir} ...`);
  const m = await makeModel(dir, size, dataKey);
  const payload = size;
  const row = { sizeBytes: size, sealedBytes: m.sealedSize, gbs: {}, gbPerCpuSecond: {}, peakRssBytes: {} };
  cpuPerRun.clear();
  const note = (k, v) => {
    row.gbs[k] = v;
    console.error(`  ${k}: ${Number.isFinite(v) ? v.toFixed(2) + ' GB/s' : v}`);
  };

  if (mainSection) {
  if (only !== 'seal') {
  note('preadAligned', await measure(m.sealedSize, () => preadAligned(m.sealed), undefined, 'preadAligned'));
  if (m.plainSize < 2 * GiB - 1) note('readFileSync', await measure(m.plainSize, () => void readFileSync(m.plain), undefined, 'readFileSync'));
  else note('readFileSync', 'n/a (readFileSync stops at 2 GiB)');
  note('nodeCryptoPipeline', await measure(payload, () => nodeCryptoPipeline(m.sealed), undefined, 'nodeCryptoPipeline'));
  if (which('age')) {
    const a = ageFiles(m.plain);
    note('ageDecrypt', await measure(m.plainSize, () => void execFileSync('age', ['-d', '-i', a.identity, '-o', '/dev/null', a.out])));
  } else {
    note('ageDecrypt', 'n/a (install age)');
  }
  note('referenceVerify', await measure(payload, async () => {
    const r = await SealedFileReader.open(m.sealed, new Uint8Array(dataKey));
    await r.verify();
    await r.close();
  }, undefined, 'referenceVerify'));
  }
  for (const threads of only === 'seal' ? [cores] : [...new Set([1, cores])]) {
    const key = importKey(new Uint8Array(dataKey));
    const r = await NativeSealedFileReader.open(m.sealed, key, { threads });
    key.release();
    note(`nativeVerify.t${threads}`, await measure(payload, async () => {
      const checks = await r.verify();
      if (!checks.every((c) => c.ok)) throw new Error('verify failed');
    }, undefined, `nativeVerify.t${threads}`));
    if (threads === cores) {
      // verify --json: plain SHA-256 too, as the sealer computes it.
      note(`nativeVerifyPlainSha.t${threads}`, await measure(payload, async () => {
        const checks = await r.verify({ plainSha256: true });
        if (!checks.every((c) => c.ok)) throw new Error('verify failed');
      }, undefined, `nativeVerifyPlainSha.t${threads}`));
    }
    // Timed until every tensor is in secure memory and checked; the release (a wipe) is not timed,
    // as freeing readFileSync's buffer is not.
    if (only !== 'seal') {
    note(`nativeLoadAll.t${threads}`, await measure(payload, () => r.loadAll(), (loaded) => loaded.release(), `nativeLoadAll.t${threads}`));
    // The same into one reused secure buffer: no fresh pages for the kernel to zero.
    const into = await SecureBuffer.allocateAsync(payload);
    note(`nativeLoadAllReuse.t${threads}`, await measure(payload, () => r.loadAll({ into }), undefined, `nativeLoadAllReuse.t${threads}`));
    into.release();
    }
    r.close();
  }
  // Sealing, to tmpfs (memory: the sealer's own speed) and to disk (where the disk is the limit).
  const targets = [];
  if (existsSync(tmpfsDir)) targets.push(['tmpfs', tmpfsDir]);
  targets.push(['disk', dir]);
  console.error(`  sealing to ${targets.map(([w, d]) => `${w} (${d})`).join(' and ')}, interleaved ...`);
  for (const [name, { wall, cpu }] of await sealRound(m, targets)) {
    note(name, m.plainSize / 1e6 / wall);
    // dd and age run as child processes, whose CPU time process.cpuUsage() does not see.
    if (!/^(ddFsync|ageEncrypt)\./.test(name)) cpuPerRun.set(name, m.plainSize / 1e6 / cpu);
  }
  row.gbPerCpuSecond = Object.fromEntries(cpuPerRun);
  row.peakRssBytes.nativeVerify = peakRssOfVerify(m.sealed, cores);
  console.error(`  peak RSS of native verify: ${(row.peakRssBytes.nativeVerify / 2 ** 20).toFixed(1)} MiB`);
  }
  if (only === 'all' || only === 'scaling') row.scaling = await scalingFor({ ...m, payload });
  results.models.push(row);
}

// ---- ratios against the issue's targets ----------------------------------------------------

const byName = (row, k) => (typeof row.gbs[k] === 'number' ? row.gbs[k] : NaN);
results.ratios = results.models.map((row) => {
  const single = byName(row, 'nativeVerify.t1');
  const all = byName(row, `nativeVerify.t${cores}`);
  const loadAll = byName(row, `nativeLoadAll.t${cores}`);
  const loadAllReuse = byName(row, `nativeLoadAllReuse.t${cores}`);
  return {
    sizeBytes: row.sizeBytes,
    singleVsCombinedLimit: { value: single / results.limits.combinedPerCoreGBs, target: 0.9 },
    allCoresVsSingle: { value: all / single, target: 1.8 },
    verifyVsNodeCrypto: { value: all / byName(row, 'nodeCryptoPipeline'), target: 2.2 },
    verifyVsAge: { value: all / byName(row, 'ageDecrypt'), target: 2.2 },
    loadAllVsReadFileSync: { value: loadAll / byName(row, 'readFileSync'), target: 1.2 },
    loadAllReuseVsReadFileSync: { value: loadAllReuse / byName(row, 'readFileSync'), target: 1.2 },
    nativeSealTmpfsVsNativeVerify: { value: byName(row, 'nativeSeal.tmpfs') / all, target: 0.8 },
    nativeSealPlainShaTmpfsVsNativeVerifyPlainSha: { value: byName(row, 'nativeSealPlainSha.tmpfs') / byName(row, `nativeVerifyPlainSha.t${cores}`), target: 0.8 },
    nativeSealDiskVsDdFsync: { value: byName(row, 'nativeSeal.disk') / byName(row, 'ddFsync.disk'), target: 0.9 },
  };
});
if (mainSection && results.models.length >= 2) {
  const small = results.models[0].peakRssBytes.nativeVerify;
  const big = results.models.at(-1).peakRssBytes.nativeVerify;
  results.rssGrowth = { bytes: big - small, targetBytes: 64 * 2 ** 20 };
}

// ---- table ---------------------------------------------------------------------------------

const fmt = (v) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(2) : String(v ?? '-'));
const lines = [];
lines.push(`sealed-tensors benchmark ${results.date} - ${results.machine.cpu}, ${cores} cores, node ${process.version}, hardened: ${results.hardened}`);
lines.push(`load average at start ${results.loadAverage.start.join(' ')}, at end ${loadavg().map((x) => x.toFixed(2)).join(' ')} (other work on the machine skews wall-clock figures)`);
lines.push(`limits per core: AES-256-GCM decrypt ${fmt(aesDecrypt)} GB/s, SHA-256 ${fmt(sha256)} GB/s, combined ${fmt(results.limits.combinedPerCoreGBs)} GB/s`);
const keys = [...new Set(results.models.flatMap((r) => Object.keys(r.gbs)))];
if (mainSection) {
const head = ['GB/s (wall) | GB per CPU-s', ...results.models.flatMap((r) => [`${(r.sizeBytes / GiB).toFixed(2)} GiB`, 'per CPU-s'])];
const rows = [head, ...keys.map((k) => [k, ...results.models.flatMap((r) => [fmt(r.gbs[k]), fmt(r.gbPerCpuSecond[k])])])];
rows.push(['peak RSS, native verify (MiB)', ...results.models.flatMap((r) => [fmt(r.peakRssBytes.nativeVerify / 2 ** 20), ''])]);
const width = head.map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
for (const r of rows) lines.push(r.map((cell, c) => (c === 0 ? String(cell).padEnd(width[c]) : String(cell).padStart(width[c]))).join('  '));
lines.push('ratios (target):');
for (const r of results.ratios) {
  const parts = Object.entries(r)
    .filter(([k]) => k !== 'sizeBytes')
    .map(([k, v]) => `${k} ${fmt(v.value)} (>= ${v.target}${Number.isNaN(v.value) ? ', n/a' : v.value >= v.target ? ', met' : ', MISSED'})`);
  lines.push(`  ${(r.sizeBytes / GiB).toFixed(2)} GiB: ${parts.join('; ')}`);
}
if (results.rssGrowth) {
  const g = results.rssGrowth;
  lines.push(`  peak RSS growth ${fmt(results.models[0].sizeBytes / GiB)} -> ${fmt(results.models.at(-1).sizeBytes / GiB)} GiB: ${fmt(g.bytes / 2 ** 20)} MiB (<= 64 MiB${g.bytes <= g.targetBytes ? ', met' : ', MISSED'})`);
}
}
const scaled = results.models.filter((r) => r.scaling);
for (const r of scaled) {
  lines.push(`thread scaling, ${fmt(r.sizeBytes / GiB)} GiB model, warm page cache (load = NativeSealedFileReader.loadAll into secure memory; seal = native, to ${tmpfsDir}):`);
  for (const l of scaling.scalingTable(r.scaling.rows, results.limits.combinedPerCoreGBs, cores)) lines.push(`  ${l}`);
}
if (scaled.length) {
  lines.push(`  crypto limit = ${fmt(results.limits.combinedPerCoreGBs)} GB/s per core (AES-256-GCM decrypt + SHA-256, openssl speed, this run) x min(threads, ${cores} cores)`);
  const rss = (r, op) => fmt(r.scaling.peakRssBytes[op] / 2 ** 20);
  lines.push(`peak RSS, MiB (fresh process, ${cores} threads; load includes the loaded model in secure memory):`);
  for (const op of ['verify', 'load', 'seal']) lines.push(`  ${op.padEnd(6)} ${scaled.map((r) => `${fmt(r.sizeBytes / GiB)} GiB: ${rss(r, op)}`).join('  ')}`);
  if (scaled.length >= 2) {
    const [a, b] = [scaled[0], scaled.at(-1)];
    results.rssGrowthByOp = Object.fromEntries(['verify', 'load', 'seal'].map((op) => [op, b.scaling.peakRssBytes[op] - a.scaling.peakRssBytes[op]]));
    const model = b.sizeBytes - a.sizeBytes;
    lines.push(`  growth ${fmt(a.sizeBytes / GiB)} -> ${fmt(b.sizeBytes / GiB)} GiB: ${['verify', 'load', 'seal'].map((op) => `${op} ${fmt(results.rssGrowthByOp[op] / 2 ** 20)}${op === 'load' ? ` (${fmt((results.rssGrowthByOp.load - model) / 2 ** 20)} beyond the model's own growth)` : ''}`).join(', ')} MiB`);
  }
  for (const r of scaled) {
    const c = r.scaling.cold;
    lines.push(c.skipped ? `cold cache, ${fmt(r.sizeBytes / GiB)} GiB: skipped, ${c.skipped}` : `cold cache, ${fmt(r.sizeBytes / GiB)} GiB, ${c.threads} threads, page cache dropped before each run: verify ${fmt(c.gbs.verify)}, load ${fmt(c.gbs.load)}, seal ${fmt(c.gbs.seal)} GB/s`);
  }
}
console.log(lines.join('\n'));

const outDir = join(root, 'benchmarks', 'results');
mkdirSync(outDir, { recursive: true });
const outFile = join(outDir, `bench-${results.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(outFile, JSON.stringify({ ...results, table: lines }, null, 2));
console.error(`wrote ${outFile}`);
for (const r of scaled) {
  const title = `sealed-tensors thread scaling, ${fmt(r.sizeBytes / GiB)} GiB, ${results.machine.cpu ?? 'unknown CPU'} (${cores} cores)`;
  const png = outFile.replace(/\.json$/, `-scaling-${fmt(r.sizeBytes / GiB)}GiB.png`);
  writeFileSync(png, await scaling.scalingPlot(r.scaling.rows, results.limits.combinedPerCoreGBs, cores, title));
  console.error(`wrote ${png}`);
}
if (!keepDir) rmSync(dir, { recursive: true, force: true });
