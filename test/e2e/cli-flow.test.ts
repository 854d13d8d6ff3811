/**
 * The whole product through its command line, as an operator and a user run it, each command a
 * child process of the built CLI: keygen, seal (sharded), broker init (simulated TEE trusted
 * through its root key file), key add, serve over HTTPS on loopback, load with the broker's CA,
 * every denial the CLI must report (exit 1, the broker's reasons, an audit entry), SIGTERM, and the
 * audit log's verification and tamper detection.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeShardedModel } from '../helpers/sharded.js';
import { tempDir } from '../helpers/tmp.js';
import { hasBuild, serve, st, type Served } from './cli.js';

if (!hasBuild) console.warn('SKIPPED e2e cli-flow: dist/ is not built (npm test builds it first)');

interface LoadJson {
  verified: boolean;
  sharded?: boolean;
  tensors: { name: string; dtype: string; shape: number[]; sha256: string; file?: string }[];
  session?: { tee: string; verdict: string; receipts: number; brokerKeyId?: string };
  error?: { code: string; reasons?: string[] };
}

type AuditLine = { seq: number; event: string; keyId?: string; keyIds?: string[]; reasons?: string[]; verdict?: unknown; [k: string]: unknown };
/** The audit log's entries, each with its key id (management entries and releases name one `keyId`, denials `keyIds`). */
const auditLines = (dir: string): AuditLine[] =>
  readFileSync(join(dir, 'audit.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as AuditLine)
    .map((e) => ({ ...e, keyId: e.keyId ?? e.keyIds?.[0] }));

describe.runIf(hasBuild)('the CLI end to end: broker init, key add, serve, load, denials, audit', () => {
  const dir = tempDir('st-e2e-flow-');
  const p = (name: string): string => join(dir, name);
  const brokerDir = p('broker');
  const teeKey = p('dev-tee.pem');
  let broker: Served | undefined;
  let plain: Map<string, Uint8Array>;

  const ok = (args: string[]): string => {
    const r = st(args);
    expect(r.code, `${args.join(' ')}\n${r.err}`).toBe(0);
    return r.out;
  };
  const load = (model: string, extra: string[] = [], ca: string | null = join(brokerDir, 'ca.pem'), url = broker!.url) =>
    st(['load', model, '--broker', url, ...(ca === null ? [] : ['--ca', ca]), '--simulated', '--simulated-key', teeKey, '--json', ...extra]);

  beforeAll(async () => {
    // The owner: two keys, a sharded model, a second model under the same key (never registered),
    // and one model each for the key that is revoked and the key whose policy denies.
    for (const id of ['k-main', 'k-revoked', 'k-pinned']) ok(['keygen', '-o', p(`${id}.json`), '--id', id]);
    plain = makeShardedModel(dir, 'model').data;
    makeShardedModel(dir, 'other', 1);
    makeShardedModel(dir, 'm-revoked', 2);
    makeShardedModel(dir, 'm-pinned', 3);
    ok(['seal', p('model'), '-o', p('model.sealed'), '--key', p('k-main.json'), '--chunk-size', '4KiB']);
    ok(['seal', p('other'), '-o', p('other.sealed'), '--key', p('k-main.json')]);
    ok(['seal', p('m-revoked'), '-o', p('m-revoked.sealed'), '--key', p('k-revoked.json')]);
    ok(['seal', p('m-pinned'), '-o', p('m-pinned.sealed'), '--key', p('k-pinned.json')]);

    // The operator: a development broker trusting the simulated TEE's root key file.
    const init = ok(['broker', 'init', brokerDir, '--allow-simulated', '--simulated-key', teeKey]);
    expect(init).toMatch(/trusts the simulated TEE root key .*dev-tee\.pem \(created\), fingerprint [0-9a-f]{64}/);
    ok(['broker', 'key', 'add', '--dir', brokerDir, '--key', p('k-main.json'), '--model', p('model.sealed')]);
    ok(['broker', 'key', 'add', '--dir', brokerDir, '--key', p('k-revoked.json'), '--model', p('m-revoked.sealed')]);
    ok(['broker', 'key', 'add', '--dir', brokerDir, '--key', p('k-pinned.json'), '--model', p('m-pinned.sealed')]);
    broker = await serve(brokerDir);
  });

  afterAll(async () => {
    await broker?.stop();
  });

  it('load: exit 0, every tensor of the sharded model with the plaintext SHA-256 that verify (with the key file) reports', () => {
    // The broker's public keys pinned, as broker init wrote them: the token and the receipt verify with them.
    const r = load(p('model.sealed'), ['--broker-key', join(brokerDir, 'broker.jwks')]);
    expect(r.code, r.err).toBe(0);
    const out = JSON.parse(r.out) as LoadJson;
    const config = JSON.parse(readFileSync(join(brokerDir, 'config.json'), 'utf8')) as { signingKeyId: string };
    expect(out).toMatchObject({ verified: true, sharded: true, session: { tee: 'simulated', verdict: 'warning', receipts: 1, brokerKeyId: config.signingKeyId } });
    expect(out.tensors.map((t) => t.name).sort()).toEqual([...plain.keys()].sort());
    for (const t of out.tensors) expect(t.sha256, t.name).toBe(createHash('sha256').update(plain.get(t.name)!).digest('hex'));
    const v = st(['verify', p('model.sealed'), '--key', p('k-main.json'), '--json']);
    expect(v.code, v.err).toBe(0);
    const { session: _session, ...rest } = out;
    expect(rest).toEqual(JSON.parse(v.out));
    // A summary, never contents: no tensor's bytes (base64) in what load printed.
    for (const bytes of plain.values()) if (bytes.length >= 18) expect(r.out).not.toContain(Buffer.from(bytes).toString('base64').slice(0, 24));
    const releases = auditLines(brokerDir).filter((e) => e.event === 'release' && e.keyId === 'k-main');
    expect(releases).toHaveLength(1);
  });

  it('a revoked key: exit 1, the broker\'s reasons on stderr, the denial audited', () => {
    ok(['broker', 'key', 'revoke', 'k-revoked', '--dir', brokerDir, '--reason', 'e2e: leaked']);
    const r = load(p('m-revoked.sealed'));
    expect(r.code, r.err).toBe(1);
    expect(r.err).toMatch(/^error ERR_DENIED: /);
    expect(r.err).toMatch(/ {2}reason: .*revoked/);
    expect((JSON.parse(r.out) as LoadJson).error).toMatchObject({ code: 'ERR_DENIED' });
    const log = auditLines(brokerDir);
    expect(log.some((e) => e.event === 'key-revoke' && e.keyId === 'k-revoked')).toBe(true);
    const denies = log.filter((e) => e.event === 'deny' && e.keyId === 'k-revoked');
    expect(denies).toHaveLength(1);
    // What the user was told is what the auditor reads.
    expect(denies[0]!.reasons).toEqual((JSON.parse(r.out) as LoadJson).error!.reasons);
    expect(log.some((e) => e.event === 'release' && e.keyId === 'k-revoked')).toBe(false);
  });

  it('a policy that pins another measurement: exit 1, the failed check named, audited', () => {
    const policy = p('pinned-policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: ['ab'.repeat(48)] }, allowDebug: false } } }));
    ok(['broker', 'policy', 'set', '--dir', brokerDir, 'k-pinned', policy]);
    const r = load(p('m-pinned.sealed'));
    expect(r.code, r.err).toBe(1);
    expect(r.err).toMatch(/^error ERR_DENIED: /);
    expect(r.err).toMatch(/ {2}reason: .*measurement/);
    const denies = auditLines(brokerDir).filter((e) => e.event === 'deny' && e.keyId === 'k-pinned');
    expect(denies).toHaveLength(1);
    expect(denies[0]!.reasons).toEqual((JSON.parse(r.out) as LoadJson).error!.reasons);
    expect(denies[0]!.reasons!.join('\n')).toContain('measurement');
  });

  it('a model sealed under the key but not registered for it: the session refuses (ERR_POLICY), exit 1', () => {
    const r = load(p('other.sealed'));
    expect(r.code, r.err).toBe(1);
    expect(r.err).toMatch(/^error ERR_POLICY: .*not registered for this key at the broker/);
    expect((JSON.parse(r.out) as LoadJson).error).toMatchObject({ code: 'ERR_POLICY' });
    // The broker released k-main (to an attested session, with a receipt): the refusal is the session's.
    expect(auditLines(brokerDir).filter((e) => e.event === 'release' && e.keyId === 'k-main')).toHaveLength(2);
  });

  it('the wrong CA: exit 3 (ERR_BROKER, not trusted), nothing released', async () => {
    const otherDir = p('other-broker');
    ok(['broker', 'init', otherDir]);
    const before = auditLines(brokerDir).length;
    const r = load(p('model.sealed'), [], join(otherDir, 'ca.pem'));
    expect(r.code, r.err).toBe(3);
    expect(r.err).toMatch(/^error ERR_BROKER: .*not trusted/);
    expect(auditLines(brokerDir).slice(before).filter((e) => e.event === 'release')).toEqual([]);
  });

  it('no --ca and no --trust-public-roots: exit 2 before any connection; a broker with other keys than those pinned: exit 1 (ERR_BROKER_UNTRUSTED), nothing released', async () => {
    const before = auditLines(brokerDir).length;
    const none = load(p('model.sealed'), [], null);
    expect(none.code, none.err).toBe(2);
    expect(none.err).toMatch(/^error ERR_INVALID_ARGUMENT: the session must know its broker: .*--ca FILE.*--trust-public-roots/);
    expect(auditLines(brokerDir).length).toBe(before); // nothing reached the broker

    // Another broker for the same names (its own CA, given: a certificate the attacker holds), other signing keys.
    const impostorDir = p('impostor-broker');
    ok(['broker', 'init', impostorDir, '--allow-simulated', '--simulated-key', teeKey]);
    ok(['broker', 'key', 'add', '--dir', impostorDir, '--key', p('k-main.json'), '--model', p('model.sealed')]);
    const s = await serve(impostorDir);
    try {
      const r = load(p('model.sealed'), ['--broker-key', join(brokerDir, 'broker.jwks')], join(impostorDir, 'ca.pem'), s.url);
      expect(r.code, r.err).toBe(1);
      expect(r.err).toMatch(/^error ERR_BROKER_UNTRUSTED: the broker's attestation token is signed by key "[A-Za-z0-9_-]{43}", which is not pinned/);
      expect((JSON.parse(r.out) as LoadJson).error?.code).toBe('ERR_BROKER_UNTRUSTED');
    } finally {
      expect(await s.stop()).toBe(0);
    }
    // The token was refused before any key was asked for.
    expect(auditLines(impostorDir).filter((e) => e.event === 'release')).toEqual([]);
  });

  it('a broker initialised without --allow-simulated: the simulated TEE is denied, exit 1, audited', async () => {
    const strict = p('strict-broker');
    ok(['broker', 'init', strict]);
    ok(['broker', 'key', 'add', '--dir', strict, '--key', p('k-main.json'), '--model', p('model.sealed')]);
    const s = await serve(strict);
    try {
      const r = load(p('model.sealed'), [], join(strict, 'ca.pem'), s.url);
      expect(r.code, r.err).toBe(1);
      expect(r.err).toMatch(/^error ERR_DENIED: /);
      expect(r.err).toMatch(/ {2}reason: broker\.simulated: /);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    const log = auditLines(strict);
    expect(log.filter((e) => e.event === 'release')).toEqual([]);
    // Refused at /attest, before any key is looked at: the attest entry carries the verdict and reasons.
    const denied = log.filter((e) => e.verdict === 'deny');
    expect(denied.map((e) => e.event)).toEqual(['attest']);
    expect(denied[0]!.reasons!.join('\n')).toMatch(/broker\.simulated: .*does not allow simulated evidence/);
    expect(st(['broker', 'audit', 'verify', strict]).code).toBe(0);
  });

  it('SIGTERM: the broker exits 0; audit verify exits 0 with every release and denial; a tampered line is named (exit 1)', async () => {
    const b = broker!;
    broker = undefined;
    expect(await b.stop()).toBe(0);
    expect(b.out()).toBe(`listening on ${b.url}\n`);
    expect(b.err()).toContain('stopped by SIGTERM');

    const v = st(['broker', 'audit', 'verify', brokerDir, '--json']);
    expect(v.code, v.err).toBe(0);
    const log = auditLines(brokerDir);
    expect(JSON.parse(v.out)).toMatchObject({ ok: true, entries: log.length, receipts: 2 });
    const events = log.map((e) => `${e.event}:${e.keyId ?? ''}`);
    expect(events.filter((e) => e === 'release:k-main')).toHaveLength(2);
    expect(events).toEqual(expect.arrayContaining(['deny:k-revoked', 'deny:k-pinned', 'key-revoke:k-revoked', 'policy-set:k-pinned']));
    // Every release and denial, listed: time, key, models, verdict (and reasons), as the log has them.
    type Decision = { seq: number; time: string; verdict: string; keyIds: string[]; models: { bundleId: string }[]; reasons: string[]; receiptId?: string };
    const decisions = (JSON.parse(v.out) as { decisions: Decision[] }).decisions;
    const releases = decisions.filter((d) => d.verdict === 'release');
    expect(releases.map((d) => d.keyIds)).toEqual([['k-main'], ['k-main']]);
    for (const d of releases) {
      const entry = log[d.seq]!;
      expect(d).toMatchObject({ time: entry.time, receiptId: entry.receiptId, models: entry.models });
      expect(d.models.length).toBeGreaterThan(0);
    }
    const denials = decisions.filter((d) => d.verdict === 'deny');
    expect(denials.map((d) => d.keyIds[0])).toEqual(expect.arrayContaining(['k-revoked', 'k-pinned']));
    expect(denials.every((d) => d.reasons.length > 0)).toBe(true);
    expect(decisions.map((d) => d.seq)).toEqual(log.filter((e) => e.event === 'release' || e.verdict === 'deny' || e.event === 'deny').map((e) => e.seq));
    const text = st(['broker', 'audit', 'verify', brokerDir]);
    expect(text.code, text.err).toBe(0);
    expect(text.out).toMatch(new RegExp(`^2 release\\(s\\), ${denials.length} denial\\(s\\):$`, 'm'));
    expect(text.out).toMatch(/^ +\d+ {2}\S+Z {2}RELEASE {2}key k-main {2}model \S+.* receipt [A-Za-z0-9_-]+$/m);
    expect(text.out).toMatch(/^ +\d+ {2}\S+Z {2}DENY {5}key k-revoked .*reasons: /m);

    // Tamper with a denial in the middle of the log: verify names that entry.
    const lines = readFileSync(join(brokerDir, 'audit.log'), 'utf8').split('\n');
    const i = log.findIndex((e) => e.event === 'deny' && e.keyId === 'k-pinned');
    expect(i).toBeGreaterThan(0);
    expect(i).toBeLessThan(log.length - 1);
    // An insider hides why the key was refused: the entry still parses, only its hash changes.
    expect(lines[i]).toContain('"reasons":["');
    lines[i] = lines[i]!.replace('"reasons":["', '"reasons":["(edited) ');
    writeFileSync(join(brokerDir, 'audit.log'), lines.join('\n'));
    const bad = st(['broker', 'audit', 'verify', brokerDir]);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(new RegExp(`^audit log BAD: entry ${i} \\(line ${i + 1}\\): .*changed after it was written`));
  });
});
