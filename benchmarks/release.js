#!/usr/bin/env node
// `npm run bench:release`: key releases per second and p50/p99 latency of the broker at 1, 16 and
// 64 concurrent clients, with SEV-SNP evidence verified for real: an AMD-shaped chain forged for the
// run (ARK -> ASK RSA-4096 RSA-PSS/SHA-384 as AMD's, VCEK ECDSA P-384; the forged ARK pinned through
// startBroker's verifyOptions.trustedRoots), each report signed by the VCEK over report data that is
// the Trustee binding of its session's nonce and ephemeral key, sent in Trustee's wire shape.
//   full RCAR    per release: a fresh ephemeral key, /auth, /attest (report + chain verified, token
//                issued), /resource by cookie; the client opens the JWE and checks the key.
//   bearer       per release: /resource with the Bearer token of an earlier RCAR; JWE opened.
// The broker runs in a child process (loopback HTTPS, keep-alive, one connection per client),
// so its CPU time per release is measured apart from the clients'.
//
// Each mode runs closed loop at each client count, then open loop: 64 clients sharing --rate
// releases/s (the target's shape: a p99 at 64 clients only means something at an offered rate).
// Options: --seconds 5 (per measurement)  --clients 1,16,64  --modes rcar,bearer  --rate 300 (0: no
// open-loop run)  --variants default,nocache,threads1 (broker variants measured interleaved:
// default = as shipped, evidence verified in the main thread; nocache = no verified-signature-link
// cache (main thread only); threadsN = evidence verified in N worker threads)
// --repeat 1 (rounds over everything; targets use medians)  --verify-cost N (only the evidence
// verification, in process, by variant: CPU per verification, main thread apart; see verifyCost)  --http (plain HTTP on loopback)  --cpu-prof (the broker writes a V8 CPU profile of
// each timed phase to benchmarks/results/, for Chrome DevTools or speedscope)
// Stores: in-memory keystore and policy store and a hash-chained audit sink that keeps only its
// head, so the figures are the protocol's, not a disk's.
// Figures, not tests: nothing is asserted; shared machines swing them.
import { fork } from 'node:child_process';
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, webcrypto, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchSigningKeys, memoryKeystore, optionReader } from './lib/broker.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const here = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);
const opt = optionReader(args);
if (!existsSync(join(root, 'dist', 'broker', 'server.js'))) {
  console.error('benchmarks need the built library: run `npm run build` first');
  process.exit(2);
}
const resultsDir = join(root, 'benchmarks', 'results');

const KEY_ID = 'bench-key';
const DATA_KEY = randomBytes(32);
const MODELS = [{ bundleId: 'ab'.repeat(16), headerDigest: 'cd'.repeat(32) }];
/** Milan TCB at the built-in floor (SNP SPL 24, microcode 0xDB): bootloader, tee, snp, microcode. */
const TCB = { bl: 4, tee: 0, snp: 24, ucode: 219 };

// ------------------------------------------------------------------------------------------------
// The broker process

