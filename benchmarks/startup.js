#!/usr/bin/env node
// `npm run bench:startup`: what a user waits for, timed as whole processes (spawn to exit), with
// the baselines run in the same script so that ratios, not absolute times, carry the result:
//   node -e ''                       the floor: starting Node itself
//   sealed-tensors --help            CLI start-up
//   sealed-tensors inspect M         CLI start-up plus one header read
//   import('sealed-tensors')         library import (dist/index.js)
//   sealed-tensors verify M --threads 2 of a sealed 1 GiB model, against `age -d` of the same bytes
// Files are in the page cache (one untimed warm-up run each).
//
// Options: --repeat 15 (short commands)  --repeat-verify 5  --size 1 (GiB)  --dir PATH (keep and
// reuse the models)  --keep-env (time with NODE_EXTRA_CA_CERTS if set)  --no-verify (start-up only, no model or age needed)  --baseline PATH (another
// built checkout, e.g. an older commit: its commands are timed too, run for run interleaved with
// this one's, so both see the same machine load)
// Figures, not tests: shared machines swing them; compare within one run.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { writeSafetensors } from './fixture.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const repeat = Number(opt('repeat', '15'));
const repeatVerify = Number(opt('repeat-verify', '5'));
const size = Math.round(Number(opt('size', '1')) * 2 ** 30);
const withVerify = !args.includes('--no-verify');
const keepDir = opt('dir', undefined);
const baseline = opt('baseline', undefined);
// NODE_EXTRA_CA_CERTS makes every Node process parse a CA bundle at start (about 45 ms on this
// project's VMs, where it is set machine-wide): a cost of the machine, not of this package, that
// would hide what the package adds. Left out of the timed processes unless --keep-env.
const childEnv = { ...process.env };
if (!args.includes('--keep-env')) delete childEnv.NODE_EXTRA_CA_CERTS;
const roots = [['', root], ...(baseline ? [[' (baseline)', baseline]] : [])];
const bin = (r) => join(r, 'bin', 'sealed-tensors.js');
const indexUrl = (r) => pathToFileURL(join(r, 'dist', 'index.js')).href;
const INDEX = indexUrl(root);

if (!existsSync(join(root, 'dist', 'index.js'))) {
  console.error('benchmarks need the built library: run `npm run build` first');
  process.exit(2);
}
const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

const dir = keepDir ?? join(tmpdir(), `sealed-tensors-startup-${process.pid}`);
mkdirSync(dir, { recursive: true });

/**
 * Median and best wall time (ms) of `n` runs of each whole-process variant ([name, cmd, argv]),
 * after one untimed warm-up each; the variants take turns, run by run.
 */
function timeEach(variants, n) {
  const run = ([, cmd, argv]) => {
    const t = process.hrtime.bigint();
    const r = spawnSync(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv });
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
    return ms;
  };
  variants.forEach(run);
  const runs = variants.map(() => []);
  for (let i = 0; i < n; i++) variants.forEach((v, k) => runs[k].push(run(v)));
  for (const [k, [name]] of variants.entries()) {
    const sorted = runs[k].sort((a, b) => a - b);
    note(name, { medianMs: sorted[Math.floor(sorted.length / 2)], minMs: sorted[0], runs: sorted.length });
  }
}

const { writeNewKeyFile, readKeyFile, sealFile } = await import(INDEX);
const keyPath = join(dir, 'startup.key');
if (!existsSync(keyPath)) (await writeNewKeyFile(keyPath, 'bench-startup')).key.fill(0);

// A small sealed file for inspect (a header read: start-up dominates).
const small = join(dir, 'small.safetensors');
const smallSealed = join(dir, 'small.sealed');
if (!existsSync(smallSealed)) {
  await writeSafetensors(small, 1 << 20);
  const k = await readKeyFile(keyPath);
  await sealFile(small, smallSealed, { dataKey: k.key, keyId: k.id });
  k.key.fill(0);
}

const results = {
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: availableParallelism(), node: process.version },
  loadAverage: { start: loadavg().map((x) => x.toFixed(2)) },
  ms: {},
  extraCaCerts: process.env.NODE_EXTRA_CA_CERTS ? (childEnv.NODE_EXTRA_CA_CERTS ? 'kept' : 'left out') : 'not set',
};
const note = (name, r) => {
  results.ms[name] = r;
  console.error(`  ${name}: median ${r.medianMs.toFixed(0)} ms, best ${r.minMs.toFixed(0)} ms (${r.runs} runs)`);
};

const forRoots = (name, argvFor) => roots.map(([suffix, r]) => [`${name}${suffix}`, process.execPath, argvFor(r)]);
console.error(`start-up (${repeat} runs each) ...`);
timeEach([['node -e ""', process.execPath, ['-e', '']]], repeat);
timeEach(forRoots('--help', (r) => [bin(r), '--help']), repeat);
timeEach(forRoots('inspect', (r) => [bin(r), 'inspect', smallSealed]), repeat);
timeEach(forRoots('import index', (r) => ['--input-type=module', '-e', `await import(${JSON.stringify(indexUrl(r))})`]), repeat);

