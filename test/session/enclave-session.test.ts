import { openSync, readFileSync, truncateSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import {
  BrokerError,
  DeniedError,
  InvalidArgumentError,
  NotFoundError,
  PolicyError,
  ProtocolError,
  ReleasedError,
  SealedTensorsError,
} from '../../src/errors.js';
import { SecureBuffer } from '../../src/native/secure-buffer.js';
import { loadAddon } from '../../src/native/addon.js';
import { EnclaveSession, type EnclaveSessionOptions } from '../../src/session/enclave-session.js';
import { gatherTeeEvidence, kbsTeeName } from '../../src/session/tee-evidence.js';
import { decodeTeeEvidence } from '../../src/protocol/evidence.js';
import type { ProgressEvent } from '../../src/session/session-model.js';
import type { ServerResponse } from 'node:http';
import { json } from './fake-kbs.js';
import { handles, made } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { bindingOf, lockedBytes, sealedFile, sealedSharded } from './setup.js';
import { establish, rejectionOf, tee, useFakeKbs, failure } from './harness.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';


const broker = useFakeKbs();


/** Nothing the double made outlives the session: ephemeral keys and key handles all released. */
function expectAllReleased(): void {
  expect(made.every((e) => e.released)).toBe(true);
  expect(handles.every((h) => h.released)).toBe(true);
}

function same(a: Uint8Array, b: Uint8Array | undefined): boolean {
  return b !== undefined && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

describe('EnclaveSession: a granted session', () => {
  it('attests, gets the key, and loads a sealed model byte-identical to the original; close() releases everything', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k1']);
    expect(kbs.boundAttestations).toBe(1); // the evidence bound the nonce and our tee-pubkey
    expect(made.at(-1)!.released).toBe(true); // the ephemeral key goes once the releases are opened
    expect(kbs.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['POST /kbs/v0/auth', 'POST /kbs/v0/attest', 'GET /kbs/v0/resource/sealed-tensors/data-key/k1']);
    expect(kbs.requests[2]!.cookie).toBe(kbs.requests[1]!.cookie);
    expect(kbs.requests[2]!.authorization).toMatch(/^Bearer /);

    const info = session.info;
    expect(info.tee).toBe('simulated');
    expect(info.hardened).toBe(true);
    expect(info.verdict.status).toBe('affirming');
    expect(info.verdict.tokenId).toMatch(/-/);
    expect(info.receipts).toHaveLength(1);
    expect(info.receipt).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(info.keys).toEqual([{ keyId: 'k1', models: [model.binding], notAfter: info.expiresAt }]);
    expect(info.expiresAt.getTime()).toBeGreaterThan(Date.now() + 200_000);

    const m = await session.open(model.path);
    const progress: ProgressEvent[] = [];
    m.on('progress', (p) => progress.push(p));
    expect(m.names()).toEqual(['embed.weight', 'layer.0.bias', 'head']);
    expect(m.info).toMatchObject({ keyId: 'k1', sharded: false, ...model.binding });
    const seen: string[] = [];
    const held = [];
    for await (const t of m.tensors()) {
      expect(same(t.bytes, model.data.get(t.info.name)), t.info.name).toBe(true);
      seen.push(t.info.name);
      held.push(t);
    }
    expect(seen).toEqual(m.names());
    expect(progress.map((p) => p.tensors)).toEqual([1, 2, 3]);
    expect(progress.at(-1)!.bytes).toBe(m.byteLength);
    expect(progress.at(-1)!.totalBytes).toBe(m.byteLength);
    expect(lockedBytes()).toBeGreaterThan(baseline);

    session.close();
    expect(m.closed).toBe(true);
    for (const t of held) expect(() => t.bytes).toThrow(ReleasedError);
    expectAllReleased();
    expect(lockedBytes()).toBe(baseline);
    session.close(); // idempotent
    await expect(session.open(model.path)).rejects.toThrow(ReleasedError);
  });

  it('loads a sharded model in full, or only the tensors selected (by list or predicate), and reads single tensors', async () => {
    const dir = tempDir();
    const model = await sealedSharded(dir, 'sharded', TEST_KEY, 'k-shard');
    const kbs = await broker({ 'k-shard': { key: TEST_KEY, models: [model.binding] } });
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k-shard']);
    try {
      const all = await session.open(model.path, { threads: 2 });
      expect(all.info.sharded).toBe(true);
      let n = 0;
      for await (const t of all.tensors()) {
        expect(same(t.bytes, model.data.get(t.info.name)), t.info.name).toBe(true);
        t.release();
        n++;
      }
      expect(n).toBe(model.data.size);
      all.close();

      const some = await session.open(model.path, { only: ['lm_head', 'model.norm'] });
      expect(some.names()).toEqual(['model.norm', 'lm_head']); // file order, not request order
      const names: string[] = [];
      for await (const t of some.tensors()) names.push(t.info.name);
      expect(names).toEqual(['model.norm', 'lm_head']);
      await expect(some.tensor('layers.0.w')).rejects.toThrow(NotFoundError);

      const byPredicate = await session.open(model.path, { only: (name) => name.startsWith('model.') });
      expect(byPredicate.names()).toEqual(['model.embed', 'model.norm']);
      const one = await byPredicate.tensor('model.embed');
      expect(same(one.bytes, model.data.get('model.embed'))).toBe(true);
      const target = SecureBuffer.allocate(100 + model.data.get('model.norm')!.length);
      try {
        const info = await byPredicate.readInto('model.norm', target, 100);
        expect(info.name).toBe('model.norm');
        expect(same(target.bytes.subarray(100), model.data.get('model.norm'))).toBe(true);
        await expect(byPredicate.readInto('model.norm', target, 101)).rejects.toThrow(InvalidArgumentError);
        await expect(byPredicate.readInto('model.norm', new Uint8Array(1000) as never)).rejects.toThrow(/SecureBuffer/);
      } finally {
        target.release();
      }
      await expect(session.open(model.path, { only: ['nope'] })).rejects.toThrow(NotFoundError);
    } finally {
      session.close();
    }
    expectAllReleased();
    expect(lockedBytes()).toBe(baseline);
  });

  it('opens the model from its folder or its index path alike, and maps every TEE type to its KBS name', async () => {
    const dir = tempDir();
    const model = await sealedSharded(dir, 'folder', TEST_KEY, 'k2');
    const kbs = await broker({ k2: { key: TEST_KEY, models: [model.binding] } });
    const session = await establish(kbs, ['k2']);
    try {
      const viaIndex = await session.open(join(model.path, 'model.safetensors.index.json.sealed'));
      expect(viaIndex.names()).toHaveLength(model.data.size);
      const shard = await failure(session.open(join(model.path, 'model-00002-of-00003.safetensors.sealed')));
      expect([shard.code, shard.message]).toEqual(['ERR_FORMAT', expect.stringMatching(/one shard of a sharded model/)]);
      await expect(session.open(model.path, { threads: 0 })).rejects.toThrow(InvalidArgumentError);
      await expect(session.open(join(dir, 'missing'))).rejects.toThrow(SealedTensorsError);
    } finally {
      session.close();
    }
    expect([kbsTeeName('snp'), kbsTeeName('tdx'), kbsTeeName('azure-snp'), kbsTeeName('nitro'), kbsTeeName('simulated')]).toEqual([
      'snp',
      'tdx',
      'az-snp-vtpm',
      'nitro',
      'simulated',
    ]);
    expect(() => kbsTeeName('nvidia')).toThrow(SealedTensorsError);
    // No provider gathers Azure evidence: refused before any request.
    const azure = { tee: 'azure-snp' as const, getEvidence: async () => new Uint8Array(0) };
    const before = kbs.requests.length;
    expect((await failure(establish(kbs, ['k2'], { provider: azure }))).code).toBe('ERR_UNSUPPORTED');
    expect(kbs.requests.length).toBe(before);
  });

  it("sends SNP evidence in Trustee's shape, with the host's certificates in cert_chain", async () => {
    const report = new Uint8Array(readFileSync(new URL('../vectors/attestation/sev-snp/gsg_milan_report.bin', import.meta.url)));
    const vcek = new Uint8Array(readFileSync(new URL('../vectors/attestation/sev-snp/gsg_milan_vcek.der', import.meta.url)));
    const asked: Uint8Array[] = [];
    const snp = {
      tee: 'snp' as const,
      getEvidence: async () => report,
      getEvidenceWithCertificates: async (rd: Uint8Array) => {
        asked.push(rd);
        return { evidence: report, certificates: [{ name: 'VCEK', der: vcek }, { name: 'unknown', der: new Uint8Array(3) }] };
      },
    };
    const teeEvidence = await gatherTeeEvidence(snp, new Uint8Array(64).fill(7));
    expect(asked).toHaveLength(1);
    expect(teeEvidence.additional_evidence).toBe('');
    const decoded = decodeTeeEvidence('snp', teeEvidence);
    expect(Buffer.from(decoded.evidence).equals(Buffer.from(report))).toBe(true);
    expect(decoded.certificates?.map((c) => Buffer.from(c).equals(Buffer.from(vcek)))).toEqual([true]);
  });
});

describe('EnclaveSession: the release is bound to the model', () => {
  it('refuses (ERR_POLICY) a model sealed under the same key but not registered, and an older version of a registered one', async () => {
    const dir = tempDir();
    const registered = await sealedFile(dir, 'registered', TEST_KEY, 'k1');
    const other = await sealedFile(dir, 'other', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [registered.binding] } });
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k1']);
    try {
      const err = await failure(session.open(other.path));
      expect(err).toBeInstanceOf(PolicyError);
      expect(err.message).toMatch(/not registered for this key at the broker/);
      // A newer seal of the registered model replaces the file: a new bundle id and header digest.
      const old = readFileSync(registered.path);
      await sealedFile(dir, 'registered-v2', TEST_KEY, 'k1');
      const v2 = join(dir, 'registered-v2.sealed');
      expect(await bindingOf(v2)).not.toEqual(registered.binding);
      expect((await failure(session.open(v2))).code).toBe('ERR_POLICY');
      expect(old.length).toBeGreaterThan(0);
      const ok = await session.open(registered.path); // the registered one still opens
      ok.close();
    } finally {
      session.close();
    }
    expect(lockedBytes()).toBe(baseline);
  });

  it('refuses a model whose key the session did not fetch, naming the key', async () => {
    const dir = tempDir();
    const mine = await sealedFile(dir, 'mine', TEST_KEY, 'k1');
    const theirs = await sealedFile(dir, 'theirs', OTHER_KEY, 'k-other');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [mine.binding, theirs.binding] } });
    const session = await establish(kbs, ['k1']);
    try {
      const err = await failure(session.open(theirs.path));
      expect(err).toBeInstanceOf(NotFoundError);
      expect(err.message).toContain('"k-other"');
    } finally {
      session.close();
    }
  });

  it('refuses a release whose manifest names another key id (ERR_PROTOCOL), releasing everything', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding], manifestKeyId: 'k-evil' } });
    const baseline = lockedBytes();
    const err = await failure(establish(kbs, ['k1']));
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.message).toMatch(/released key "k-evil" when "k1" was asked for/);
    expectAllReleased();
    expect(lockedBytes()).toBe(baseline);
  });

  it('refuses a token bound to another session key before asking for any resource', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } }, { tokenTeePubkey: () => stranger });
    const err = await failure(establish(kbs, ['k1']));
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.message).toMatch(/another session key/);
    expect(kbs.requests.some((r) => r.path.includes('/resource/'))).toBe(false);
    expectAllReleased();
  });

  it('refuses a token that does not verify, or has no expiry', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    kbs.override.attest = async (req, res, body) => {
      // Answer as normal, then break the token's signature.
      const captured: { token?: string } = {};
      const fake = { writeHead: () => fake, end: (b: Buffer) => Object.assign(captured, JSON.parse(b.toString())) };
      await kbs.standard('attest', req, fake as never, body);
      const [h, p, s] = captured.token!.split('.');
      json(res, 200, { token: `${h}.${p}.${s!.slice(0, -4)}AAAA` });
    };
    const err = await failure(establish(kbs, ['k1']));
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.message).toMatch(/does not verify/);
    expectAllReleased();
  });
});

