// Exercises every native entry point on small inputs; run under valgrind by `npm run test:native-memcheck`
// (any memcheck error fails the run). Uses the built dist/ and build/Release addon.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

const { sealFile } = await import('../../dist/seal/seal-file.js');
const { NativeSealedModelReader } = await import('../../dist/reader/native-model.js');
const { importKey } = await import('../../dist/native/key.js');
const { SecureBuffer } = await import('../../dist/native/secure-buffer.js');
const { loadAddon } = await import('../../dist/native/addon.js');
const { generateEphemeralKey, unwrapDataKey } = await import('../../dist/native/ephemeral.js');
const { encodeDataKeyResource } = await import('../../dist/protocol/resource.js');
const { FlattenedEncrypt, importJWK } = await import('jose');
const { FileSealedSource } = await import('../../dist/sources/file.js');

// A source that is not a FileSealedSource: the readers fetch its bytes and feed them to fed runs.
class FedSource {
  constructor(path) {
    this.inner = new FileSealedSource(path);
    this.description = path;
    this.name = this.inner.name;
  }
  open() {
    return this.inner.open();
  }
  sibling(name) {
    return new FedSource(this.inner.sibling(name).path);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'st-memcheck-'));
const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 7);

function safetensors(tensors) {
  const header = {};
  const parts = [];
  let off = 0;
  tensors.forEach(([name, n], i) => {
    header[name] = { dtype: 'U8', shape: [n], data_offsets: [off, off + n] };
    parts.push(Buffer.alloc(n, i + 1).map((v, j) => (v * 31 + j) & 0xff));
    off += n;
  });
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return { bytes: Buffer.concat([len, Buffer.from(json), ...parts]), parts };
}

let n = 0;
async function check(suite) {
  const tensors = [['a', 5000], ['empty', 0], ['b', 4096], ['c', 123]];
  const { bytes, parts } = safetensors(tensors);
  const input = join(dir, `m${n}.safetensors`);
  const output = join(dir, `m${n++}.sealed`);
  writeFileSync(input, bytes);
  await sealFile(input, output, { dataKey: new Uint8Array(KEY), keyId: 'memcheck', suite, chunkSize: 4096 });

  for (const threads of [1, 3]) {
    const key = importKey(new Uint8Array(KEY));
    const m = await NativeSealedModelReader.open(output, key, { threads, subBlock: 4096 });
    const all = await m.loadAll();
    tensors.forEach(([name], i) => assert.ok(Buffer.from(all.tensors.get(name).bytes).equals(parts[i])));
    all.release();
    const into = SecureBuffer.allocate(20000);
    const reused = await m.files[0].loadAll({ into });
    assert.ok(Buffer.from(reused.tensors.get('c').bytes).equals(parts[3]));
    reused.release();
    const one = await m.readTensor('b');
    assert.ok(Buffer.from(one.bytes).equals(parts[2]));
    one.release();
    const checks = (await m.verifyOrThrow({ plainSha256: true })).flatMap((s) => s.tensors);
    assert.equal(checks[0].sha256, createHash('sha256').update(parts[0]).digest('hex'));
    m.close();

    // The same through fed runs: windows of whole chunks, a selection, a run aborted mid-window and one finished early.
    const f = await NativeSealedModelReader.open(new FedSource(output), key, { threads, subBlock: 4096, windowBytes: 8192 });
    const fedAll = await f.loadAll();
    tensors.forEach(([name], i) => assert.ok(Buffer.from(fedAll.tensors.get(name).bytes).equals(parts[i])));
    fedAll.release();
    assert.equal((await f.verifyOrThrow({ plainSha256: true })).flatMap((s) => s.tensors)[0].sha256, checks[0].sha256);
    f.close();
    const only = await NativeSealedModelReader.open(new FedSource(output), key, { threads, only: ['c'] });
    const c = await only.loadAll();
    assert.ok(Buffer.from(c.tensors.get('c').bytes).equals(parts[3]));
    c.release();
    only.close();
    const file = readFileSync(output);
    const header = file.subarray(0, 120 + file[13]);
    const tableLength = file.readUInt32LE(28);
    const opened = await loadAddon().sealedOpenFed('memcheck', key, header, file.subarray(0, header.length + tableLength), file.length);
    const opts = { ranges: Float64Array.of(0, 5000), destSize: 5000, destOffsets: Float64Array.of(0), allChunks: false, stopOnFailure: true, threads };
    const start = header.length + tableLength;
    const busy = opened.file.begin(opts);
    const pending = busy.feed(start, [file.subarray(start, start + 2 * (4096 + 16))]);
    busy.abort();
    assert.equal(await pending, false);
    const early = opened.file.begin(opts);
    assert.equal(await early.feed(start, [file.subarray(start, start + 4096 + 16)]), true);
    assert.throws(() => early.finish(), { code: 'ERR_TRUNCATED' });
    opened.file.close();
    key.release();
  }

  // Tampered chunk: verdicts, and loading refuses.
  const sealed = readFileSync(output);
  sealed[sealed.length - 20] ^= 1;
  writeFileSync(output, sealed);
  const key = importKey(new Uint8Array(KEY));
  const m = await NativeSealedModelReader.open(output, key, { threads: 2 });
  const verdicts = (await m.verify()).flatMap((s) => s.tensors);
  assert.equal(verdicts.at(-1).ok, false);
  await assert.rejects(m.loadAll(), { code: 'ERR_INTEGRITY' });
  // The same into a reserved (locked-on-fault) buffer: populated by the job, wiped resident pages on failure.
  const reserved = SecureBuffer.reserve(m.files[0].loadByteLength);
  await assert.rejects(m.files[0].loadAll({ into: reserved }), { code: 'ERR_INTEGRITY' });
  reserved.wipe();
  reserved.release();
  m.close();
  key.release();

  const wrong = importKey(new Uint8Array(32).fill(9));
  await assert.rejects(NativeSealedModelReader.open(output, wrong), { code: 'ERR_KEY_MISMATCH' });
  wrong.release();
}

