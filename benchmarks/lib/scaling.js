// The scaling part of `npm run bench` (issue 10): GB/s of native verify, native load and native
// seal from 1 thread up to --threads-max, beside the combined crypto limit measured in the same
// run; peak RSS of each in a fresh child process; cold-cache figures where the page cache can be
// dropped. Load is NativeSealedFileReader.loadAll() into secure memory (the native reader), not an
// EnclaveSession against a broker: the broker round trip is a fixed cost that load.js measures.
import { execFileSync } from 'node:child_process';
import { unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** 1, 2, 4, ... up to `max`, and `max` itself. */
export function threadCounts(max) {
  const out = [];
  for (let t = 1; t < max; t *= 2) out.push(t);
  out.push(max);
  return out;
}

/**
 * Best GB/s (1e9 bytes/s) of each (operation, thread count) over `repeat` rounds after one warm-up
 * round. Each round runs every pair once in turn, so load from other work hits them alike.
 */
export async function measureScaling({ lib, m, dataKey, threads, repeat, tmpfsDir }) {
  const { NativeSealedFileReader, importKey, resolveSealOptions, sealFileResolved } = lib;
  const out = join(tmpfsDir, `bench-scaling-${process.pid}`);
  const clean = () => {
    try {
      unlinkSync(out);
    } catch {}
  };
  const readers = new Map();
  for (const t of threads) {
    const key = importKey(new Uint8Array(dataKey));
    readers.set(t, await NativeSealedFileReader.open(m.sealed, key, { threads: t }));
    key.release();
  }
  const ops = {
    verify: async (t) => {
      const checks = await readers.get(t).verify();
      if (!checks.every((c) => c.ok)) throw new Error('verify failed');
    },
    // Timed until every tensor is in secure memory and checked; the wipe on release is not.
    load: async (t) => readers.get(t).loadAll(),
    seal: async (t) => {
      const o = resolveSealOptions({ dataKey: new Uint8Array(dataKey), keyId: 'bench', overwrite: true, threads: t }, undefined, 'native');
      await sealFileResolved(m.plain, out, o);
    },
  };
  const after = { verify: () => {}, load: (loaded) => loaded.release(), seal: clean };
  const bytes = { verify: m.payload, load: m.payload, seal: m.plainSize };
  const best = {};
  try {
    for (let round = 0; round <= repeat; round++) {
      for (const t of threads) {
        for (const op of Object.keys(ops)) {
          const t0 = performance.now();
          const r = await ops[op](t);
          const wall = performance.now() - t0;
          await after[op](r);
          if (round === 0) continue; // warm-up (also fills the page cache)
          const gbs = bytes[op] / 1e6 / wall; // bytes per ms / 1e6 = GB/s
          best[op] ??= {};
          best[op][t] = Math.max(best[op][t] ?? 0, gbs);
        }
      }
    }
  } finally {
    clean();
    for (const r of readers.values()) r.close();
  }
  return best;
}

/** Peak RSS (VmHWM, bytes) of a fresh process running `op` once with `threads` threads. */
export function peakRss({ root, m, dataKey, op, threads, tmpfsDir }) {
  const script = join(root, 'benchmarks', 'lib', 'peak-rss-child.js');
  const out = join(tmpfsDir, `bench-rss-${process.pid}`);
  const arg = JSON.stringify({ root, sealed: m.sealed, plain: m.plain, out, dataKey: [...dataKey], op, threads });
  try {
    return Number(execFileSync(process.execPath, [script, arg], { encoding: 'utf8' }).trim()) * 1024;
  } finally {
    try {
      unlinkSync(out);
    } catch {}
  }
}

/**
 * Whether this process may drop the page cache (root, with a writable /proc/sys/vm): tries it
 * once and says why not otherwise.
 */
export function canDropCaches() {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '1');
    return { ok: true };
  } catch (e) {
    return { ok: false, why: `cannot drop the page cache (${e.code ?? e.message}; needs root and a writable /proc/sys/vm)` };
  }
}

