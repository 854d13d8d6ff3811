// The HTTP range source against a real web server: nginx (Debian's package; .ci/run installs it),
// started by the test on a free loopback port. Tensors loaded over HTTP by the hardened reader are
// byte-identical to the originals, and loading one tensor of a sharded model fetches only the index,
// that tensor's shard's first bytes and that tensor's chunks: counted in nginx's own access log.
import { chmodSync, copyFileSync, mkdirSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { NativeSealedFileReader } from '../../src/reader/native-file.js';
import { HttpRangeSource } from '../../src/sources/http.js';
import { PROBE_BYTES } from '../../src/sources/http.js';
import { importKey, type NativeKeyHandle } from '../../src/native/key.js';
import { vmLckBytes } from '../native/helpers.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { INDEX_NAME, SHARDS, sealFixtures, shardName, tensorChunkRange } from './models.js';
import { makeServerPki } from './pki.js';
import { nginxBinary, startNginx, type LogEntry, type Nginx } from './nginx.js';

const binary = nginxBinary();
if (!binary) console.warn('test/sources/nginx.test.ts: SKIPPED, no nginx binary (apt-get install nginx-light; .ci/run installs it)');

describe.skipIf(!binary)('HTTP range source against nginx', () => {
  const dir = tempDir('st-nginx-');
  let nginx: Nginx;
  let data: Map<string, Uint8Array>;
  let www: string;
  let key: NativeKeyHandle;

  beforeAll(async () => {
    chmodSync(dir, 0o711); // nginx's workers (nobody, when root) pass through to www/; plain/ stays 0700
    ({ data, www } = await sealFixtures(dir));
    const state = join(dir, 'nginx');
    mkdirSync(state);
    nginx = await startNginx(binary!, www, state);
    key = importKey(new Uint8Array(TEST_KEY));
  });
  afterAll(async () => {
    key?.release();
    await nginx?.stop();
  });

  const source = (path: string): HttpRangeSource => new HttpRangeSource(new URL(path, nginx.url), { allowHttp: true });
  /** The log entries of the requests made while `fn` ran. */
  async function logged<T>(requests: number, fn: () => Promise<T>): Promise<{ value: T; entries: LogEntry[] }> {
    const before = nginx.log().length;
    const value = await fn();
    const entries = (await nginx.waitForLog(before + requests)).slice(before);
    return { value, entries };
  }
  const size = (path: string): number => statSync(join(www, path)).size;

  it('a single-file model over HTTP: every tensor byte-identical, the same verdicts as from the file', async () => {
    const model = await NativeSealedModelReader.open(source('model.sealed'), key, { threads: 2 });
    try {
      const all = await model.loadAll();
      for (const t of model.tensors()) expect(Buffer.from(all.tensors.get(t.name)!.bytes).equals(Buffer.from(data.get(t.name)!)), t.name).toBe(true);
      all.release();
      const one = await model.readTensor('head');
      expect(Buffer.from(one.bytes).equals(Buffer.from(data.get('head')!))).toBe(true);
      one.release();
      const fromFile = await NativeSealedModelReader.open(join(www, 'model.sealed'), key);
      expect(await model.verifyOrThrow({ plainSha256: true })).toEqual(await fromFile.verifyOrThrow({ plainSha256: true }));
      expect(model.tensors()).toEqual(fromFile.tensors());
      fromFile.close();
    } finally {
      model.close();
    }
  });

  it('windows smaller than a chunk still feed whole chunks; one range request per contiguous span', async () => {
    const { value: checks, entries } = await logged(2, async () => {
      const file = await NativeSealedFileReader.open(source('model.sealed'), key, { windowBytes: 1, threads: 3 });
      try {
        const loaded = await file.loadAll();
        for (const [name, t] of loaded.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(name)!)), name).toBe(true);
        loaded.release();
        return file.bytesFetched;
      } finally {
        file.close();
      }
    });
    const total = size('model.sealed');
    // The first 64 KiB (header, table, first chunks), then the rest of the file in one request.
    expect(entries.map((e) => [e.uri, e.status, e.range])).toEqual([
      ['/model.sealed', 206, `bytes=0-${PROBE_BYTES - 1}`],
      ['/model.sealed', 206, `bytes=${PROBE_BYTES}-${total - 1}`],
    ]);
    expect(checks).toBe(total);
    expect(entries.reduce((n, e) => n + e.body, 0)).toBe(total);
  });

  it('a whole sharded model over HTTP: index and every shard fetched, every tensor byte-identical', async () => {
    const files = [INDEX_NAME, ...SHARDS.map((_, i) => shardName(i))];
    const { value: names, entries } = await logged(files.length * 2 - 1, async () => {
      const model = await NativeSealedModelReader.open(source('sharded/' + INDEX_NAME), key, { threads: 2 });
      try {
        expect(model.sharded).toBe(true);
        const all = await model.loadAll();
        for (const [name, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(name)!)), name).toBe(true);
        all.release();
        return model.tensors().map((t) => t.name);
      } finally {
        model.close();
      }
    });
    expect(names.sort()).toEqual(SHARDS.flat().map((t) => t.name).sort());
    const served = entries.reduce((n, e) => n + e.body, 0);
    const whole = files.reduce((n, f) => n + size('sharded/' + f), 0);
    // Every byte once: each shard's first 64 KiB, then the rest of it; the index fits in its first request.
    expect(served).toBe(whole);
    console.log(`whole sharded model: ${served} bytes served by nginx in ${entries.length} requests (files: ${whole} bytes)`);
  });

  it('one tensor of a sharded model: only the index, its shard\'s first bytes and that tensor\'s chunks are fetched', async () => {
    const name = 'layers.0.w';
    const shard = shardName(1);
    const { first, last } = await tensorChunkRange(join(www, 'sharded', shard), name);
    expect(first).toBeGreaterThanOrEqual(PROBE_BYTES); // past the first request: a request of its own
    const { entries } = await logged(3, async () => {
      const model = await NativeSealedModelReader.open(source('sharded/' + INDEX_NAME), key, { only: [name] });
      try {
        expect(model.tensors().map((t) => t.name)).toEqual([name]);
        expect(model.files.map((f) => f.name)).toEqual([shard]);
        const t = await model.readTensor(name);
        expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(name)!))).toBe(true);
        t.release();
        await expect(model.readTensor('layers.0.big')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
      } finally {
        model.close();
      }
    });
    const indexSize = size('sharded/' + INDEX_NAME);
    expect(indexSize).toBeLessThan(PROBE_BYTES);
    expect(entries.map((e) => ({ uri: e.uri, status: e.status, range: e.range, body: e.body }))).toEqual([
      { uri: `/sharded/${INDEX_NAME}`, status: 206, range: `bytes=0-${PROBE_BYTES - 1}`, body: indexSize },
      { uri: `/sharded/${shard}`, status: 206, range: `bytes=0-${PROBE_BYTES - 1}`, body: PROBE_BYTES },
      { uri: `/sharded/${shard}`, status: 206, range: `bytes=${first}-${last}`, body: last - first + 1 },
    ]);
    const served = entries.reduce((n, e) => n + e.body, 0);
    const whole = [INDEX_NAME, ...SHARDS.map((_, i) => shardName(i))].reduce((n, f) => n + size('sharded/' + f), 0);
    // The tensor's chunks, plus the header and table (inside the first requests), plus the probe's slack.
    expect(served).toBeLessThanOrEqual(last - first + 1 + indexSize + PROBE_BYTES);
    console.log(`one tensor (${data.get(name)!.length} bytes, chunks ${last - first + 1} bytes): ${served} bytes served of ${whole} for the whole model`);
  });

  it('a predicate selects tensors across shards; unselected shards are never requested', async () => {
    const { value, entries } = await logged(3, async () => {
      const model = await NativeSealedModelReader.open(source('sharded/' + INDEX_NAME), key, { only: (n) => n.startsWith('model.') });
      try {
        const all = await model.loadAll();
        const names = [...all.tensors.keys()];
        for (const [n, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(n)!)), n).toBe(true);
        all.release();
        return names;
      } finally {
        model.close();
      }
    });
    expect(value.sort()).toEqual(['model.embed', 'model.norm']);
    expect(new Set(entries.map((e) => e.uri))).toEqual(new Set([`/sharded/${INDEX_NAME}`, `/sharded/${shardName(0)}`]));
  });

  it('an unknown name in only is ERR_NOT_FOUND before any shard is fetched', async () => {
    const before = nginx.log().length;
    await expect(NativeSealedModelReader.open(source('sharded/' + INDEX_NAME), key, { only: ['nope'] })).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    const entries = (await nginx.waitForLog(before + 1)).slice(before);
    expect(entries.map((e) => e.uri)).toEqual([`/sharded/${INDEX_NAME}`]);
  });

  it('nginx 404 is ERR_IO with the status; a file replaced after open (new ETag: If-Match fails) is ERR_INTEGRITY', async () => {
    await expect(NativeSealedModelReader.open(source('missing.sealed'), key)).rejects.toMatchObject({ code: 'ERR_IO', status: 404 });
    copyFileSync(join(www, 'model.sealed'), join(www, 'replaced.sealed'));
    chmodSync(join(www, 'replaced.sealed'), 0o644);
    const model = await NativeSealedModelReader.open(source('replaced.sealed'), key);
    try {
      const later = new Date(Date.now() + 60_000);
      utimesSync(join(www, 'replaced.sealed'), later, later); // nginx's ETag is mtime-size
      const locked = vmLckBytes();
      await expect(model.loadAll()).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
      expect(vmLckBytes()).toBe(locked); // the run's buffers are gone
    } finally {
      model.close();
    }
  });
});

