import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { writeNewKeyFile } from '../../src/keys/key-file.js';
import { FakeKbs, json, type FakeKey } from './fake-kbs.js';
import { handles, made } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { makePki, type TestPki } from './tls.js';
import { lockedBytes, sealedFile, sealedSharded } from './setup.js';
import { runCli } from '../helpers/cli.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';


let pki: TestPki | undefined;
const servers: FakeKbs[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

/** An HTTPS fake broker, its CA in a file, and a simulated root key in a file. */
async function setup(dir: string, keys: Record<string, FakeKey>) {
  pki ??= await makePki();
  const kbs = await FakeKbs.start({ keys, tls: { cert: pki.certPem, key: pki.keyPem } });
  servers.push(kbs);
  const ca = join(dir, 'ca.pem');
  writeFileSync(ca, pki.caPem);
  const simKey = join(dir, 'sim.key');
  writeFileSync(simKey, generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  return { kbs, args: ['--broker', kbs.url, '--ca', ca, '--simulated', '--simulated-key', simKey] };
}

describe('sealed-tensors load', () => {
  it('loads a granted model and prints a summary: tensors, bytes, digests, throughput, TEE, hardened', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const { kbs, args } = await setup(dir, { k1: { key: TEST_KEY, models: [model.binding] } });
    const baseline = lockedBytes();
    const r = await runCli('load', model.path, ...args);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ok: 3 tensors, .* loaded; 3 digests verified, every chunk authenticated\n/);
    expect(r.out).toMatch(/MB\/s/);
    expect(r.out).toMatch(/TEE: simulated \(SIMULATED: not hardware\); hardened: yes/);
    expect(r.out).toMatch(new RegExp(`key "k1" released by ${kbs.url.replace(/[./]/g, '\\$&')} \\(verdict affirming, receipt kept\\)`));
    expect(kbs.boundAttestations).toBe(1);
    expect(made.every((e) => e.released) && handles.every((h) => h.released)).toBe(true);
    expect(lockedBytes()).toBe(baseline);
  });

  it('--json has the shape of verify --json (plus the session), never tensor contents', async () => {
    const dir = tempDir();
    const keyFile = join(dir, 'k.json');
    const dataKey = await writeNewKeyFile(keyFile, 'k-json');
    const model = await sealedFile(dir, 'm', dataKey.key, 'k-json');
    const { args } = await setup(dir, { 'k-json': { key: dataKey.key, models: [model.binding] } });
    const loaded = await runCli('load', model.path, ...args, '--json');
    expect(loaded.code).toBe(0);
    const out = JSON.parse(loaded.out) as Record<string, unknown> & { tensors: { name: string; sha256: string }[]; session: Record<string, unknown> };
    const verified = await runCli('verify', model.path, '--key', keyFile, '--json');
    expect(verified.code).toBe(0);
    const { session, ...rest } = out;
    expect(rest).toEqual(JSON.parse(verified.out));
    for (const t of out.tensors) expect(t.sha256).toBe(createHash('sha256').update(model.data.get(t.name)!).digest('hex'));
    expect(session).toMatchObject({ tee: 'simulated', hardened: true, verdict: 'affirming', receipts: 1 });
    for (const bytes of model.data.values()) expect(loaded.out).not.toContain(Buffer.from(bytes).toString('base64').slice(0, 24));
  });

  it('--simulated-gpus N sends N simulated GPUs bound to the session, listed in the summary and in --json; --gpus without NVIDIA\'s driver fails saying so', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const { kbs, args } = await setup(dir, { k1: { key: TEST_KEY, models: [model.binding] } });
    const r = await runCli('load', model.path, ...args, '--simulated-gpus', '2');
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/2 SIMULATED GPU\(s\) \(simulated-nvidia/);
    expect(r.out).toMatch(/devices: simulated-nvidia\[0\] SIMULATED-GPU-0 \(SIMULATED\), simulated-nvidia\[1\] SIMULATED-GPU-1 \(SIMULATED\)/);
    // The CPU evidence bound the additional evidence (FakeKbs checks the report data over it).
    expect(kbs.boundAttestations).toBe(1);
    expect(Object.keys(JSON.parse(kbs.additionalEvidence[0]!) as object)).toEqual(['simulated-nvidia']);
    const j = await runCli('load', model.path, ...args, '--simulated-gpus', '1', '--json');
    expect((JSON.parse(j.out) as { session: { devices: unknown[] } }).session.devices).toEqual([{ label: 'simulated-nvidia[0]', kind: 'simulated-nvidia', uuid: 'SIMULATED-GPU-0', simulated: true }]);
    expect((await runCli('load', model.path, ...args, '--simulated-gpus', '0')).code).not.toBe(0);
    const both = await runCli('load', model.path, ...args, '--simulated-gpus', '1', '--gpus');
    expect(both.err).toMatch(/--gpus and --simulated-gpus exclude each other/);
    if (!existsSync('/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1')) {
      const real = await runCli('load', model.path, ...args, '--gpus');
      expect(real.code).not.toBe(0);
      expect(real.err).toMatch(/libnvidia-ml\.so\.1/);
    }
  });

  it('--only loads just the named tensors of a sharded model', async () => {
    const dir = tempDir();
    const model = await sealedSharded(dir, 'sharded', TEST_KEY, 'k1');
    const { args } = await setup(dir, { k1: { key: TEST_KEY, models: [model.binding] } });
    const r = await runCli('load', model.path, ...args, '--only', 'lm_head,model.norm', '--threads', '1', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out) as { sharded: boolean; tensors: { name: string; file: string; sha256: string }[] };
    expect(out.sharded).toBe(true);
    expect(out.tensors.map((t) => [t.name, t.file])).toEqual([
      ['model.norm', 'model-00001-of-00003.safetensors.sealed'],
      ['lm_head', 'model-00003-of-00003.safetensors.sealed'],
    ]);
    const missing = await runCli('load', model.path, ...args, '--only', 'nope');
    expect(missing.code).toBe(3);
    expect(missing.err).toMatch(/ERR_NOT_FOUND.*"nope"/);
  });

  it('exit 1 on a denial, with the broker\'s reasons on stderr (and in --json)', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const { kbs, args } = await setup(dir, { k1: { key: TEST_KEY, models: [model.binding] } });
    kbs.override.attest = (_req, res) => json(res, 403, { detail: 'policy denied', reasons: ['simulated evidence not allowed', 'debug enabled'] });
    const r = await runCli('load', model.path, ...args);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^error ERR_DENIED: .*403/);
    expect(r.err).toContain('  reason: simulated evidence not allowed\n  reason: debug enabled\n');
    const j = await runCli('load', model.path, ...args, '--json');
    expect(j.code).toBe(1);
    expect(JSON.parse(j.out)).toMatchObject({ verified: false, error: { code: 'ERR_DENIED', reasons: ['simulated evidence not allowed', 'debug enabled'] } });
  });

  it('exit 1 when the session refuses a model not registered for the key (ERR_POLICY)', async () => {
    const dir = tempDir();
    const registered = await sealedFile(dir, 'a', TEST_KEY, 'k1');
    const other = await sealedFile(dir, 'b', TEST_KEY, 'k1');
    const { args } = await setup(dir, { k1: { key: TEST_KEY, models: [registered.binding] } });
    const r = await runCli('load', other.path, ...args);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^error ERR_POLICY: .*not registered for this key at the broker/);
  });

  it('--broker-key: a file that is not a public JWK (Set) is exit 2; a broker whose token no pinned key signed is exit 1 (ERR_BROKER_UNTRUSTED), nothing kept', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const { args } = await setup(dir, { k1: { key: TEST_KEY, models: [model.binding] } });
    const file = (name: string, text: string): string => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const pub = (): object => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const priv = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
    for (const bad of [file('garbage', 'not json'), file('private.jwk', JSON.stringify(priv)), file('rsa.jwk', JSON.stringify({ kty: 'RSA', n: 'AQAB', e: 'AQAB' })), join(dir, 'missing.jwks')]) {
      const r = await runCli('load', model.path, ...args, '--broker-key', bad);
      expect(r.code, `${bad}: ${r.err}`).toBe(bad.endsWith('missing.jwks') ? 3 : 2);
    }
    expect((await runCli('load', model.path, ...args, '--broker-issuer', 'x')).code).toBe(2); // needs --broker-key
    const other = await runCli('load', model.path, ...args, '--broker-key', file('other.jwks', JSON.stringify({ keys: [pub(), pub()] })), '--json');
    expect(other.code, other.err).toBe(1);
    expect(other.err).toMatch(/^error ERR_BROKER_UNTRUSTED: the broker's attestation token names no key id \(kid\) among the pinned ones/);
    expect(JSON.parse(other.out)).toMatchObject({ verified: false, error: { code: 'ERR_BROKER_UNTRUSTED' } });
    expect(made.every((e) => e.released) && handles.every((h) => h.released)).toBe(true);
  });

  it('exit 3 when the broker is unreachable or not trusted; exit 2 on bad options', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const { kbs, args } = await setup(dir, { k1: { key: TEST_KEY, models: [model.binding] } });
    const noCa = await runCli('load', model.path, '--broker', kbs.url, '--simulated');
    expect(noCa.code).toBe(2);
    expect(noCa.err).toMatch(/ERR_INVALID_ARGUMENT: the session must know its broker/);
    expect(kbs.requests).toEqual([]); // refused before any connection
    const publicRoots = await runCli('load', model.path, '--broker', kbs.url, '--trust-public-roots', '--simulated');
    expect(publicRoots.code).toBe(3);
    expect(publicRoots.err).toMatch(/ERR_BROKER.*not trusted/);
    expect(publicRoots.err).toMatch(/^warning: --trust-public-roots without --broker-key/m);
    expect(publicRoots.err).toMatch(/SIMULATED TEE with a fresh root key \(fingerprint [0-9a-f]{64}\)/);
    const url = kbs.url;
    await kbs.close();
    servers.length = 0;
    const gone = await runCli('load', model.path, ...args, '--timeout', '5');
    expect(gone.code).toBe(3);
    expect(gone.err).toMatch(/^error ERR_BROKER: .*refused the connection/);
    expect((await runCli('load', model.path, '--broker', url, '--simulated-key', 'x')).code).toBe(2);
    expect((await runCli('load', model.path, '--broker', 'http://10.0.0.1:1', '--simulated')).code).toBe(2);
    expect((await runCli('load', model.path, '--simulated')).code).toBe(2); // --broker is required
    expect((await runCli('load', model.path, '--broker', url, '--only', 'a,,b')).code).toBe(2);
  });
});
