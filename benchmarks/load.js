#!/usr/bin/env node
// `npm run bench:load`: what `sealed-tensors load` costs against `verify` of the same sealed model,
// in one process, runs interleaved (verify, load from the file, load over HTTP; repeated), medians.
//   verify      NativeSealedModelReader.open(path) + verify(): every chunk authenticated, every
//               digest checked, streamed through small reused secure buffers (nothing kept).
//   load file   EnclaveSession.establish against a real broker (startBroker, in-memory stores,
//               loopback HTTP) with a SimulatedTee, then session.open(path) and model.loadAll()
//               (every tensor into fresh secure memory, one native job per file), then released.
//   load http   the same, session.open(URL) from a web server on loopback: nginx when installed
//               (`nginx` on PATH or /usr/sbin/nginx), else a small node:http range server (said so).
//   load file, reused buffer   the same into one secure buffer allocated and touched before the runs
//               (loadAll({ into }): a reload, without the first touch of fresh locked memory).
//   load file, same session   one session for every run (established before them): each run opens
//               the model, loadAll() and releases it, so from the second load on the session's
//               arena hands out the memory the previous load gave back (wiped), already populated.
// Establishment (attest + key release) is timed apart from open + load; the ratio is
// (open + load) / verify, target <= 1.10 for the file. Figures, not tests: shared machines swing
// them, so the load average is printed with them.
// Options: --size 1 (GiB; fractions allowed)  --runs 3  --threads N (default: every core)
//   --dir PATH (keep and reuse the model there)  --per-tensor (time model.tensors() too, the
//   one-native-job-per-tensor path, next to model.loadAll())
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeModel } from './fixture.js';
import { benchSigningKeys, memoryKeystore, optionReader } from './lib/broker.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const opt = optionReader(args);
if (!existsSync(join(root, 'dist', 'session', 'enclave-session.js'))) {
  console.error('benchmarks need the built library: run `npm run build` and `npm run build:native` first');
  process.exit(2);
}
const GiB = 2 ** 30;
const size = Math.round(Number(opt('size', '1')) * GiB);
const runs = Number(opt('runs', '3'));
const threads = Number(opt('threads', String(availableParallelism())));
const perTensor = args.includes('--per-tensor');
const keepDir = opt('dir', null);
if (!(size > 0) || !(runs >= 1)) {
  console.error('--size must be a positive number of GiB and --runs at least 1');
  process.exit(2);
}

const { startBroker } = await import('../dist/broker/server.js');
const { validatePolicy } = await import('../dist/attestation/policy/policy.js');
const { SimulatedTee } = await import('../dist/attestation/providers/simulated.js');
const { EnclaveSession } = await import('../dist/session/enclave-session.js');
const { NativeSealedModelReader } = await import('../dist/reader/native-model.js');
const { importKey } = await import('../dist/native/key.js');
const { readPublicHeader } = await import('../dist/reader/sealed-file.js');
const { FileSource } = await import('../dist/reader/source.js');
const { loadAddon } = await import('../dist/native/addon.js');
const { SecureBuffer } = await import('../dist/native/secure-buffer.js');

const KEY_ID = 'bench';
const DATA_KEY = randomBytes(32);
const dir = keepDir ?? mkdtempSync(join(tmpdir(), 'sealed-tensors-bench-load-'));
mkdirSync(dir, { recursive: true });
const cleanups = [];
const cleanup = async () => {
  for (const f of cleanups.reverse()) await f().catch(() => {});
  if (!keepDir) rmSync(dir, { recursive: true, force: true });
};