await check(1);
await check(2);

// Ephemeral keys and the data-key JWE: both algorithms, a good and a tampered JWE, release, finalizer.
{
  const manifest = { v: 1, keyId: 'memcheck', models: [], notAfter: '2030-01-01T00:00:00Z' };
  for (const kind of ['ec-p256', 'rsa-3072']) {
    const eph = generateEphemeralKey(kind);
    const jwk = eph.publicJwk;
    const jwe = await new FlattenedEncrypt(encodeDataKeyResource(new Uint8Array(KEY), manifest))
      .setProtectedHeader({ alg: jwk.alg, enc: 'A256GCM' })
      .encrypt(await importJWK({ ...jwk }, jwk.alg));
    const { key, manifest: bytes } = unwrapDataKey(eph, jwe);
    assert.equal(JSON.parse(Buffer.from(bytes).toString()).keyId, 'memcheck');
    // The released key opens the model sealed above (its last chunk was tampered with; 'a' is intact).
    const m = await NativeSealedModelReader.open(join(dir, 'm0.sealed'), key, { threads: 1 });
    const a = await m.readTensor('a');
    assert.equal(a.bytes.length, 5000);
    a.release();
    m.close();
    key.release();
    const bad = { ...jwe, tag: jwe.tag.slice(0, -2) + (jwe.tag.at(-2) === 'A' ? 'B' : 'A') + jwe.tag.at(-1) };
    assert.throws(() => unwrapDataKey(eph, bad), { code: 'ERR_INTEGRITY' });
    eph.release();
    assert.throws(() => unwrapDataKey(eph, jwe), { code: 'ERR_RELEASED' });
  }
  generateEphemeralKey(); // dropped: freed by the finalizer (gc below)
  assert.equal(typeof loadAddon().hardening().opensslSecureHeap, 'boolean');
}

// Secure buffers: release, double release, finalizer path.
const addon = loadAddon();
const b = SecureBuffer.allocate(10000);
b.bytes.fill(1);
b.release();
b.release();
const c = await SecureBuffer.allocateAsync(9000);
c.bytes.fill(3);
c.release();
for (let i = 0; i < 4; i++) new Uint8Array(addon.secureAlloc(5000)).fill(2);
const r = SecureBuffer.reserve(7000);
const before = r.bytes;
before.fill(4);
r.wipe();
assert.equal(before.byteLength, 0);
assert.ok(r.bytes.every((x) => x === 0));
r.release();
if (globalThis.gc) globalThis.gc();
await new Promise((r) => setTimeout(r, 50));

rmSync(dir, { recursive: true, force: true });
console.log('memcheck workload ok');