if (withVerify) {
  if (!which('age') || !which('age-keygen')) {
    console.error('verify vs age -d needs age (apt-get install -y age); run with --no-verify to skip');
    process.exit(2);
  }
  const plain = join(dir, `model-${size}.safetensors`);
  const sealed = join(dir, `model-${size}.sealed`);
  const aged = `${plain}.age`;
  const identity = join(dir, 'age.key');
  if (!existsSync(plain)) {
    console.error(`writing a ${(size / 2 ** 30).toFixed(2)} GiB model in ${dir} ...`);
    await writeSafetensors(plain, size);
  }
  // Each checkout seals its own copy: a baseline from before a format change cannot read ours.
  const sealedBy = new Map();
  for (const [suffix, r] of roots) {
    const path = suffix ? `${sealed}.baseline` : sealed;
    if (!existsSync(path)) {
      const lib = await import(indexUrl(r));
      const k = await lib.readKeyFile(keyPath);
      await lib.sealFile(plain, path, { dataKey: k.key, keyId: k.id });
      k.key.fill(0);
    }
    sealedBy.set(r, path);
  }
  if (!existsSync(identity)) execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' });
  if (!existsSync(aged)) {
    const recipient = /public key: (\S+)/.exec(readFileSync(identity, 'utf8'))[1];
    execFileSync('age', ['-r', recipient, '-o', aged, plain]);
  }
  console.error(`verify of ${(size / 2 ** 30).toFixed(2)} GiB vs age -d (${repeatVerify} runs each, interleaved) ...`);
  timeEach(
    [['age -d', 'age', ['-d', '-i', identity, '-o', '/dev/null', aged]], ...forRoots('verify --threads 2', (r) => [bin(r), 'verify', sealedBy.get(r), '--key', keyPath, '--threads', '2'])],
    repeatVerify,
  );
}

const ms = (k) => results.ms[k]?.medianMs;
results.ratios = {};
for (const [suffix] of roots) {
  results.ratios[suffix.trim() || 'this'] = {
    // Start-up figures less Node's own start: what this library adds.
    helpOverNodeMs: ms(`--help${suffix}`) - ms('node -e ""'),
    inspectOverNodeMs: ms(`inspect${suffix}`) - ms('node -e ""'),
    importOverNodeMs: ms(`import index${suffix}`) - ms('node -e ""'),
    ...(withVerify ? { verifySpeedupOverAge: { value: ms('age -d') / ms(`verify --threads 2${suffix}`), target: 1.8 } } : {}),
  };
}
results.loadAverage.end = loadavg().map((x) => x.toFixed(2));

const lines = [];
lines.push(`sealed-tensors start-up ${results.date} - ${results.machine.cpu}, ${results.machine.cores} cores, node ${process.version}`);
lines.push(`load average at start ${results.loadAverage.start.join(' ')}, at end ${results.loadAverage.end.join(' ')}`);
if (process.env.NODE_EXTRA_CA_CERTS) lines.push(`NODE_EXTRA_CA_CERTS is set here: ${childEnv.NODE_EXTRA_CA_CERTS ? 'kept (--keep-env)' : 'left out of the timed processes (--keep-env keeps it)'}`);
const width = Math.max(...Object.keys(results.ms).map((k) => k.length));
lines.push(`${'whole process, ms'.padEnd(width + 2)}  median    best   (targets: --help, inspect < 150; import < 100)`);
for (const [k, r] of Object.entries(results.ms)) lines.push(`  ${k.padEnd(width)} ${r.medianMs.toFixed(0).padStart(7)} ${r.minMs.toFixed(0).padStart(7)}`);
for (const [name, r] of Object.entries(results.ratios)) {
  lines.push(`${name}: added to node's own start-up (medians): --help ${r.helpOverNodeMs.toFixed(0)} ms, inspect ${r.inspectOverNodeMs.toFixed(0)} ms, import ${r.importOverNodeMs.toFixed(0)} ms`);
  if (withVerify) {
    const v = r.verifySpeedupOverAge;
    lines.push(`${name}: verify vs age -d (medians): ${v.value.toFixed(2)}x as fast (>= ${v.target}${v.value >= v.target ? ', met' : ', MISSED'})`);
  }
}
console.log(lines.join('\n'));

const outDir = join(root, 'benchmarks', 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, `startup-${results.date.replace(/[:.]/g, '-')}.json`), `${JSON.stringify(results, null, 2)}\n`);
if (!keepDir) rmSync(dir, { recursive: true, force: true });