try {
  const load0 = loadavg();
  console.error(`model: ${(size / GiB).toFixed(2)} GiB in ${dir} ...`);
  // The key is per run unless the model is kept: a kept model keeps its key next to it.
  const keyFile = join(dir, 'bench.key');
  const dataKey = keepDir && existsSync(keyFile) ? readFileSync(keyFile) : DATA_KEY;
  if (keepDir && !existsSync(keyFile)) writeFileSync(keyFile, dataKey, { mode: 0o600 });
  const model = await makeModel(dir, size, dataKey);
  const www = join(dir, 'www');
  mkdirSync(www, { recursive: true });
  const served = join(www, basename(model.sealed));
  if (!existsSync(served)) spawnSync('ln', [model.sealed, served]); // a hard link: nginx serves it from www/
  if (!existsSync(served)) writeFileSync(served, readFileSync(model.sealed));

  const binding = await bindingOf(model.sealed);
  const tee = new SimulatedTee();
  const broker = await startBrokerFor(binding, tee, dataKey);
  cleanups.push(() => broker.close());
  const server = await startFileServer(www, served);
  cleanups.push(() => server.stop());
  const url = new URL(basename(served), server.url).href;

  const handle = importKey(new Uint8Array(dataKey));
  cleanups.push(async () => handle.release());
  const modes = ['verify', 'load file', 'load http', 'load file, reused buffer', 'load file, same session', ...(perTensor ? ['load file, per tensor'] : [])];
  const times = Object.fromEntries(modes.map((m) => [m, []]));
  const establish = Object.fromEntries(modes.map((m) => [m, []]));
  const addon = loadAddon();

  const verify = async () => {
    const t0 = performance.now();
    const reader = await NativeSealedModelReader.open(model.sealed, handle, { threads });
    try {
      const checks = await reader.verify();
      if (!checks.every((f) => f.tensors.every((t) => t.ok))) throw new Error('verify failed');
    } finally {
      reader.close();
    }
    return { ms: performance.now() - t0 };
  };
  // One secure buffer for every 'reused buffer' run: allocated and touched once, before the timed runs.
  let reused = null;
  const establishSession = () => EnclaveSession.establish({ broker: broker.url, provider: tee, keys: [KEY_ID], allowPlainHttpOnLoopback: true, allowUnhardened: true });
  // The 'same session' runs share one session (its arena keeps the memory between loads).
  let shared = null;
  const load = async (source, how) => {
    const t0 = performance.now();
    const session = how === 'same session' ? (shared ??= await establishSession()) : await establishSession();
    if (how === 'same session' && !cleanups.includes(closeShared)) cleanups.push(closeShared);
    const t1 = performance.now();
    try {
      const m = await session.open(source, { threads, ...(/^https?:/.test(source) ? { allowHttp: true } : {}) });
      // Timed until the model is loaded (usable); the release (a wipe, and an unmap for fresh memory) is not.
      let bytes = 0;
      let ms;
      if (how === 'per tensor') {
        const kept = [];
        for await (const t of m.tensors()) {
          bytes += t.bytes.length;
          kept.push(t);
        }
        ms = performance.now() - t1;
        for (const t of kept) t.release();
      } else {
        if (how === 'into' && reused === null) {
          reused = SecureBuffer.allocate(m.byteLength);
          reused.bytes.fill(0);
          cleanups.push(async () => reused.release());
        }
        const all = await m.loadAll(how === 'into' ? { into: reused } : {});
        ms = performance.now() - t1;
        bytes = all.byteLength;
        all.release(); // fresh: wiped and unmapped; into: wiped, kept
      }
      if (bytes !== m.byteLength) throw new Error(`loaded ${bytes} bytes of ${m.byteLength}`);
      m.close();
      return { ms, ...(how === 'same session' ? {} : { establishMs: t1 - t0 }) };
    } finally {
      if (how !== 'same session') session.close();
    }
  };
  async function closeShared() {
    shared?.close();
    shared = null;
  }
  const run = { verify, 'load file': () => load(model.sealed), 'load http': () => load(url), 'load file, per tensor': () => load(model.sealed, 'per tensor'), 'load file, reused buffer': () => load(model.sealed, 'into'), 'load file, same session': () => load(model.sealed, 'same session') };

  console.error(`warm-up (page cache, JIT) ...`);
  for (const m of modes) await run[m]();
  for (let r = 0; r < runs; r++) {
    for (const m of modes) {
      const res = await run[m]();
      times[m].push(res.ms);
      if (res.establishMs !== undefined) establish[m].push(res.establishMs);
      console.error(`  run ${r + 1}/${runs} ${m}: ${res.ms.toFixed(0)} ms${res.establishMs !== undefined ? ` (+ establish ${res.establishMs.toFixed(0)} ms)` : ''}`);
    }
  }
  await closeShared(); // its arena held the last load's memory
  if (addon.secureLockedBytes() !== (reused ? reused.size : 0)) console.error(`note: ${addon.secureLockedBytes()} secure bytes still locked at the end`);
  const load1 = loadavg();

  const med = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const v = med(times.verify);
  const rows = modes.map((m) => {
    const ms = med(times[m]);
    const est = establish[m].length ? med(establish[m]) : null;
    const ratio = ms / v;
    const target = m.startsWith('load file') && m !== 'load file, per tensor' ? 1.1 : null;
    return { mode: m, ms, establishMs: est, mbps: size / 1e6 / (ms / 1000), ratio, target, met: target === null ? null : ratio <= target };
  });
  const lines = [
    `load vs verify, ${(size / GiB).toFixed(2)} GiB sealed model (${model.sealedSize} bytes), ${threads} threads, ${runs} runs interleaved, medians`,
    `machine: ${cpus()[0]?.model ?? '?'} x${cpus().length}, Node ${process.version}; load average ${load0[0].toFixed(2)} before, ${load1[0].toFixed(2)} after`,
    `http server: ${server.kind}`,
    '',
    '| mode | open + read ms | MB/s | establish ms | ratio to verify | target |',
    '|---|---:|---:|---:|---:|---|',
    ...rows.map(
      (r) =>
        `| ${r.mode} | ${r.ms.toFixed(0)} | ${r.mbps.toFixed(0)} | ${r.establishMs === null ? '' : r.establishMs.toFixed(0)} | ${r.mode === 'verify' ? '1.00' : r.ratio.toFixed(2)} | ${r.target === null ? '' : `<= ${r.target.toFixed(2)}: ${r.met ? 'met' : 'NOT met'}`} |`,
    ),
  ];
  console.log(lines.join('\n'));
  const resultsDir = join(root, 'benchmarks', 'results');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(
    join(resultsDir, `load-${Date.now()}.json`),
    JSON.stringify({ size, threads, runs, server: server.kind, loadavg: { before: load0, after: load1 }, times, establish, rows }, null, 2),
  );
} finally {
  await cleanup();
}

