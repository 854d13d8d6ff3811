// A range source that lies, changes, stops or stalls: every case ends in a typed error, nothing is
// handed out, and the load's secure memory is wiped and unlocked (observed: the addon's release
// probe scans each released region for non-zero bytes; VmLck accounting returns to where it was).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { NativeSealedFileReader, type NativeReaderOptions } from '../../src/reader/native-file.js';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { HttpRangeSource, PROBE_BYTES, type HttpSourceOptions } from '../../src/sources/http.js';
import { importKey, type NativeKeyHandle } from '../../src/native/key.js';
import { loadAddon } from '../../src/native/addon.js';
import { SecureBuffer } from '../../src/native/secure-buffer.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { vmLckBytes } from '../native/helpers.js';
import { sealFixtures, tensorChunkRange } from './models.js';
import { flipped, startRangeServer, type Answer, type Bend, type RangeServer } from './range-server.js';

const addon = loadAddon();
const dir = tempDir('st-tamper-');
let file: Uint8Array;
let data: Map<string, Uint8Array>;
let head: { first: number; last: number };
let server: RangeServer;
let key: NativeKeyHandle;

beforeAll(async () => {
  const fixtures = await sealFixtures(dir);
  data = fixtures.data;
  const path = join(fixtures.www, 'model.sealed');
  file = new Uint8Array(readFileSync(path));
  head = await tensorChunkRange(path, 'head');
  server = await startRangeServer(file);
  key = importKey(new Uint8Array(TEST_KEY));
  addon._testing.setReleaseProbe(true);
});
afterAll(async () => {
  addon._testing.setReleaseProbe(false);
  key?.release();
  await server?.close();
});
beforeEach(() => {
  server.bend = null;
});

/** Secure bytes the last failed loadBent released (scanned by the probe: all zero). */
let lastScanned = 0;
const later = (bend: (a: Answer) => Answer): Bend => (a, r) => (r.n === 0 ? a : bend(a));
const src = (options: HttpSourceOptions = {}): HttpRangeSource => new HttpRangeSource(server.url, { allowHttp: true, ...options });

/**
 * Opens with honest answers (the first request), then bends every later answer and loads all:
 * the error code, and whether the load's secure memory was wiped and let go.
 */
async function loadBent(bend: Bend, options: NativeReaderOptions = {}, source: HttpSourceOptions = {}): Promise<string> {
  server.bend = null;
  const reader = await NativeSealedFileReader.open(src(source), key, { threads: 2, ...options });
  const first = server.ranges.length;
  server.bend = (a, r) => (r.n < first ? a : bend(a, r));
  const locked = vmLckBytes();
  const probe = addon._testing.releaseProbe();
  try {
    const loaded = await reader.loadAll();
    loaded.release();
    return 'ok';
  } catch (err) {
    expect(vmLckBytes()).toBe(locked); // the run's buffers (destination, per-thread scratch) are unlocked and unmapped
    const after = addon._testing.releaseProbe();
    expect(after.nonzeroBytes - probe.nonzeroBytes).toBe(0);
    lastScanned = after.bytesScanned - probe.bytesScanned;
    return (err as { code?: string }).code ?? String(err);
  } finally {
    reader.close();
  }
}