async function brokerChild() {
  const { startBroker } = await import('../dist/broker/server.js');
  const { validatePolicy } = await import('../dist/attestation/policy/policy.js');
  const cfg = await new Promise((resolve) => process.once('message', resolve));

  const record = { keyId: KEY_ID, state: 'active', models: MODELS, policy: 'snp', createdAt: new Date().toISOString() };
  const dataKey = Buffer.from(cfg.dataKey, 'hex');
  let releases = 0;
  const keystore = memoryKeystore(record, dataKey, () => releases++);
  const policy = validatePolicy({ version: 1, tees: { snp: { measurements: { measurement: [cfg.measurement] } } } });
  const policies = { get: async (name) => (name === 'snp' ? policy : undefined) };
  // Hash-chained like the real log, but only the head is kept.
  let head = '0'.repeat(64);
  let seq = 0;
  const verdicts = { allow: 0, deny: 0 };
  const audit = {
    async append(entry) {
      seq++;
      head = createHash('sha256').update(JSON.stringify({ seq, prev: head, ...entry })).digest('hex');
      if (entry.verdict) verdicts[entry.verdict]++;
      return { seq, hash: head };
    },
  };
  const errors = [];
  // Variants (--variants): `nocache` turns the verified-signature-link cache off (every chain
  // verified by signature, as before it existed); `threadsN` verifies evidence in N worker threads.
  if (cfg.variant.includes('nocache')) {
    const { signatureLinks } = await import('../dist/attestation/link-cache.js');
    signatureLinks.has = () => false;
  }
  const threads = /threads(\d+)/.exec(cfg.variant)?.[1];
  const broker = await startBroker({
    keystore,
    policies,
    audit,
    ...(await benchSigningKeys()),
    ...(cfg.tls ? { tls: cfg.tls } : { allowPlainHttpOnLoopback: true }),
    host: '127.0.0.1',
    port: 0,
    allowSimulated: false,
    rateLimit: { burst: 1e9, perSecond: 1e9 },
    // The warm-up runs the clients one after another: on a loaded machine the first one's connection
    // idles longer than the default 5 s and the broker closes it under the client (socket hang up).
    keepAliveTimeoutMs: 120_000,
    verifyOptions: {
      trustedRoots: { snp: [cfg.arkFingerprint] },
      certificates: cfg.issuers.map((pem) => new X509Certificate(pem)),
    },
    ...(threads ? { verifyThreads: { threads: Number(threads) } } : {}),
    onError: (err) => errors.push(String(err?.stack ?? err)),
  });
  // TLS handshakes: the clients keep one connection each (keep-alive), so this should be the client count.
  let handshakes = 0;
  broker.server.on(cfg.tls ? 'secureConnection' : 'connection', () => handshakes++);
  // Profiles only the timed phase (start-up and warm-up would hide the steady state).
  let profiler;
  process.on('message', async (m) => {
    if (m.type === 'profile-start') {
      const { Session } = await import('node:inspector');
      profiler = new Session();
      profiler.connect();
      const post = (method, params) => new Promise((resolve, reject) => profiler.post(method, params, (err, r) => (err ? reject(err) : resolve(r))));
      profiler.postAsync = post;
      await post('Profiler.enable');
      await post('Profiler.setSamplingInterval', { interval: 200 });
      await post('Profiler.start');
      process.send({ type: 'profile-started' });
    } else if (m.type === 'profile-stop') {
      const { profile } = await profiler.postAsync('Profiler.stop');
      writeFileSync(m.path, JSON.stringify(profile));
      profiler.disconnect();
      process.send({ type: 'profile-stopped' });
    } else if (m.type === 'stats') {
      const cpu = process.cpuUsage();
      // The main thread's busy time (event loop utilisation): what bounds one broker process.
      const elu = performance.eventLoopUtilization();
      process.send({ type: 'stats', releases, handshakes, mainActiveMs: elu.active, verdicts: { ...verdicts }, cpuMs: (cpu.user + cpu.system) / 1000, rss: process.memoryUsage().rss, errors: errors.splice(0) });
    } else if (m.type === 'stop') {
      await broker.close();
      process.send({ type: 'stopped' });
      process.disconnect();
    }
  });
  process.send({ type: 'ready', url: broker.url });
}

// ------------------------------------------------------------------------------------------------
// The forged AMD platform