async function bindingOf(path) {
  const source = await FileSource.open(path);
  try {
    const { header, headerBytes } = await readPublicHeader(source);
    return { bundleId: Buffer.from(header.bundleId).toString('hex'), headerDigest: createHash('sha256').update(headerBytes).digest('hex') };
  } finally {
    await source.close();
  }
}

async function startBrokerFor(binding, tee, dataKey) {
  const record = { keyId: KEY_ID, state: 'active', models: [binding], policy: 'sim', createdAt: new Date().toISOString() };
  const keystore = memoryKeystore(record, dataKey);
  const measurement = createHash('sha384').update('sealed-tensors simulated TEE').digest('hex');
  const policy = validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [measurement] } } } });
  const policies = { get: async (name) => (name === 'sim' ? policy : undefined) };
  let seq = 0;
  const audit = { append: async () => ({ seq: ++seq, hash: '0'.repeat(64) }) };
  return startBroker({
    keystore,
    policies,
    audit,
    ...(await benchSigningKeys()),
    allowPlainHttpOnLoopback: true,
    host: '127.0.0.1',
    port: 0,
    allowSimulated: true,
    simulatedRoots: [tee.rootFingerprint],
  });
}

// ------------------------------------------------------------------------------------------------
// The web server: nginx if installed, else node:http with single ranges

function nginxBinary() {
  for (const c of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) if (existsSync(c)) return c;
  const r = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() !== '' ? r.stdout.trim() : null;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

async function startFileServer(www, file) {
  const binary = nginxBinary();
  if (binary) {
    const state = join(dir, 'nginx');
    for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(state, d), { recursive: true });
    // As root the workers run as nobody: they need to pass through to www/ (ciphertext only).
    chmodSync(dir, 0o711);
    chmodSync(www, 0o755);
    chmodSync(file, 0o644);
    const port = await freePort();
    const group = /^nogroup:/m.test(readFileSync('/etc/group', 'utf8')) ? 'nogroup' : 'nobody';
    const conf = join(state, 'nginx.conf');
    writeFileSync(
      conf,
      `${process.getuid?.() === 0 ? `user nobody ${group};\n` : ''}daemon off;
worker_processes 1;
pid ${join(state, 'nginx.pid')};
error_log ${join(state, 'error.log')} warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${join(state, 'client_body')};
  proxy_temp_path ${join(state, 'proxy')};
  fastcgi_temp_path ${join(state, 'fastcgi')};
  uwsgi_temp_path ${join(state, 'uwsgi')};
  scgi_temp_path ${join(state, 'scgi')};
  sendfile on;
  server { listen 127.0.0.1:${port}; root ${www}; location / { default_type application/octet-stream; } }
}
`,
    );
    const child = spawn(binary, ['-p', state, '-e', join(state, 'error.log'), '-c', conf], { stdio: 'ignore' });
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) break;
      if (await canConnect(port)) {
        return {
          kind: `nginx (${binary})`,
          url: `http://127.0.0.1:${port}/`,
          stop: async () => {
            if (child.exitCode === null) {
              child.kill('SIGQUIT');
              await new Promise((r) => child.once('exit', r));
            }
          },
        };
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    child.kill();
    console.error(`nginx did not start (${existsSync(join(state, 'error.log')) ? readFileSync(join(state, 'error.log'), 'utf8') : ''}); using node:http`);
  }
  const server = createHttpServer((req, res) => {
    const path = join(www, basename(decodeURIComponent(new URL(req.url, 'http://x').pathname)));
    let st;
    try {
      st = statSync(path);
    } catch {
      res.writeHead(404).end();
      return;
    }
    const etag = `"${st.mtimeMs.toString(16)}-${st.size.toString(16)}"`;
    if (req.headers['if-match'] && req.headers['if-match'] !== etag) {
      res.writeHead(412).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) {
      res.writeHead(200, { 'content-length': st.size, etag });
      createReadStream(path).pipe(res);
      return;
    }
    const first = Number(m[1]);
    const last = Math.min(Number(m[2]), st.size - 1);
    res.writeHead(206, { 'content-range': `bytes ${first}-${last}/${st.size}`, 'content-length': last - first + 1, etag });
    createReadStream(path, { start: first, end: last, highWaterMark: 1 << 20 }).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    kind: 'node:http range server (no nginx found)',
    url: `http://127.0.0.1:${server.address().port}/`,
    stop: () => new Promise((r) => server.close(r)),
  };
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