describe('a range source that misbehaves after the first request', () => {
  it('honest answers load, byte-identical (the control)', async () => {
    expect(await loadBent((a) => a)).toBe('ok');
  });

  it('a flipped ciphertext byte: ERR_INTEGRITY; a tensor whose chunks are intact still reads', async () => {
    const at = head.last - 100; // in head's last chunk, which no other tensor shares
    expect(at).toBeGreaterThan(PROBE_BYTES);
    const bad = flipped(file, at);
    const bend: Bend = (a, r) => (r.first <= at && at <= r.last ? { ...a, body: bad.subarray(r.first, r.last + 1) } : a);
    expect(await loadBent(bend)).toBe('ERR_INTEGRITY');
    expect(await loadBent(bend, { windowBytes: 8192 })).toBe('ERR_INTEGRITY');
    const reader = await NativeSealedFileReader.open(src(), key);
    server.bend = bend;
    const bias = await reader.readTensor('bias');
    expect(Buffer.from(bias.bytes).equals(Buffer.from(data.get('bias')!))).toBe(true);
    bias.release();
    await expect(reader.readTensor('head')).rejects.toMatchObject({ code: 'ERR_INTEGRITY' });
    reader.close();
  });

  it('a body cut short mid-tensor, after several windows were decrypted: ERR_IO, the decrypted part wiped', async () => {
    const cut: Bend = (a) => ({ ...a, stop: { after: Math.floor((a.body.length * 3) / 4), how: 'cut' } });
    expect(await loadBent(cut, { windowBytes: 8192 })).toBe('ERR_IO');
    expect(lastScanned).toBeGreaterThan(0); // the load's buffer, partly decrypted, was released: every byte zero
    expect(await loadBent(cut)).toBe('ERR_IO');
  });

  it('a stalled body: ERR_IO once nothing came for timeoutMs', async () => {
    const stall: Bend = (a) => ({ ...a, stop: { after: 5000, how: 'stall' } });
    expect(await loadBent(stall, { windowBytes: 4096 }, { timeoutMs: 300 })).toBe('ERR_IO');
    await expect(
      (async () => {
        server.bend = null;
        const reader = await NativeSealedFileReader.open(src({ timeoutMs: 300 }), key);
        server.bend = later((a) => ({ ...a, silent: true }));
        try {
          await reader.loadAll();
        } finally {
          reader.close();
        }
      })(),
    ).rejects.toThrow(/no answer within 300 ms/);
  });

  it('the file changes under the reader (size, ETag, a 412): ERR_INTEGRITY', async () => {
    const grown: Bend = (a) => ({ ...a, headers: { ...a.headers, 'content-range': String(a.headers['content-range']).replace(/\/\d+$/, `/${file.length + 1}`) } });
    expect(await loadBent(grown)).toBe('ERR_INTEGRITY');
    expect(await loadBent((a) => ({ ...a, headers: { ...a.headers, etag: '"v2"' } }))).toBe('ERR_INTEGRITY');
    expect(await loadBent((a) => ({ ...a, headers: { etag: '"v2"' }, status: 412, body: new Uint8Array(0) }))).toBe('ERR_INTEGRITY');
  });

  it('answers that are not the range asked for: ERR_IO', async () => {
    const shifted: Bend = (a, r) => ({ ...a, headers: { ...a.headers, 'content-range': `bytes ${r.first + 1}-${r.last + 1}/${file.length}` } });
    expect(await loadBent(shifted)).toBe('ERR_IO');
    expect(await loadBent((a) => ({ ...a, status: 200, headers: { 'content-length': file.length }, body: file }))).toBe('ERR_IO');
    // No Content-Length (chunked), and three bytes more than asked for.
    const extra: Bend = (a) => ({ ...a, headers: { 'content-range': a.headers['content-range']!, etag: '"v1"' }, body: new Uint8Array([...a.body, 1, 2, 3]) });
    expect(await loadBent(extra)).toBe('ERR_IO');
    expect(await loadBent((a) => ({ ...a, headers: { ...a.headers, 'content-length': a.body.length - 1 }, body: a.body.subarray(1) }))).toBe('ERR_IO');
    expect(await loadBent((a) => ({ ...a, headers: { ...a.headers, 'content-encoding': 'gzip' } }))).toBe('ERR_IO');
    expect(await loadBent(() => ({ status: 302, headers: { location: 'http://127.0.0.1:1/elsewhere' }, body: new Uint8Array(0) }))).toBe('ERR_IO');
    expect(await loadBent(() => ({ status: 503, headers: {}, body: new Uint8Array(0) }))).toBe('ERR_IO');
  });

  it('an AbortSignal mid-load rejects with its reason; into is released, nothing handed out', async () => {
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    const reader = await NativeSealedFileReader.open(src(), key, { signal: controller.signal, windowBytes: 8192 });
    server.bend = later((a) => {
      setTimeout(() => controller.abort(reason), 50);
      return { ...a, stop: { after: 20000, how: 'stall' } };
    });
    const locked = vmLckBytes();
    const into = SecureBuffer.allocate(400_000);
    await expect(reader.loadAll({ into })).rejects.toBe(reason);
    expect(into.released).toBe(true);
    expect(vmLckBytes()).toBe(locked); // into's pages were let go with the run
    reader.close();
  });
});