/** GB/s of each operation with `threads` threads, the page cache dropped before every run; best of `repeat`. */
export async function measureCold({ lib, m, dataKey, threads, repeat, tmpfsDir }) {
  const best = {};
  for (let i = 0; i < repeat; i++) {
    for (const op of ['verify', 'load', 'seal']) {
      // A fresh reader per run: opening reads the header and table, which must come from disk too.
      const drop = () => {
        execFileSync('sync');
        writeFileSync('/proc/sys/vm/drop_caches', '1');
      };
      best[op] = Math.max(best[op] ?? 0, await coldRun({ lib, m, dataKey, threads, tmpfsDir, op, drop }));
    }
  }
  return best;
}

async function coldRun({ lib, m, dataKey, threads, tmpfsDir, op, drop }) {
  const { NativeSealedFileReader, importKey, resolveSealOptions, sealFileResolved } = lib;
  const out = join(tmpfsDir, `bench-cold-${process.pid}`);
  drop();
  const t0 = performance.now();
  let bytes;
  if (op === 'seal') {
    const o = resolveSealOptions({ dataKey: new Uint8Array(dataKey), keyId: 'bench', overwrite: true, threads }, undefined, 'native');
    await sealFileResolved(m.plain, out, o);
    bytes = m.plainSize;
  } else {
    const key = importKey(new Uint8Array(dataKey));
    const r = await NativeSealedFileReader.open(m.sealed, key, { threads });
    key.release();
    try {
      if (op === 'verify') {
        const checks = await r.verify();
        if (!checks.every((c) => c.ok)) throw new Error('verify failed');
      } else {
        const loaded = await r.loadAll();
        const wall = performance.now() - t0;
        loaded.release();
        return m.payload / 1e6 / wall; // bytes per ms / 1e6 = GB/s
      }
    } finally {
      r.close();
    }
    bytes = m.payload;
  }
  const wall = performance.now() - t0;
  try {
    unlinkSync(out);
  } catch {}
  return bytes / 1e6 / wall; // bytes per ms / 1e6 = GB/s
}

/** The scaling table as text lines: GB/s per thread count, and the crypto limit for that many cores. */
export function scalingTable(rows, limitPerCore, cores) {
  const head = ['threads', 'verify GB/s', 'load GB/s', 'seal GB/s', 'crypto limit GB/s', 'verify/limit'];
  const fmt = (v) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(2) : '-');
  const body = rows.map((r) => {
    const limit = limitPerCore * Math.min(r.threads, cores);
    return [String(r.threads), fmt(r.verify), fmt(r.load), fmt(r.seal), fmt(limit), fmt(r.verify / limit)];
  });
  const width = head.map((_, c) => Math.max(...[head, ...body].map((r) => r[c].length)));
  return [head, ...body].map((r) => r.map((cell, c) => cell.padStart(width[c])).join('  '));
}

/** PNG of GB/s against threads (one line per operation, the crypto limit dashed), via vega-lite + resvg. */
export async function scalingPlot(rows, limitPerCore, cores, title) {
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const { Resvg } = await import('@resvg/resvg-js');
  const values = [];
  for (const r of rows) {
    for (const op of ['verify', 'load', 'seal']) if (Number.isFinite(r[op])) values.push({ threads: r.threads, gbs: r[op], series: op });
    values.push({ threads: r.threads, gbs: limitPerCore * Math.min(r.threads, cores), series: 'crypto limit (AES-256-GCM + SHA-256 per core x cores)' });
  }
  const spec = vl.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 520,
    height: 320,
    background: 'white',
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'threads', type: 'quantitative', title: 'threads', scale: { type: 'log', base: 2 }, axis: { values: rows.map((r) => r.threads), format: 'd' } },
      y: { field: 'gbs', type: 'quantitative', title: 'GB/s (1e9 bytes/s)', scale: { zero: true } },
      color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'bottom', columns: 2, labelLimit: 480 } },
      strokeDash: { condition: { test: "indexof(datum.series, 'crypto limit') === 0", value: [6, 4] }, value: [1, 0] },
    },
  }).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return new Resvg(svg, { fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true } }).render().asPng();
}