describe.skipIf(!binary)('HTTPS range source against nginx', () => {
  const dir = tempDir('st-nginx-tls-');
  let nginx: Nginx;
  let data: Map<string, Uint8Array>;
  let caPem: string;

  beforeAll(async () => {
    chmodSync(dir, 0o711);
    let www: string;
    ({ data, www } = await sealFixtures(dir));
    const pki = await makeServerPki();
    caPem = pki.caPem;
    const state = join(dir, 'nginx');
    mkdirSync(state);
    nginx = await startNginx(binary!, www, state, pki);
  });
  afterAll(async () => {
    await nginx?.stop();
  });

  it('a sharded model over HTTPS with the server\'s CA as the only trust anchor; without it, ERR_IO', async () => {
    const key = importKey(new Uint8Array(TEST_KEY));
    try {
      const url = new URL('sharded/' + INDEX_NAME, nginx.url);
      const model = await NativeSealedModelReader.open(new HttpRangeSource(url, { ca: caPem }), key, { only: ['lm_head', 'model.norm'] });
      const all = await model.loadAll();
      for (const [name, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(name)!)), name).toBe(true);
      expect([...all.tensors.keys()].sort()).toEqual(['lm_head', 'model.norm']);
      all.release();
      model.close();
      await expect(NativeSealedModelReader.open(new HttpRangeSource(url), key)).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringMatching(/not trusted/) });
    } finally {
      key.release();
    }
  });
});