async function forgeAmd() {
  await import('reflect-metadata');
  const px509 = await import('@peculiar/x509');
  px509.cryptoProvider.set(webcrypto);
  const rsa = { name: 'RSA-PSS', hash: 'SHA-384', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 4096 };
  const signingAlgorithm = { name: 'RSA-PSS', hash: 'SHA-384', saltLength: 48 };
  const [arkKeys, askKeys, vcekKeys] = await Promise.all([
    webcrypto.subtle.generateKey(rsa, true, ['sign', 'verify']),
    webcrypto.subtle.generateKey(rsa, true, ['sign', 'verify']),
    webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']),
  ]);
  const dn = (cn) => `CN=${cn}, O=Advanced Micro Devices, L=Santa Clara, ST=CA, C=US, OU=Engineering`;
  const notBefore = new Date(Date.now() - 86_400_000);
  const notAfter = new Date(Date.now() + 365 * 86_400_000);
  const ca = [new px509.BasicConstraintsExtension(true, undefined, true), new px509.KeyUsagesExtension(px509.KeyUsageFlags.keyCertSign | px509.KeyUsageFlags.cRLSign, true)];
  const chipId = randomBytes(64);
  const derInt = (n) => {
    const bytes = n < 0x80 ? [n] : n < 0x8000 ? [n >> 8, n & 0xff] : [0, n >> 8, n & 0xff];
    if (bytes[0] >= 0x80) bytes.unshift(0);
    return new Uint8Array([2, bytes.length, ...bytes]);
  };
  const amd = (suffix, value) => new px509.Extension(`1.3.6.1.4.1.3704.1.${suffix}`, false, value);
  const product = 'Milan-B0';
  const ark = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: dn('ARK-Milan'), notBefore, notAfter, keys: arkKeys, signingAlgorithm, extensions: ca });
  const ask = await px509.X509CertificateGenerator.create({ serialNumber: '02', subject: dn('SEV-Milan'), issuer: ark.subject, notBefore, notAfter, publicKey: askKeys.publicKey, signingKey: arkKeys.privateKey, signingAlgorithm, extensions: ca });
  const vcek = await px509.X509CertificateGenerator.create({
    serialNumber: '03',
    subject: dn('SEV-VCEK'),
    issuer: ask.subject,
    notBefore,
    notAfter,
    publicKey: vcekKeys.publicKey,
    signingKey: askKeys.privateKey,
    signingAlgorithm,
    extensions: [
      amd('2', new Uint8Array([0x16, product.length, ...Buffer.from(product)])),
      amd('3.1', derInt(TCB.bl)),
      amd('3.2', derInt(TCB.tee)),
      amd('3.3', derInt(TCB.snp)),
      amd('3.8', derInt(TCB.ucode)),
      amd('4', chipId),
    ],
  });
  const vcekKey = createPrivateKey({ key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', vcekKeys.privateKey)), format: 'der', type: 'pkcs8' });
  const arkX509 = new X509Certificate(Buffer.from(ark.rawData));
  return {
    chipId,
    vcekKey,
    vcekDer: new Uint8Array(vcek.rawData),
    issuers: [ask.toString('pem'), ark.toString('pem')],
    arkFingerprint: createHash('sha256').update(arkX509.raw).digest('hex'),
    measurement: randomBytes(48),
  };
}

/** A version-3 Milan ATTESTATION_REPORT (1184 bytes) with `reportData`, signed by the forged VCEK. */
function snpReport(amdPlatform, reportData) {
  const r = Buffer.alloc(1184);
  const tcb = BigInt(TCB.bl) | (BigInt(TCB.tee) << 8n) | (BigInt(TCB.snp) << 48n) | (BigInt(TCB.ucode) << 56n);
  r.writeUInt32LE(3, 0x00); // VERSION
  r.writeBigUInt64LE(0x30000n, 0x08); // POLICY: SMT allowed, reserved bit 17 set, DEBUG (bit 19) clear
  r.writeUInt32LE(0, 0x30); // VMPL 0
  r.writeUInt32LE(1, 0x34); // SIGNATURE_ALGO: ECDSA P-384 with SHA-384
  r.writeBigUInt64LE(tcb, 0x38); // CURRENT_TCB
  r.writeUInt32LE(0, 0x48); // FLAGS: signed by the VCEK
  r.set(reportData, 0x50);
  r.set(amdPlatform.measurement, 0x90);
  r.writeBigUInt64LE(tcb, 0x180); // REPORTED_TCB
  r[0x188] = 0x19; // CPUID family 19h, model 01h: Milan
  r[0x189] = 0x01;
  r[0x18a] = 0x01;
  r.set(amdPlatform.chipId, 0x1a0);
  r.writeBigUInt64LE(tcb, 0x1e0); // COMMITTED_TCB
  r.set([29, 55, 1], 0x1e8); // CURRENT build, minor, major
  r.set([29, 55, 1], 0x1ec); // COMMITTED
  r.writeBigUInt64LE(tcb, 0x1f0); // LAUNCH_TCB
  const sig = sign('sha384', r.subarray(0, 0x2a0), { key: amdPlatform.vcekKey, dsaEncoding: 'ieee-p1363' });
  r.set(Buffer.from(sig.subarray(0, 48)).reverse(), 0x2a0);
  r.set(Buffer.from(sig.subarray(48)).reverse(), 0x2a0 + 72);
  return new Uint8Array(r);
}

/** A throwaway CA and a server certificate for 127.0.0.1. */
async function tlsMaterial() {
  const px509 = await import('@peculiar/x509');
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const caKeys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const srvKeys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const validity = { notBefore: new Date(Date.now() - 3600_000), notAfter: new Date(Date.now() + 86_400_000), signingAlgorithm: alg };
  const caCert = await px509.X509CertificateGenerator.createSelfSigned({ serialNumber: '01', name: 'CN=sealed-tensors bench CA', keys: caKeys, extensions: [new px509.BasicConstraintsExtension(true, 0, true)], ...validity });
  const srv = await px509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=127.0.0.1',
    issuer: caCert.subject,
    publicKey: srvKeys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [new px509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }])],
    ...validity,
  });
  const key = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', srvKeys.privateKey)).toString('base64');
  return { tls: { cert: srv.toString('pem'), key: `-----BEGIN PRIVATE KEY-----\n${key.match(/.{1,64}/g).join('\n')}\n-----END PRIVATE KEY-----\n` }, ca: caCert.toString('pem') };
}