describe('EnclaveSession: denials and faults', () => {
  it('401 and 403 with reasons end in ERR_DENIED carrying the reasons; an unknown key in 404', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    kbs.override.attest = (_req, res) =>
      json(res, 403, { type: 'x', title: 'denied', status: 403, detail: 'policy "default" denied the release', reasons: ['measurement not allowed', 'debug enabled'] });
    const denied = (await failure(establish(kbs, ['k1']))) as DeniedError;
    expect(denied).toBeInstanceOf(DeniedError);
    expect(denied.status).toBe(403);
    expect(denied.reasons).toEqual(['measurement not allowed', 'debug enabled']);
    delete kbs.override.attest;
    kbs.override.resource = (_req, res) => json(res, 401, { detail: 'token expired', reasons: ['token expired'] });
    const unauth = (await failure(establish(kbs, ['k1']))) as DeniedError;
    expect([unauth.code, unauth.status, unauth.reasons]).toEqual(['ERR_DENIED', 401, ['token expired']]);
    delete kbs.override.resource;
    const unknown = (await failure(establish(kbs, ['k1', 'k-missing']))) as DeniedError;
    expect([unknown.code, unknown.status]).toEqual(['ERR_DENIED', 404]);
    expectAllReleased(); // k1's handle, fetched before k-missing failed, was released too
  });

  it('a broker that is unreachable, dies between attest and resource, cuts the resource short, stalls, or answers garbage: ERR_BROKER, nothing kept', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const baseline = lockedBytes();

    const gone = await broker();
    const url = gone.url;
    await gone.close();
    const unreachable = await failure(EnclaveSession.establish({ broker: url, allowPlainHttpOnLoopback: true, provider: tee, keys: ['k1'] }));
    expect(unreachable).toBeInstanceOf(BrokerError);

    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] }, k2: { key: TEST_KEY, models: [model.binding] } });
    let served = 0;
    kbs.override.resource = (req, res, body) => {
      // The first key is released; then the broker dies.
      if (served++ === 0) return void kbs.standard('resource', req, res, body);
      void kbs.close();
    };
    const before = handles.length;
    expect(await failure(establish(kbs, ['k1', 'k2']))).toBeInstanceOf(BrokerError);
    expect(handles.length).toBe(before + 1); // k1 was opened into a handle before the broker died
    expectAllReleased();

    const cases: [string, (res: ServerResponse) => void][] = [
      ['cut short', (res) => (res.writeHead(200, { 'content-length': 400 }), res.write('{"protected":"'), setImmediate(() => res.socket?.destroy()))],
      ['stalled', () => {}],
      ['garbage', (res) => (res.writeHead(200), res.end('<html>'))],
      ['oversized', (res) => (res.writeHead(200, { 'content-length': 10 * 1024 * 1024 }), res.write('{'))],
    ];
    for (const [what, respond] of cases) {
      const k = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
      k.override.resource = (_req, res) => respond(res);
      const err = await failure(establish(k, ['k1'], { timeoutMs: 1000, idleTimeoutMs: 300 }));
      expect(err.code, what).toBe('ERR_BROKER');
      expectAllReleased();
    }
    expect(lockedBytes()).toBe(baseline);
  });

  it('a JWE that does not open is refused with a typed error and nothing kept', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    kbs.override.resource = (_req, res) => json(res, 200, { protected: 'eyJhbGciOiJFQ0RILUVTK0EyNTZLVyJ9', encrypted_key: 'AA', iv: 'AA', ciphertext: 'AA', tag: 'AA' });
    await failure(establish(kbs, ['k1']));
    kbs.override.resource = (_req, res) => json(res, 200, { protected: 'x', encrypted_key: 'A', iv: 'A', ciphertext: 'A', tag: 'A', aad: 'A' });
    expect((await failure(establish(kbs, ['k1']))).code).toBe('ERR_PROTOCOL');
    expectAllReleased();
  });

  it('an abort, before or during establishment, rejects with the abort reason and keeps nothing', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    await expect(establish(kbs, ['k1'], { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    const controller = new AbortController();
    kbs.override.resource = () => controller.abort();
    await expect(establish(kbs, ['k1'], { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expectAllReleased();
    // The overall deadline is a broker failure, even while the TEE gathers evidence.
    const slow = { tee: 'simulated' as const, getEvidence: () => new Promise<Uint8Array>(() => {}) };
    const late = await failure(EnclaveSession.establish({ broker: kbs.url, allowPlainHttpOnLoopback: true, provider: slow, keys: ['k1'], timeoutMs: 200 }));
    expect(late).toBeInstanceOf(BrokerError);
    expect(late.message).toMatch(/within 200 ms/);
    expectAllReleased();
  });

  it('refuses a broker that selects another hash for the report-data binding', async () => {
    const kbs = await broker();
    kbs.override.auth = (_req, res) =>
      json(res, 200, { nonce: randomBytes(32).toString('base64'), 'extra-params': { 'selected-hash-algorithm': 'sha512' } }, { 'set-cookie': 'kbs-session-id=s1' });
    const err = await failure(establish(kbs, ['k1']));
    expect([err.code, err.message]).toEqual(['ERR_PROTOCOL', expect.stringMatching(/"sha512"/)]);
    expectAllReleased();
  });

  it('checks its options before any request', async () => {
    const kbs = await broker();
    for (const bad of [
      { keys: [] },
      { keys: ['has/slash'] },
      { keys: ['k'], provider: {} },
      { keys: ['k'], timeoutMs: 0 },
      { keys: ['k'], broker: 'http://10.1.2.3' },
    ]) {
      await expect(EnclaveSession.establish({ broker: kbs.url, allowPlainHttpOnLoopback: true, provider: tee, ...bad } as EnclaveSessionOptions)).rejects.toThrow(InvalidArgumentError);
    }
    expect(kbs.requests).toEqual([]);
  });
});

describe('EnclaveSession: lifetime and loading faults', () => {
  it('expires with the token: open() is refused (ERR_DENIED) and the keys are released', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } }, { tokenTtlSeconds: 120 });
    const session = await establish(kbs, ['k1']);
    try {
      (await session.open(model.path)).close();
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 121_000);
      expect(session.expired).toBe(true);
      const err = (await failure(session.open(model.path))) as DeniedError;
      expect(err).toBeInstanceOf(DeniedError);
      expect(err.message).toMatch(/expired/);
      expect(err.reasons).toEqual(['session expired']);
      expect(handles.at(-1)!.released).toBe(true);
    } finally {
      session.close();
    }
  });

  it('a release already past its notAfter is refused at establishment', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding], notAfter: new Date(Date.now() - 1000).toISOString() } });
    const err = (await failure(establish(kbs, ['k1']))) as DeniedError;
    expect([err.code, err.reasons]).toEqual(['ERR_DENIED', ['release expired']]);
    expectAllReleased();
  });

  it('a file tampered with or cut short during a load: the load fails typed, the model closes, every tensor it handed out is wiped', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k1']);
    try {
      const m = await session.open(model.path);
      const it = m.tensors();
      const first = (await it.next()).value!;
      expect(same(first.bytes, model.data.get('embed.weight'))).toBe(true);
      // Flip a byte near the end of the file (the last tensor's chunk).
      const size = readFileSync(model.path).length;
      const fd = openSync(model.path, 'r+');
      writeSync(fd, Buffer.from([0x5a]), 0, 1, size - 20);
      closeSync(fd);
      let err: unknown;
      try {
        for (;;) if ((await it.next()).done) break;
      } catch (e) {
        err = e;
      }
      expect((err as SealedTensorsError).code).toBe('ERR_INTEGRITY');
      expect(m.closed).toBe(true);
      expect(() => first.bytes).toThrow(ReleasedError);

      // Re-seal and cut the file short after opening: the read fails, nothing handed out.
      const fresh = await sealedFile(dir, 'cut', TEST_KEY, 'k1');
      kbs.keys['k1']!.models.push(fresh.binding);
      session.close();
      const s2 = await establish(kbs, ['k1']);
      try {
        const m2 = await s2.open(fresh.path);
        truncateSync(fresh.path, readFileSync(fresh.path).length - 5000);
        const out: string[] = [];
        const cut = await failure(
          (async () => {
            for await (const t of m2.tensors()) out.push(t.info.name);
          })(),
        );
        expect(['ERR_TRUNCATED', 'ERR_IO', 'ERR_INTEGRITY']).toContain(cut.code);
        expect(m2.closed).toBe(true);
        // The cut file cannot be opened again either (its length no longer matches its header).
        expect(['ERR_TRUNCATED', 'ERR_FORMAT']).toContain((await failure(s2.open(fresh.path))).code);
      } finally {
        s2.close();
      }
    } finally {
      session.close();
    }
    expectAllReleased();
    expect(lockedBytes()).toBe(baseline);
  });

  it('loadAll keeps its secure memory in the session for the next load: wiped on release (views detached), reused, unmapped at close; a failed load keeps nothing; reuseMemory: false unmaps at release', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    // The same header (so the same binding), the last chunk's tag altered.
    const bad = join(dir, 'bad.sealed');
    const bytes = readFileSync(model.path);
    bytes[bytes.length - 1]! ^= 1;
    writeFileSync(bad, bytes);
    const addon = loadAddon();
    addon._testing.setReleaseProbe(true);
    const probe = addon._testing.releaseProbe();
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k1']);
    try {
      const keys = lockedBytes();
      const m = await session.open(model.path);
      const all = await m.loadAll();
      for (const [n, t] of all.tensors) expect(same(t.bytes, model.data.get(n)), n).toBe(true);
      const held = lockedBytes();
      const view = all.tensors.get('head')!.bytes;
      all.release();
      expect(view.byteLength).toBe(0); // detached: never sees the next load
      expect(() => all.tensors.get('head')!.bytes).toThrow(ReleasedError);
      expect(lockedBytes()).toBe(held); // kept (wiped) by the session
      const again = await m.loadAll();
      for (const [n, t] of again.tensors) expect(same(t.bytes, model.data.get(n)), n).toBe(true);
      expect(lockedBytes()).toBe(held); // the same memory: nothing more locked
      m.close(); // gives it back as well
      expect(lockedBytes()).toBe(held);
      expect(held).toBeGreaterThan(keys);

      const m2 = await session.open(bad);
      expect((await failure(m2.loadAll())).code).toBe('ERR_INTEGRITY');
      expect(m2.closed).toBe(true);
      expect(lockedBytes()).toBe(keys); // the failed load took the kept buffer and released it
    } finally {
      session.close();
    }
    expect(lockedBytes()).toBe(baseline);

    const plain = await establish(kbs, ['k1'], { reuseMemory: false });
    try {
      const m = await plain.open(model.path);
      const opened = lockedBytes();
      const all = await m.loadAll();
      expect(lockedBytes()).toBeGreaterThan(opened);
      all.release();
      expect(lockedBytes()).toBe(opened); // unmapped at once
    } finally {
      plain.close();
    }
    expect(lockedBytes()).toBe(baseline);
    const after = addon._testing.releaseProbe();
    addon._testing.setReleaseProbe(false);
    expect(after.releases).toBeGreaterThan(probe.releases);
    expect(after.nonzeroBytes - probe.nonzeroBytes).toBe(0); // everything released read back zero
    await expect(establish(kbs, ['k1'], { reuseMemory: 'yes' as unknown as boolean })).rejects.toThrow(InvalidArgumentError);
  });

  it('an abort during a load ends it with the abort reason and wipes what it had handed out', async () => {
    const dir = tempDir();
    const model = await sealedSharded(dir, 'sharded', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k1']);
    try {
      const controller = new AbortController();
      const m = await session.open(model.path, { signal: controller.signal });
      const got: { bytes: Uint8Array }[] = [];
      const run = (async () => {
        for await (const t of m.tensors()) {
          got.push(t);
          if (got.length === 2) controller.abort();
        }
      })();
      await expect(run).rejects.toMatchObject({ name: 'AbortError' });
      expect(got).toHaveLength(2);
      expect(m.closed).toBe(true);
      for (const t of got) expect(() => t.bytes).toThrow(ReleasedError);
    } finally {
      session.close();
    }
    expect(lockedBytes()).toBe(baseline);
  });
});
