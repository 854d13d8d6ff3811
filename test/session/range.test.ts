// The session reading sealed models over HTTP range requests: nginx (Debian's package; .ci/run
// installs it) serves the sealed files, the project's own broker (startBroker, in-memory stores,
// HTTPS with a pinned CA) releases the key to a simulated TEE. What nginx served is counted in its
// own access log: a selection fetches only its chunks, and a model the release does not list is
// refused on its public header, before any tensor chunk is fetched.
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { startBroker, type RunningBroker } from '../../src/broker/server.js';
import { sealModelDirectory } from '../../src/seal/seal-model.js';
import { EnclaveSession } from '../../src/session/enclave-session.js';
import { SecureBuffer } from '../../src/native/secure-buffer.js';
import { HttpRangeSource, PROBE_BYTES } from '../../src/sources/http.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from '../broker/memory.js';
import { signingKey, testCertificates, SIM_MEASUREMENT } from '../broker/fixture.js';
import { handles, made } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { bindingOf, lockedBytes } from './setup.js';
import { CHUNK, INDEX_NAME, SHARDS, sealFixtures, shardName, tensorChunkRange } from '../sources/models.js';
import { nginxBinary, startNginx, type LogEntry, type Nginx } from '../sources/nginx.js';
import { startRangeServer, type RangeServer } from '../sources/range-server.js';
import { runCli } from '../helpers/cli.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const binary = nginxBinary();
if (!binary) console.warn('test/session/range.test.ts: nginx tests SKIPPED, no nginx binary (apt-get install nginx-light; .ci/run installs it)');

const KEY_ID = 'test-key'; // what sealFixtures seals under