describe('a range source that misbehaves from the first request', () => {
  it('a small file served whole (200, the server ignores Range) loads from that one answer', async () => {
    server.bend = (a) => ({ ...a, status: 200, headers: { 'content-length': file.length, etag: '"v1"' }, body: file });
    const before = server.ranges.length;
    const model = await NativeSealedModelReader.open(src({ maxWholeBytes: file.length }), key);
    const all = await model.loadAll();
    for (const [name, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(data.get(name)!)), name).toBe(true);
    all.release();
    model.close();
    expect(server.ranges.length - before).toBe(1);
  });

  it('refuses a whole file above maxWholeBytes, a size it cannot know, a truncated or empty file, a 404', async () => {
    const code = async (bend: Bend | null, options: HttpSourceOptions = {}): Promise<string> => {
      server.bend = bend;
      return NativeSealedModelReader.open(src(options), key).then(
        (m) => (m.close(), 'ok'),
        (e: { code?: string }) => e.code ?? String(e),
      );
    };
    expect(await code((a) => ({ ...a, status: 200, headers: { 'content-length': file.length }, body: file }), { maxWholeBytes: 1000 })).toBe('ERR_IO');
    expect(await code((a) => ({ ...a, headers: { ...a.headers, 'content-range': String(a.headers['content-range']).replace(/\/\d+$/, '/*') } }))).toBe('ERR_IO');
    const short = file.length - 5000;
    expect(await code((a) => ({ ...a, headers: { ...a.headers, 'content-range': String(a.headers['content-range']).replace(/\/\d+$/, `/${short}`) } }))).toBe('ERR_TRUNCATED');
    expect(await code(() => ({ status: 416, headers: { 'content-range': 'bytes */0' }, body: new Uint8Array(0) }))).toBe('ERR_FORMAT');
    expect(await code(() => ({ status: 404, headers: {}, body: new Uint8Array(0) }))).toBe('ERR_IO');
    expect(await code(() => ({ status: 200, headers: {}, body: new Uint8Array(0), silent: true }), { timeoutMs: 200 })).toBe('ERR_IO');
  });
});

describe('HttpRangeSource arguments', () => {
  it('plain HTTP only to loopback and only when allowed; no credentials in the URL; its own headers stay its own', () => {
    expect(() => new HttpRangeSource('http://127.0.0.1:8080/m.sealed')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
    expect(() => new HttpRangeSource('http://example.com/m.sealed', { allowHttp: true })).toThrow(/plain HTTP/);
    expect(() => new HttpRangeSource('ftp://example.com/m.sealed')).toThrow(/https/);
    expect(() => new HttpRangeSource('https://user:pw@example.com/m.sealed')).toThrow(/credentials/);
    expect(() => new HttpRangeSource('https://example.com/m.sealed', { headers: { Range: 'bytes=0-1' } })).toThrow(/range source itself/);
    expect(() => new HttpRangeSource('https://example.com/m.sealed', { headers: { 'x-a\r\nInjected': 'v' } })).toThrow(/not an HTTP token/);
    expect(() => new HttpRangeSource('https://example.com/m.sealed', { headers: { 'x-a': 'v\r\nInjected: 1' } })).toThrow(/CR, LF/);
    expect(() => new HttpRangeSource('https://example.com/m.sealed', { ca: 'not a pem' })).toThrow(/PEM/);
    expect(new HttpRangeSource('http://localhost:1/a', { allowHttp: true }).url.hostname).toBe('localhost');
    expect(new HttpRangeSource('http://[::1]:1/a', { allowHttp: true }).description).toBe('http://[::1]:1/a');
  });

  it('shards resolve next to the index, same origin, without the query string; or where sibling says', () => {
    const s = new HttpRangeSource('https://example.com/models/m/model.safetensors.index.json.sealed?X-Amz-Signature=secret');
    expect(s.description).toBe('https://example.com/models/m/model.safetensors.index.json.sealed');
    expect(s.name).toBe('model.safetensors.index.json.sealed');
    const shard = s.sibling('model 1#?.sealed');
    expect(shard.url.href).toBe('https://example.com/models/m/model%201%23%3F.sealed');
    expect(shard.name).toBe('model 1#?.sealed');
    expect(() => s.sibling('../x')).toThrow(/plain file name/);
    expect(() => s.sibling('a/b')).toThrow(/plain file name/);
    const signed = new HttpRangeSource(s.url, { sibling: (name, index) => new URL(`${name}?sig=for-${name}`, index) });
    expect(signed.sibling('s.sealed').url.href).toBe('https://example.com/models/m/s.sealed?sig=for-s.sealed');
  });
});