// ------------------------------------------------------------------------------------------------
// Clients

function requester(url, ca) {
  const u = new URL(url);
  const https = u.protocol === 'https:';
  return () => {
    const agent = https ? new HttpsAgent({ keepAlive: true, maxSockets: 1, ca }) : new HttpAgent({ keepAlive: true, maxSockets: 1 });
    const call = (method, path, headers, body) =>
      new Promise((resolve, reject) => {
        const req = (https ? httpsRequest : httpRequest)({ host: u.hostname, port: u.port, method, path, headers: body ? { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : headers, agent }, (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(body);
      });
    call.agent = agent;
    return call;
  };
}

async function client(call, lib, amdPlatform) {
  const { kbsReportData, encodeTeeEvidence, flattenedDecrypt } = lib;
  const check = (r, what) => {
    if (r.status !== 200) throw new Error(`${what}: ${r.status} ${r.text.slice(0, 500)}`);
    return r;
  };
  const open = async (r, privateKey) => {
    const { plaintext } = await flattenedDecrypt(JSON.parse(r.text), privateKey);
    if (Buffer.from(plaintext.subarray(0, 4)).toString('latin1') !== 'STK1' || !Buffer.from(plaintext.subarray(4, 36)).equals(DATA_KEY)) throw new Error('the JWE did not hold the data key');
  };
  const phases = { auth: [], attest: [], resource: [] };
  return {
    call,
    phases,
    /** One full RCAR; returns the token and the key it is bound to. */
    async rcar() {
      const t0 = performance.now();
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
      const jwk = { kty, crv, x, y, alg: 'ECDH-ES+A256KW' };
      const a = check(await call('POST', '/kbs/v0/auth', {}, JSON.stringify({ version: '0.4.0', tee: 'snp', 'extra-params': '' })), 'auth');
      const t1 = performance.now();
      const cookie = String(a.headers['set-cookie']).split(';', 1)[0];
      const { nonce } = JSON.parse(a.text);
      const report = snpReport(amdPlatform, kbsReportData(nonce, jwk, ''));
      const body = JSON.stringify({
        'runtime-data': { nonce, 'tee-pubkey': jwk },
        'tee-evidence': encodeTeeEvidence('snp', report, { snpCertificates: [{ type: 'VCEK', der: amdPlatform.vcekDer }] }),
      });
      const t = check(await call('POST', '/kbs/v0/attest', { cookie }, body), 'attest');
      const t2 = performance.now();
      const r = check(await call('GET', `/kbs/v0/resource/sealed-tensors/data-key/${KEY_ID}`, { cookie }), 'resource');
      await open(r, privateKey);
      const t3 = performance.now();
      phases.auth.push(t1 - t0);
      phases.attest.push(t2 - t1);
      phases.resource.push(t3 - t2);
      return { token: JSON.parse(t.text).token, privateKey, bytes: body.length };
    },
    async bearer(s) {
      const r = check(await call('GET', `/kbs/v0/resource/sealed-tensors/data-key/${KEY_ID}`, { authorization: `Bearer ${s.token}` }), 'resource');
      await open(r, s.privateKey);
    },
  };
}

const pct = (sorted, p) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]);
const round = (v, d = 1) => Math.round(v * 10 ** d) / 10 ** d;

/**
 * One measurement on a fresh broker (each profile and CPU figure is one run's). Closed loop (`rate`
 * undefined): every client starts its next release as soon as its last one is done, so it shows the
 * most the pair sustains, and latency is queueing: clients / throughput (Little's law). Open loop:
 * the clients share an offered `rate` (releases/s), each on a fixed schedule, and latency counts
 * from the scheduled start, so a broker that falls behind shows it (no coordinated omission).
 */
async function measure({ mode, n, rate, seconds, plain, cpuProf, tls, ca, lib, amdPlatform, variant }) {
  const child = fork(here, ['--broker'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = (type) =>
    new Promise((resolve, reject) => {
      const onExit = (code) => reject(new Error(`broker exited (${code}) while waiting for ${type}`));
      const onMsg = (m) => {
        if (m.type !== type) return;
        child.off('message', onMsg);
        child.off('exit', onExit);
        resolve(m);
      };
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
  const readyP = next('ready');
  child.send({ variant, tls: plain ? undefined : tls, dataKey: DATA_KEY.toString('hex'), arkFingerprint: amdPlatform.arkFingerprint, issuers: amdPlatform.issuers, measurement: amdPlatform.measurement.toString('hex') });
  const { url } = await readyP;
  const makeCall = requester(url, ca);
  const clients = await Promise.all(Array.from({ length: n }, () => client(makeCall(), lib, amdPlatform)));
  // Warm-up, untimed: connections, lazy imports, JIT; bearer mode keeps each client's session.
  const sessions = [];
  for (const c of clients) sessions.push(await c.rcar());
  await Promise.all(clients.map((c, i) => (mode === 'rcar' ? c.rcar() : c.bearer(sessions[i]))));
  for (const c of clients) for (const k of Object.keys(c.phases)) c.phases[k].length = 0;

  const profilePath = join(resultsDir, `release-${variant}-${mode}-${n}${rate ? `-at-${rate}` : ''}-${Date.now()}.cpuprofile`);
  if (cpuProf) {
    const started = next('profile-started');
    child.send({ type: 'profile-start' });
    await started;
  }
  child.send({ type: 'stats' });
  const before = await next('stats');
  const cpu0 = process.cpuUsage();
  // Releases that complete inside the window count (their latencies too); the ones in flight at
  // its end finish uncounted, so the drain does not stretch the window.
  const latencies = [];
  let all = 0;
  let missed = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  const one = (c, i) => (mode === 'rcar' ? c.rcar() : c.bearer(sessions[i]));
  await Promise.all(
    clients.map(async (c, i) => {
      if (rate === undefined) {
        while (performance.now() < end) {
          const t0 = performance.now();
          await one(c, i);
          all++;
          const t1 = performance.now();
          if (t1 <= end) latencies.push(t1 - t0);
        }
        return;
      }
      const interval = (1000 * n) / rate;
      for (let at = start + (i * interval) / n; at < end; at += interval) {
        const now = performance.now();
        if (now >= end) {
          missed++; // scheduled inside the window, never started: the broker fell behind
          continue;
        }
        if (at > now) await new Promise((r) => setTimeout(r, at - now));
        await one(c, i);
        all++;
        const t1 = performance.now();
        if (t1 <= end) latencies.push(t1 - at);
      }
    }),
  );
  const cpu1 = process.cpuUsage(cpu0);
  child.send({ type: 'stats' });
  const after = await next('stats');
  if (cpuProf) {
    const stopped = next('profile-stopped');
    child.send({ type: 'profile-stop', path: profilePath });
    await stopped;
  }
  const stoppedP = next('stopped');
  child.send({ type: 'stop' });
  await stoppedP;
  await new Promise((r) => child.once('exit', r));
  for (const c of clients) c.call.agent.destroy();

  latencies.sort((a, b) => a - b);
  const count = latencies.length;
  const released = after.releases - before.releases;
  const brokerMs = (after.cpuMs - before.cpuMs) / Math.max(1, released);
  const phaseP50 = {};
  if (mode === 'rcar') for (const k of ['auth', 'attest', 'resource']) phaseP50[k] = round(pct(clients.flatMap((c) => c.phases[k]).sort((a, b) => a - b), 50), 2);
  const row = {
    variant,
    mode,
    clients: n,
    offeredPerSecond: rate ?? null,
    releases: count,
    perSecond: round(count / seconds),
    p50Ms: round(pct(latencies, 50), 2),
    p99Ms: round(pct(latencies, 99), 2),
    brokerCpuMsPerRelease: round(brokerMs, 2),
    /** Main-thread busy ms per release (event loop utilisation; wall time, so inflated on a loaded machine like the rest). */
    brokerMainMsPerRelease: round((after.mainActiveMs - before.mainActiveMs) / Math.max(1, released), 2),
    /** What one core would sustain if the broker had it alone: 1000 / its CPU ms per release. */
    brokerCapacityPerCore: round(1000 / brokerMs, 0),
    clientCpuMsPerRelease: round((cpu1.user + cpu1.system) / 1000 / Math.max(1, all), 2),
    ...(mode === 'rcar' ? { phaseP50Ms: phaseP50 } : {}),
    ...(rate !== undefined ? { missed } : {}),
    denied: after.verdicts.deny - before.verdicts.deny,
    /** TLS handshakes (or TCP connections with --http) during the timed window: 0 when every client kept its connection. */
    newConnections: after.handshakes - before.handshakes,
    loadavg1: round(loadavg()[0], 2),
    brokerErrors: after.errors,
  };
  if (released !== all) row.mismatch = `broker released ${released}, clients opened ${all}`;
  console.log(`[${variant}] ${mode} x${n}${rate ? ` at ${rate}/s offered` : ''}: ${row.perSecond}/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms, broker CPU ${row.brokerCpuMsPerRelease} ms/release (main thread busy ${row.brokerMainMsPerRelease})${mode === 'rcar' ? `, phases p50 ${JSON.stringify(phaseP50)}` : ''}${rate ? `, ${missed} never started` : ''}, ${row.newConnections} new connections, load ${row.loadavg1}`);
  return row;
}

/**
 * `--verify-cost N`: the evidence verification alone, in this process, N reports per variant per
 * round, variants interleaved over three rounds (medians): CPU ms per verification of the process
 * (worker threads included) and of the main thread alone (Linux: /proc/self/task/PID/stat). CPU
 * time, unlike releases/s, stays comparable on a loaded machine.
 *   nocache   every chain verified by signature (the link cache cleared before each report)
 *   cache     as shipped: the chain's signatures verified once
 *   threads1  through the verifier pool (one worker thread), one report at a time
 */
async function verifyCost(amdPlatform, n) {
  const { verifyEvidence } = await import('../dist/attestation/verify.js');
  const { signatureLinks } = await import('../dist/attestation/link-cache.js');
  const { VerifyPool, poolStatics } = await import('../dist/broker/verify-pool.js');
  const issuers = amdPlatform.issuers.map((pem) => new X509Certificate(pem));
  const vcek = new X509Certificate(Buffer.from(amdPlatform.vcekDer));
  const roots = [amdPlatform.arkFingerprint];
  const reports = Array.from({ length: 64 }, () => snpReport(amdPlatform, randomBytes(64)));
  const pool = new VerifyPool(poolStatics({ certificates: issuers }), { threads: 1 });
  const tick = 1000 / 100; // ms per clock tick (getconf CLK_TCK: 100 on Linux)
  const mainMs = () => {
    const st = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * tick; // utime, stime
  };
  const check = (v) => {
    if (v.claims.tee !== 'snp') throw new Error('verification did not give SNP claims');
  };
  const variants = {
    nocache: async (r) => {
      signatureLinks.clear();
      check(await verifyEvidence('snp', r, { now: new Date(), trustedRoots: roots, certificates: [...issuers, vcek] }));
    },
    cache: async (r) => check(await verifyEvidence('snp', r, { now: new Date(), trustedRoots: roots, certificates: [...issuers, vcek] })),
    threads1: async (r) => check(await pool.verify({ type: 'snp', evidence: r, certificates: [amdPlatform.vcekDer], nowMs: Date.now(), trustedRoots: roots })),
  };
  for (const f of Object.values(variants)) for (const r of reports.slice(0, 16)) await f(r); // warm-up
  const res = {};
  for (let round = 0; round < 3; round++) {
    for (const [name, f] of Object.entries(variants)) {
      const c0 = process.cpuUsage();
      const m0 = mainMs();
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await f(reports[i % reports.length]);
      const c = process.cpuUsage(c0);
      (res[name] ??= []).push({ processMs: (c.user + c.system) / 1000 / n, mainMs: (mainMs() - m0) / n, wallMs: (performance.now() - t0) / n });
    }
  }
  await pool.close();
  const med = (v) => v.slice().sort((a, b) => a - b)[1];
  console.log(`\nSEV-SNP evidence verification alone (report signature, VCEK -> ASK -> ARK, TCB/hwID/product), ${n} reports x 3 rounds, medians; load ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
  console.log('| variant | process CPU ms/verification | main thread CPU ms/verification | wall ms/verification |');
  console.log('|---|---:|---:|---:|');
  for (const [name, v] of Object.entries(res)) console.log(`| ${name} | ${round(med(v.map((x) => x.processMs)), 3)} | ${round(med(v.map((x) => x.mainMs)), 3)} | ${round(med(v.map((x) => x.wallMs)), 3)} |`);
  return res;
}

async function main() {
  const seconds = Number(opt('seconds', '5'));
  const clientCounts = opt('clients', '1,16,64').split(',').map(Number);
  const modes = opt('modes', 'rcar,bearer').split(',');
  const rate = Number(opt('rate', '300'));
  const plain = args.includes('--http');
  const cpuProf = args.includes('--cpu-prof');
  const variants = opt('variants', 'default').split(',');
  const repeat = Number(opt('repeat', '1'));
  mkdirSync(resultsDir, { recursive: true });

  const lib = {
    ...(await import('../dist/protocol/binding.js')),
    ...(await import('../dist/protocol/evidence.js')),
    ...(await import('jose')),
  };
  process.stdout.write('forging an AMD chain (RSA-4096 ARK/ASK, P-384 VCEK) ... ');
  const t = performance.now();
  const amdPlatform = await forgeAmd();
  const { tls, ca } = await tlsMaterial();
  console.log(`${Math.round(performance.now() - t)} ms`);

  if (args.includes('--verify-cost')) {
    await verifyCost(amdPlatform, Number(opt('verify-cost', '300')));
    return;
  }
  const common = { seconds, plain, cpuProf, tls, ca, lib, amdPlatform };
  const rows = [];
  // Variants are interleaved row by row and repeated, so a shared machine's swings hit them alike.
  for (let rep = 0; rep < repeat; rep++) {
    for (const mode of modes) {
      const shapes = clientCounts.map((n) => ({ n }));
      // The target's shape: 64 clients sharing the offered rate.
      if (rate > 0) shapes.push({ n: 64, rate });
      for (const shape of shapes) for (const variant of variants) rows.push({ ...(await measure({ ...common, mode, ...shape, variant })), repeat: rep });
    }
  }

  const name = { rcar: 'full RCAR per release', bearer: 'resource only, Bearer token' };
  console.log(`\nKey releases, SEV-SNP evidence (${plain ? 'HTTP' : 'HTTPS'} on loopback, ${seconds} s each; ${availableParallelism()} cores ${cpus()[0]?.model ?? ''}, load ${loadavg().map((l) => l.toFixed(2)).join(' ')})\n`);
  console.log('| variant | mode | clients | load | releases/s | p50 ms | p99 ms | broker CPU ms/release | broker main thread busy ms/release | broker alone, releases/s/core | client CPU ms/release | new connections | load avg |');
  console.log('|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const load = r.offeredPerSecond ? `${r.offeredPerSecond}/s offered${r.missed ? `, ${r.missed} never started` : ''}` : 'closed loop';
    console.log(`| ${r.variant} | ${name[r.mode]} | ${r.clients} | ${load} | ${r.perSecond} | ${r.p50Ms} | ${r.p99Ms} | ${r.brokerCpuMsPerRelease} | ${r.brokerMainMsPerRelease} | ${r.brokerCapacityPerCore} | ${r.clientCpuMsPerRelease} | ${r.newConnections} | ${r.loadavg1} |`);
  }
  // Targets (issue 8): >= 300 releases/s, and p99 < 50 ms at 64 clients. In a closed loop latency
  // is queueing: 64 clients at X/s wait 64/X s each (Little's law), so p99 < 50 ms there needs more
  // than 1280/s. The p99 target is therefore read at 300/s offered (open loop), the throughput
  // target at the closed loop's most; both are printed. Medians over --repeat.
  const median = (v) => {
    const x = v.slice().sort((a, b) => a - b);
    const m = Math.floor(x.length / 2);
    return x.length % 2 ? x[m] : round((x[m - 1] + x[m]) / 2, 2);
  };
  console.log(`\nTargets (medians of ${repeat} run(s) per variant). Closed loop: 64 clients each start the next release when the last ends, so latency = 64 / throughput (Little's law; p99 < 50 ms would need > 1280/s there): it gives the most releases/s. Open loop: 64 clients share ${rate}/s offered on a fixed schedule, latency from the scheduled start: it gives p99 at the target rate.`);
  const targets = {};
  for (const variant of variants) {
    const closed = rows.filter((r) => r.variant === variant && r.mode === 'rcar' && r.clients === 64 && r.offeredPerSecond === null);
    const open = rows.filter((r) => r.variant === variant && r.mode === 'rcar' && r.clients === 64 && r.offeredPerSecond === 300);
    const t = (targets[variant] = {});
    if (closed.length) t.releasesPerSecond = { value: median(closed.map((r) => r.perSecond)), target: 300, met: median(closed.map((r) => r.perSecond)) >= 300 };
    if (open.length) {
      const p99 = median(open.map((r) => r.p99Ms));
      const got = median(open.map((r) => r.perSecond));
      t.p99MsAt300PerSecond = { value: p99, achievedPerSecond: got, target: 50, met: p99 < 50 && got >= 0.97 * 300 && open.every((r) => r.missed === 0) };
    }
    if (t.releasesPerSecond) console.log(`[${variant}] full RCAR, 64 clients, closed loop: >= 300 releases/s: ${t.releasesPerSecond.value}/s, ${t.releasesPerSecond.met ? 'met' : 'NOT met'}`);
    if (t.p99MsAt300PerSecond) console.log(`[${variant}] full RCAR, 64 clients, 300/s offered (open loop): p99 < 50 ms: ${t.p99MsAt300PerSecond.value} ms at ${t.p99MsAt300PerSecond.achievedPerSecond}/s achieved, ${t.p99MsAt300PerSecond.met ? 'met' : 'NOT met'}`);
  }
  for (const r of rows) if (r.brokerErrors.length || r.denied || r.mismatch) console.log(`warning: [${r.variant}] ${r.mode} x${r.clients}: ${r.denied} denied, ${r.brokerErrors.length} broker errors ${r.mismatch ?? ''} ${r.brokerErrors[0] ?? ''}`);
  const out = join(resultsDir, `release-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(out, JSON.stringify({ node: process.version, cores: availableParallelism(), cpu: cpus()[0]?.model, loadavg: loadavg(), seconds, transport: plain ? 'http' : 'https', rows, targets }, null, 2));
  console.log(`\nwritten ${out}`);
}

if (args[0] === '--broker') await brokerChild();
else await main();