describe('EnclaveSession over HTTP range requests', () => {
  const dir = tempDir('st-session-range-');
  let data: Map<string, Uint8Array>;
  let www: string;
  let nginx: Nginx | null = null;
  let broker: RunningBroker;
  let ca: string;
  let tee: SimulatedTee;
  let simKeyFile: string;
  let caFile: string;

  beforeAll(async () => {
    chmodSync(dir, 0o711); // nginx's workers (nobody, when root) pass through to www/; plain/ stays 0700
    ({ data, www } = await sealFixtures(dir));
    // The same tensors sealed again under the same key: another bundle, never registered at the broker.
    await sealModelDirectory(join(dir, 'plain', 'sharded'), join(www, 'other'), { dataKey: new Uint8Array(TEST_KEY), keyId: KEY_ID, chunkSize: CHUNK });
    const simKey = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    simKeyFile = join(dir, 'sim.key');
    writeFileSync(simKeyFile, simKey, { mode: 0o600 });
    tee = new SimulatedTee({ rootKey: SimulatedTee.keyFrom(simKey) });
    const keystore = new MemoryKeystore();
    const policies = new MemoryPolicies();
    policies.policies.set('default', validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } } } }));
    const models = [await bindingOf(join(www, 'sharded')), await bindingOf(join(www, 'model.sealed'))];
    await keystore.add(new Uint8Array(TEST_KEY), { keyId: KEY_ID, models, policy: 'default' });
    let tls;
    ({ tls, ca } = await testCertificates());
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, ca);
    broker = await startBroker({
      keystore,
      policies,
      audit: new MemoryAudit(),
      signingKey: await signingKey(),
      receiptKey: await signingKey('receipt'),
      host: '127.0.0.1',
      port: 0,
      tls,
      allowSimulated: true,
      simulatedRoots: [tee.rootFingerprint],
    });
    if (binary) {
      const state = join(dir, 'nginx');
      mkdirSync(state);
      nginx = await startNginx(binary, www, state);
    }
  });
  afterAll(async () => {
    await nginx?.stop();
    await broker?.close();
  });

  const establish = (): Promise<EnclaveSession> => EnclaveSession.establish({ broker: broker.url, ca, provider: tee, keys: [KEY_ID] });
  const url = (path: string): string => new URL(path, nginx!.url).href;
  const size = (path: string): number => statSync(join(www, path)).size;
  /** The log entries of the requests made while `fn` ran (nginx logs a request once it has answered it). */
  async function logged<T>(requests: number, fn: () => Promise<T>): Promise<{ value: T; entries: LogEntry[] }> {
    const before = nginx!.log().length;
    const value = await fn();
    const entries = (await nginx!.waitForLog(before + requests)).slice(before);
    return { value, entries };
  }

  it.skipIf(!binary)('loads a sharded model over HTTP byte-identical to the original safetensors; the index read twice (manifest check, reader), each shard once', async () => {
    const session = await establish();
    try {
      const baseline = lockedBytes();
      const { value: names, entries } = await logged(2 + 2 * SHARDS.length, async () => {
        const model = await session.open(url('sharded/' + INDEX_NAME), { allowHttp: true, threads: 2 });
        expect(model.info.sharded).toBe(true);
        expect(model.info.path).toBe(url('sharded/' + INDEX_NAME));
        const seen: string[] = [];
        for await (const t of model.tensors()) {
          expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(t.info.name)!)), t.info.name).toBe(true);
          seen.push(t.info.name);
          t.release();
        }
        model.close();
        return seen;
      });
      expect(names.sort()).toEqual(SHARDS.flat().map((t) => t.name).sort());
      expect(lockedBytes()).toBe(baseline);
      // loadAll: one job per shard, the same bytes; released by release() or by close().
      const model = await session.open(url('sharded/' + INDEX_NAME), { allowHttp: true, only: (n) => n !== 'flag' });
      const progress: number[] = [];
      model.on('progress', (p) => progress.push(p.tensors));
      const all = await model.loadAll();
      expect([...all.tensors.keys()].sort()).toEqual(model.names().sort());
      expect(model.names()).not.toContain('flag');
      for (const [n, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(n)!)), n).toBe(true);
      expect(progress).toEqual([model.names().length]);
      const loaded = lockedBytes();
      expect(loaded).toBeGreaterThan(baseline);
      const view = all.tensors.get(model.names()[0]!)!.bytes;
      model.close(); // wipes what loadAll handed out; the session keeps the (wiped) memory for its next load
      expect(view.byteLength).toBe(0); // views from before are detached
      expect(lockedBytes()).toBe(loaded);
      all.release(); // idempotent after close
      // The next load reuses it: no more memory locked.
      const again = await session.open(url('sharded/' + INDEX_NAME), { allowHttp: true, only: (n) => n !== 'flag' });
      const all2 = await again.loadAll();
      for (const [n, t] of all2.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(n)!)), n).toBe(true);
      expect(lockedBytes()).toBe(loaded);
      again.close();
      // The index twice (the session's manifest check on its public header, then the reader), each shard opened once.
      const uris = entries.map((e) => e.uri);
      expect(uris.filter((u) => u === `/sharded/${INDEX_NAME}`)).toHaveLength(2);
      for (let i = 0; i < SHARDS.length; i++) expect(uris).toContain(`/sharded/${shardName(i)}`);
      expect(entries.every((e) => e.status === 206)).toBe(true);
      session.close(); // unmaps what it kept
      expect(lockedBytes()).toBe(baseline);
    } finally {
      session.close();
    }
  });

  it.skipIf(!binary)('only: [one tensor] fetches the index, that shard\'s first bytes and that tensor\'s chunks; nothing of the other shards', async () => {
    const name = 'layers.0.w';
    const shard = shardName(1);
    const { first, last } = await tensorChunkRange(join(www, 'sharded', shard), name);
    expect(first).toBeGreaterThanOrEqual(PROBE_BYTES); // past the first request: a request of its own
    const session = await establish();
    try {
      const { entries } = await logged(4, async () => {
        const model = await session.open(url('sharded/' + INDEX_NAME), { allowHttp: true, only: [name] });
        expect(model.names()).toEqual([name]);
        for await (const t of model.tensors()) {
          expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(name)!))).toBe(true);
          t.release();
        }
        await expect(model.tensor('layers.0.big')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
        model.close();
      });
      const indexSize = size('sharded/' + INDEX_NAME);
      expect(entries.map((e) => ({ uri: e.uri, range: e.range, body: e.body }))).toEqual([
        { uri: `/sharded/${INDEX_NAME}`, range: `bytes=0-${PROBE_BYTES - 1}`, body: indexSize },
        { uri: `/sharded/${INDEX_NAME}`, range: `bytes=0-${PROBE_BYTES - 1}`, body: indexSize },
        { uri: `/sharded/${shard}`, range: `bytes=0-${PROBE_BYTES - 1}`, body: PROBE_BYTES },
        { uri: `/sharded/${shard}`, range: `bytes=${first}-${last}`, body: last - first + 1 },
      ]);
      const served = entries.reduce((n, e) => n + e.body, 0);
      const whole = [INDEX_NAME, ...SHARDS.map((_, i) => shardName(i))].reduce((n, f) => n + size('sharded/' + f), 0);
      console.log(`session only=[${name}]: ${served} bytes served of ${whole} for the whole model`);
    } finally {
      session.close();
    }
  });

  it.skipIf(!binary)('a model the release does not list is refused (ERR_POLICY) on its public header: no shard, no tensor chunk fetched', async () => {
    const session = await establish();
    try {
      const before = lockedBytes();
      const { value: err, entries } = await logged(1, () => session.open(url('other/' + INDEX_NAME), { allowHttp: true }).catch((e: unknown) => e));
      expect(err).toMatchObject({ code: 'ERR_POLICY' });
      expect((err as Error).message).toMatch(/not registered for this key at the broker/);
      await new Promise((r) => setTimeout(r, 100)); // a request after the refusal would be logged by now
      const after = nginx!.log().slice(-entries.length - 1);
      // One request: the index's public header and sealed table (the index holds no tensor data).
      expect(entries).toEqual([{ uri: `/other/${INDEX_NAME}`, status: 206, range: `bytes=0-${PROBE_BYTES - 1}`, body: size('other/' + INDEX_NAME), sent: entries[0]!.sent }]);
      expect(after.filter((e) => e.uri.startsWith('/other/'))).toHaveLength(1);
      expect(lockedBytes()).toBe(before);
    } finally {
      session.close();
    }
  });

  it.skipIf(!binary)('loadAll({ into }): a single-file model into a caller\'s secure buffer, wiped (not freed) on release; refused for a sharded model', async () => {
    const session = await establish();
    try {
      const model = await session.open(url('model.sealed'), { allowHttp: true });
      const into = SecureBuffer.allocate(model.byteLength + 10);
      try {
        into.bytes.fill(0xaa);
        const all = await model.loadAll({ into });
        for (const [n, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(n)!)), n).toBe(true);
        const one = all.tensors.get('head')!;
        one.release(); // one tensor's release is the load's (one buffer)
        expect(() => one.bytes).toThrow(/released/);
        expect(into.released).toBe(false);
        expect(into.bytes.subarray(0, all.byteLength).every((b) => b === 0)).toBe(true);
        expect(into.bytes[all.byteLength]).toBe(0xaa);
        model.close();
        expect(into.released).toBe(false);
      } finally {
        into.release();
      }
      const sharded = await session.open(url('sharded/' + INDEX_NAME), { allowHttp: true });
      const buf = SecureBuffer.allocate(sharded.byteLength);
      await expect(sharded.loadAll({ into: buf })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
      buf.release();
      sharded.close();
    } finally {
      session.close();
    }
  });

  it('loadAll keeps the session\'s rules: a throwing progress listener gets nothing kept; a closed session loads nothing', async () => {
    const server = await startRangeServer(new Uint8Array(readFileSync(join(www, 'model.sealed'))));
    const session = await establish();
    try {
      const baseline = lockedBytes();
      const model = await session.open(new URL('model.sealed', server.url), { allowHttp: true });
      model.on('progress', () => {
        throw new Error('listener failed');
      });
      await expect(model.loadAll()).rejects.toThrow('listener failed');
      expect(model.closed).toBe(true);
      expect(lockedBytes()).toBe(baseline);
      const later = await session.open(new URL('model.sealed', server.url), { allowHttp: true });
      session.close();
      await expect(later.loadAll()).rejects.toMatchObject({ code: 'ERR_RELEASED' });
      expect(later.closed).toBe(true);
    } finally {
      session.close();
      await server.close();
    }
  });

  it('a source cut short mid-load: ERR_IO, the model closed, every tensor it handed out wiped, locked memory back', async () => {
    const file = new Uint8Array(readFileSync(join(www, 'model.sealed')));
    const server: RangeServer = await startRangeServer(file);
    // The probes (manifest check, reader: from byte 0) go through; every read of tensor chunks is cut halfway.
    server.bend = (a, r) => (r.first > 0 ? { ...a, stop: { after: Math.floor(a.body.length / 2), how: 'cut' } } : a);
    const session = await establish();
    try {
      const baseline = lockedBytes();
      // HTTP options for a path, or for a source made elsewhere, would be silently ignored: refused.
      await expect(session.open(join(www, 'model.sealed'), { allowHttp: true })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
      const given = new HttpRangeSource(new URL('model.sealed', server.url), { allowHttp: true });
      await expect(session.open(given, { headers: { authorization: 'x' } })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
      const model = await session.open(new URL('model.sealed', server.url), { allowHttp: true, windowBytes: 8192 });
      const handed: { release(): void }[] = [];
      const err = await (async () => {
        for await (const t of model.tensors()) handed.push(t);
      })().catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'ERR_IO' });
      expect(model.closed).toBe(true);
      expect(lockedBytes()).toBe(baseline);
      await expect(model.tensor('head')).rejects.toMatchObject({ code: 'ERR_RELEASED' });
      // The batched path: the same.
      const again = await session.open(new URL('model.sealed', server.url), { allowHttp: true });
      await expect(again.loadAll()).rejects.toMatchObject({ code: 'ERR_IO' });
      expect(again.closed).toBe(true);
      expect(lockedBytes()).toBe(baseline);
    } finally {
      session.close();
      await server.close();
    }
    expect(made.every((e) => e.released) && handles.every((h) => h.released)).toBe(true);
  });

  it.skipIf(!binary)('CLI: load URL --only reads only those tensors; --source-ca/--allow-http refused for a path', async () => {
    const args = ['--broker', broker.url, '--ca', caFile, '--simulated', '--simulated-key', simKeyFile];
    const name = 'lm_head';
    const { value: r, entries } = await logged(5, () => runCli('load', url('sharded/' + INDEX_NAME), ...args, '--allow-http', '--only', name, '--json'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out) as { verified: boolean; tensorCount: number; tensors: { name: string; sha256: string; file: string }[] };
    expect(out.verified).toBe(true);
    expect(out.tensors.map((t) => [t.name, t.file])).toEqual([[name, shardName(2)]]);
    expect(out.tensors[0]!.sha256).toBe((await import('node:crypto')).createHash('sha256').update(data.get(name)!).digest('hex'));
    // The CLI's own look at the header (the key id), the session's manifest check, the reader; then the one shard.
    expect(entries.filter((e) => e.uri.includes(shardName(0)) || e.uri.includes(shardName(1)))).toEqual([]);
    const bad = await runCli('load', join(www, 'model.sealed'), ...args, '--allow-http');
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/--source-ca and --allow-http apply to an http\(s\) URL/);
  });
});
