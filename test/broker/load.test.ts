/**
 * The broker under load (issue 8, "Under load"): a real startBroker on loopback HTTPS, in a process
 * of its own (test/broker/load-child.ts) so its memory is measured without the clients in it.
 * - 50 concurrent sessions with valid simulated-TEE evidence, each bound to its own ephemeral key,
 *   all get their key (JWE opened with jose, receipt checked);
 * - 1,000 requests mixing bad evidence, replays, wrong bindings, oversized and malformed bodies, bad
 *   cookies and tokens, and attested sessions asking for what their policy does not grant: none
 *   releases anything (no JWE, no receipt, the keystore hands out no key), none is a 500, and each
 *   is answered for the reason it was built to fail;
 * - the broker's heap after the 1,000 is what it was after a warm-up round of the same mix;
 * - the audit log holds one entry per refused request (malformed ones grouped per address and window), its hash chain intact;
 * - the rate limiter throttles one abusive client and nobody else.
 *
 * Each client speaks from its own loopback address (Linux routes all of 127/8 to lo), so the
 * per-address limiter is on with settings a real deployment could use, and no honest client here
 * comes near them. The tests run in order: they share one broker and its history.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPair as generateKeyPairCb, randomBytes, type KeyObject } from 'node:crypto';
import { Agent } from 'node:https';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, compactVerify, flattenedDecrypt, importJWK, SignJWT, type JWK } from 'jose';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { kbsReportData } from '../../src/protocol/binding.js';
import { MAX_REQUEST_BYTES, parseFlattenedJwe } from '../../src/protocol/messages.js';
import { parseManifest, RESOURCE_MAGIC } from '../../src/protocol/resource.js';
import { tsNodeArgs } from '../helpers/ts-child.js';
import { json, send, sessionCookieOf, type Reply, type SendOptions } from './client.js';
import { DATA_KEY, KEY_ID, MODELS, testCertificates } from './fixture.js';
import { REVOKED_KEY_ID, STRICT_KEY_ID, type BrokerStats, type LoadBrokerConfig, type MemorySample } from './load-protocol.js';

const generateKeyPair = promisify(generateKeyPairCb);
const CHILD = fileURLToPath(new URL('./load-child.ts', import.meta.url));
const SESSIONS = 50;
const BAD_REQUESTS = 1000;
const BAD_CLIENTS = 40;
/**
 * Per address: 64 requests at once, 2 more a second. Honest clients here make at most 3 (a
 * session) or about 40 (a bad-request worker, auths included): never throttled, however slow the machine.
 */
const RATE_LIMIT = { burst: 64, perSecond: 2 };
/**
 * Heap growth allowed across the 1,000 bad requests. The in-memory audit sink keeps every entry on
 * the heap (about 1-2 KiB each, so 1-2 MiB here), the session table the 50 sessions; everything
 * else a refused request touches should be garbage. A leak of even 20 KiB per request would show.
 */
const MAX_HEAP_GROWTH = 20 * 2 ** 20;
/** RSS is what the OS sees: malloc arenas and TLS buffers are not returned eagerly, so its bound is loose. */
const MAX_RSS_GROWTH = 96 * 2 ** 20;

interface Ready {
  url: string;
  signingJwk: JWK;
  receiptJwk: JWK;
  kid: string;
}

/** The broker child: IPC requests answered one at a time, in order. */
class BrokerProcess {
  private stderr = '';
  private constructor(readonly child: ChildProcess) {
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString('utf8')));
  }

  static spawn(): BrokerProcess {
    const child = spawn(process.execPath, ['--expose-gc', ...tsNodeArgs(), CHILD], { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    return new BrokerProcess(child);
  }

  ask<T>(message: { type: string } & Record<string, unknown>, answer: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const onMessage = (m: { type: string; message?: string }): void => {
        done();
        if (m.type === answer) resolve(m as T);
        else reject(new Error(`broker child answered ${m.type}: ${m.message ?? ''}\n${this.stderr}`));
      };
      const onExit = (code: number | null, signal: string | null): void => {
        done();
        reject(new Error(`broker child exited (${code ?? signal}) while asked for ${message.type}:\n${this.stderr}`));
      };
      const done = (): void => {
        this.child.off('message', onMessage);
        this.child.off('exit', onExit);
      };
      this.child.on('message', onMessage);
      this.child.once('exit', onExit);
      this.child.send(message);
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    try {
      await this.ask({ type: 'close' }, 'closed');
    } catch {
      this.child.kill('SIGKILL');
    }
    await exited;
  }
}

let broker: BrokerProcess;
let ready: Ready;
let ca: string;
const tee = new SimulatedTee();
/** A TEE whose root the broker was not told to trust. */
const rogue = new SimulatedTee();
const agents: Agent[] = [];

/** One client: its own loopback address and keep-alive connections. */
class Client {
  private readonly agent: Agent;
  constructor(readonly address: string) {
    this.agent = new Agent({ keepAlive: true, localAddress: address, ca, maxSockets: 2 });
    agents.push(this.agent);
  }
  send(path: string, opts: SendOptions = {}): Promise<Reply> {
    return send(ready.url + path, { ...opts, ca, agent: this.agent });
  }
  async auth(): Promise<{ cookie: string; nonce: string }> {
    const r = await this.send('/kbs/v0/auth', json({ version: '0.4.0', tee: 'simulated', 'extra-params': '' }));
    if (r.status !== 200) throw new Error(`auth from ${this.address}: ${r.status} ${r.text}`);
    return { cookie: sessionCookieOf(r), nonce: (r.json as { nonce: string }).nonce };
  }
  attest(cookie: string | undefined, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
    const j = json(body);
    return this.send('/kbs/v0/attest', { headers: { ...j.headers, ...(cookie !== undefined ? { cookie: `kbs-session-id=${cookie}` } : {}), ...headers }, body: typeof body === 'string' ? body : j.body });
  }
  resource(o: { cookie?: string; token?: string; authorization?: string; keyId?: string; path?: string } = {}): Promise<Reply> {
    const headers: Record<string, string> = {};
    if (o.cookie !== undefined) headers.cookie = `kbs-session-id=${o.cookie}`;
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    if (o.authorization !== undefined) headers.authorization = o.authorization;
    return this.send(o.path ?? `/kbs/v0/resource/sealed-tensors/data-key/${o.keyId ?? KEY_ID}`, { method: 'GET', headers });
  }
}

/** A session's ephemeral key pair, made with node:crypto (in the product it is made in the native addon). */
async function ephemeralKey(): Promise<{ privateKey: KeyObject; jwk: Record<string, string> }> {
  const { privateKey, publicKey } = await generateKeyPair('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  return { privateKey, jwk: { kty: kty!, crv: crv!, x: x!, y: y!, alg: 'ECDH-ES+A256KW' } };
}

/** Simulated evidence bound to (bindNonce, bindKey), defaulting to what runtime-data says, optionally altered. */
async function attestBody(nonce: string, jwk: object, o: { bindNonce?: string; bindKey?: object; by?: SimulatedTee; alter?: (e: Uint8Array) => Uint8Array } = {}) {
  let evidence = await (o.by ?? tee).getEvidence(kbsReportData(o.bindNonce ?? nonce, o.bindKey ?? jwk, ''));
  if (o.alter) evidence = o.alter(evidence);
  return {
    'runtime-data': { nonce, 'tee-pubkey': jwk },
    'tee-evidence': { primary_evidence: { evidence: Buffer.from(evidence).toString('base64') }, additional_evidence: '' },
  };
}

interface Granted {
  cookie: string;
  token: string;
  nonce: string;
  body: Record<string, unknown>;
  jwk: Record<string, string>;
}

/** A full RCAR from `c`, the key opened and checked; by cookie or by bearer token. Returns what replays need. */
async function release(c: Client, by: 'cookie' | 'token'): Promise<Granted> {
  const { privateKey, jwk } = await ephemeralKey();
  const { cookie, nonce } = await c.auth();
  const body = await attestBody(nonce, jwk);
  const a = await c.attest(cookie, body);
  expect(a.status, a.text).toBe(200);
  const token = (a.json as { token: string }).token;
  const r = await c.resource(by === 'cookie' ? { cookie } : { token });
  expect(r.status, r.text).toBe(200);
  const { plaintext, protectedHeader } = await flattenedDecrypt(parseFlattenedJwe(r.json), privateKey);
  expect(protectedHeader).toMatchObject({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' });
  expect(Buffer.from(plaintext.subarray(0, 4)).toString('latin1')).toBe(RESOURCE_MAGIC);
  expect(Buffer.from(plaintext.subarray(4, 36)).equals(Buffer.from(DATA_KEY))).toBe(true);
  expect(parseManifest(plaintext.subarray(36))).toMatchObject({ v: 1, keyId: KEY_ID, models: MODELS.map(({ bundleId, headerDigest }) => ({ bundleId, headerDigest })) });
  const receipt = await compactVerify(String(r.headers['sealed-tensors-receipt']), await importJWK(ready.receiptJwk, 'ES256'));
  expect(JSON.parse(Buffer.from(receipt.payload).toString('utf8'))).toMatchObject({ keyId: KEY_ID, teePubkey: await calculateJwkThumbprint(jwk as JWK, 'sha256') });
  return { cookie, token, nonce, body, jwk };
}

/** What one bad request must get: one of these statuses, for one of these reasons. */
interface Outcome {
  reply: Reply;
  status: readonly number[];
  reason: RegExp;
}
type BadCase = (c: Client, i: number) => Promise<Outcome>;

/** Made once: a bad request per kind, each built to fail for one reason. */
async function badCases(pool: Granted[]): Promise<Record<string, BadCase>> {
  const keys = await Promise.all([ephemeralKey(), ephemeralKey(), ephemeralKey()]);
  const jwkOf = (i: number) => keys[i % keys.length]!.jwk;
  const flip = (at: (e: Uint8Array) => number) => (e: Uint8Array) => {
    const c = e.slice();
    c[at(c)]! ^= 0x01;
    return c;
  };
  const oversized = `{"x":"${'a'.repeat(MAX_REQUEST_BYTES)}"}`;
  const granted = (i: number) => pool[i % pool.length]!;
  // A token like ours, signed by another key under our kid; and one of ours with its payload changed.
  const forger = await generateKeyPair('ec', { namedCurve: 'P-256' });
  const realToken = granted(0).token;
  const [h, p, s] = realToken.split('.') as [string, string, string];
  const forged = await new SignJWT(JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>)
    .setProtectedHeader(JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as { alg: string })
    .sign(forger.privateKey);
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as { exp: number };
  const tampered = `${h}.${Buffer.from(JSON.stringify({ ...payload, exp: payload.exp + 86_400 })).toString('base64url')}.${s}`;
  const algNone = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${p}.`;

  return {
    'tampered evidence': async (c, i) => {
      const { cookie, nonce } = await c.auth();
      const variant = i % 3;
      const alter = variant === 0 ? flip((e) => e.length - 1) : variant === 1 ? flip(() => 30) : (e: Uint8Array) => e.subarray(0, e.length - 10);
      return { reply: await c.attest(cookie, await attestBody(nonce, jwkOf(i), { alter })), status: [403], reason: /^ERR_EVIDENCE_(SIGNATURE|FORMAT): / };
    },
    'evidence from an untrusted root': async (c, i) => {
      const { cookie, nonce } = await c.auth();
      return { reply: await c.attest(cookie, await attestBody(nonce, jwkOf(i), { by: rogue })), status: [403], reason: /^ERR_EVIDENCE_CHAIN: / };
    },
    'evidence bound to another key': async (c, i) => {
      const { cookie, nonce } = await c.auth();
      return { reply: await c.attest(cookie, await attestBody(nonce, jwkOf(i), { bindKey: jwkOf(i + 1) })), status: [403], reason: /^broker\.reportData: / };
    },
    'evidence bound to another nonce': async (c, i) => {
      const { cookie, nonce } = await c.auth();
      return { reply: await c.attest(cookie, await attestBody(nonce, jwkOf(i), { bindNonce: randomBytes(32).toString('base64') })), status: [403], reason: /^broker\.reportData: / };
    },
    'accepted attest replayed': async (c, i) => {
      const g = granted(i);
      return { reply: await c.attest(g.cookie, g.body), status: [401], reason: /^session: no pending challenge/ };
    },
    'old nonce on a fresh challenge': async (c, i) => {
      const g = granted(i);
      const { cookie } = await c.auth();
      return { reply: await c.attest(cookie, g.body), status: [401], reason: /not the nonce of this session's challenge/ };
    },
    // The broker answers 413 as soon as the declared length is over the limit and closes the
    // connection; a client still writing its megabyte may see the reset before the answer. Either
    // way nothing is released (the audit count below still sees one entry per request).
    'oversized body': async (c, i) => {
      if (i % 2 === 0) return { reply: await orReset(c.send('/kbs/v0/auth', { headers: { 'content-type': 'application/json' }, body: oversized })), status: [413], reason: /larger than 1048576 bytes/ };
      const { cookie } = await c.auth();
      return { reply: await orReset(c.attest(cookie, oversized)), status: [413], reason: /larger than 1048576 bytes/ };
    },
    'malformed auth': async (c, i) => {
      const bodies: [string, string, number, RegExp][] = [
        ['application/json', '{"version":', 400, /not valid JSON/],
        ['text/plain', '{"version":"0.4.0","tee":"simulated"}', 415, /must be JSON/],
        ['application/json', '{"version":"0.1.0","tee":"simulated"}', 400, /version "0\.1\.0" is not supported/],
        ['application/json', '{"version":"0.4.0","tee":"sample"}', 400, /tee "sample" is not supported/],
        ['application/json', '[]', 400, /auth request/],
      ];
      const [type, body, status, reason] = bodies[i % bodies.length]!;
      return { reply: await c.send('/kbs/v0/auth', { headers: { 'content-type': type }, body }), status: [status], reason };
    },
    'malformed attest': async (c, i) => {
      const { cookie, nonce } = await c.auth();
      const good = await attestBody(nonce, jwkOf(i));
      const bodies: [unknown, RegExp][] = [
        [{ 'tee-evidence': good['tee-evidence'] }, /runtime-data/],
        [{ ...good, 'runtime-data': { nonce, 'tee-pubkey': { ...jwkOf(i), d: 'AAAA' } } }, /member "d"/],
        [{ ...good, 'runtime-data': { nonce: 'not base64!', 'tee-pubkey': jwkOf(i) } }, /runtime-data\.nonce/],
        [{ ...good, 'tee-evidence': { primary_evidence: { evidence: 42 }, additional_evidence: '' } }, /evidence/],
        [{ ...good, surplus: true }, /surplus/],
      ];
      const [body, reason] = bodies[i % bodies.length]!;
      return { reply: await c.attest(cookie, body), status: [400], reason };
    },
    'attest without a challenge cookie': async (c, i) => {
      const body = await attestBody(randomBytes(32).toString('base64'), jwkOf(i));
      const variants: [string | undefined, Record<string, string>, RegExp][] = [
        [undefined, {}, /no kbs-session-id cookie/],
        ['garbage', {}, /not one this broker issues/],
        [randomBytes(32).toString('base64url'), {}, /no pending challenge/],
        [undefined, { cookie: `kbs-session-id=${randomBytes(32).toString('base64url')}; kbs-session-id=x` }, /2 kbs-session-id cookies/],
      ];
      const [cookie, headers, reason] = variants[i % variants.length]!;
      return { reply: await c.attest(cookie, body, headers), status: [401], reason };
    },
    'resource without an attested session': async (c, i) => {
      const variant = i % 4;
      if (variant === 0) return { reply: await c.resource(), status: [401], reason: /neither a kbs-session-id cookie nor a bearer token/ };
      if (variant === 1) return { reply: await c.resource({ cookie: 'garbage' }), status: [401], reason: /no attested session for this cookie/ };
      if (variant === 2) return { reply: await c.resource({ cookie: randomBytes(32).toString('base64url') }), status: [401], reason: /no attested session for this cookie/ };
      // Challenged but never attested.
      const { cookie } = await c.auth();
      return { reply: await c.resource({ cookie }), status: [401], reason: /no attested session for this cookie/ };
    },
    'bad bearer token': async (c, i) => {
      const variants: [string, RegExp][] = [
        [`Bearer ${forged}`, /^token: not signed by this broker/],
        [`Bearer ${tampered}`, /^token: not signed by this broker/],
        [`Bearer ${algNone}`, /^token: not a compact JWS/],
        [`Bearer ${realToken.slice(0, -4)}`, /^token: /],
        [`Basic ${Buffer.from('a:b').toString('base64')}`, /must be "Bearer <token>"/],
      ];
      const [authorization, reason] = variants[i % variants.length]!;
      return { reply: await c.resource({ authorization }), status: [401], reason };
    },
    'attested session, resource not granted': async (c, i) => {
      const g = granted(i);
      const variants: [Parameters<Client['resource']>[0], number, RegExp][] = [
        [{ cookie: g.cookie, keyId: STRICT_KEY_ID }, 403, /measurement/],
        [{ token: g.token, keyId: REVOKED_KEY_ID }, 403, /^key\.revoked: /],
        [{ cookie: g.cookie, keyId: 'no-such-key' }, 404, /no key "no-such-key"/],
        [{ token: g.token, path: '/kbs/v0/resource/other-repo/data-key/x' }, 404, /serves only sealed-tensors\/data-key/],
        [{ cookie: g.cookie, path: '/kbs/v0/resource/sealed-tensors/data-key/../x' }, 400, /./],
      ];
      const [o, status, reason] = variants[i % variants.length]!;
      return { reply: await c.resource(o), status: [status], reason };
    },
    'wrong method': async (c, i) =>
      i % 2 === 0
        ? { reply: await c.send('/kbs/v0/auth', { method: 'GET' }), status: [405], reason: /^method: GET/ }
        : { reply: await c.send(`/kbs/v0/resource/sealed-tensors/data-key/${KEY_ID}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }), status: [405], reason: /^method: POST/ },
  };
}

interface Miss {
  kind: string;
  i: number;
  status: number;
  text: string;
  why: string;
}

/** The connection was reset before an answer could be read: a refusal with nothing sent back. */
const RESET: Reply = { status: 0, headers: {}, text: '', json: undefined };
async function orReset(pending: Promise<Reply>): Promise<Reply> {
  try {
    return await pending;
  } catch (err) {
    if (['EPIPE', 'ECONNRESET'].includes((err as NodeJS.ErrnoException).code ?? '')) return RESET;
    throw err;
  }
}

/** Runs `count` bad requests, kinds in turn, from `clients` workers at once; returns every answer that was not the refusal expected. */
async function runBad(cases: Record<string, BadCase>, count: number, clients: Client[]): Promise<{ misses: Miss[]; byKind: Record<string, number> }> {
  const kinds = Object.entries(cases);
  const misses: Miss[] = [];
  const byKind: Record<string, number> = {};
  let next = 0;
  const worker = async (c: Client): Promise<void> => {
    for (let n = next++; n < count; n = next++) {
      const [kind, run] = kinds[n % kinds.length]!;
      const i = Math.floor(n / kinds.length);
      byKind[kind] = (byKind[kind] ?? 0) + 1;
      const { reply, status, reason } = await run(c, i);
      if (reply === RESET) continue;
      const body = reply.json as { type?: unknown; status?: unknown; reasons?: unknown } | undefined;
      const why = !status.includes(reply.status)
        ? `status ${reply.status}, expected ${status.join('|')}`
        : reply.headers['sealed-tensors-receipt'] !== undefined
          ? 'a receipt was sent'
          : /ciphertext|encrypted_key/.test(reply.text)
            ? 'the body looks like a JWE'
            : typeof body?.type !== 'string' || !body.type.startsWith('https://sealed-tensors.dev/errors/ERR_') || body.status !== reply.status
              ? 'not a problem body'
              : !Array.isArray(body.reasons) || !body.reasons.some((r) => typeof r === 'string' && reason.test(r))
                ? `no reason matches ${String(reason)}`
                : undefined;
      if (why !== undefined) misses.push({ kind, i, status: reply.status, text: reply.text.slice(0, 300), why });
    }
  };
  await Promise.all(clients.map(worker));
  return { misses, byKind };
}

const clientsAt = (prefix: string, n: number): Client[] => Array.from({ length: n }, (_, i) => new Client(`${prefix}.${i + 1}`));

let pool: Granted[] = [];
let cases: Record<string, BadCase>;
let afterWarmUp: MemorySample;
let statsBefore: BrokerStats;

beforeAll(async () => {
  let tls: LoadBrokerConfig['tls'];
  ({ tls, ca } = await testCertificates());
  broker = BrokerProcess.spawn();
  const config: LoadBrokerConfig = { tls, simulatedRoot: tee.rootFingerprint, rateLimit: RATE_LIMIT };
  ready = await broker.ask<Ready>({ type: 'start', ...config }, 'ready');

  // Warm-up: a few releases and a round of every bad kind, so lazy imports, JIT and pools are settled before memory is first measured.
  const warm = clientsAt('127.0.4', 10);
  pool = await Promise.all(warm.map((c, i) => release(c, i % 2 === 0 ? 'cookie' : 'token')));
  cases = await badCases(pool);
  const w = await runBad(cases, Object.keys(cases).length * 10, warm);
  expect(w.misses).toEqual([]);
  afterWarmUp = await broker.ask<MemorySample>({ type: 'memory' }, 'memory');
  statsBefore = await broker.ask<BrokerStats>({ type: 'stats' }, 'stats');
  expect(statsBefore.handedOut).toBe(pool.length);
}, 120_000);

afterAll(async () => {
  for (const a of agents) a.destroy();
  await broker?.close();
});

describe('broker under load (loopback HTTPS, broker in its own process)', () => {
  it(`${SESSIONS} concurrent sessions with valid evidence, each bound to its own key, all get their key`, async () => {
    const granted = await Promise.all(clientsAt('127.0.1', SESSIONS).map((c, i) => release(c, i % 2 === 0 ? 'cookie' : 'token')));
    expect(new Set(granted.map((g) => g.jwk.x)).size).toBe(SESSIONS);
    const s = await broker.ask<BrokerStats>({ type: 'stats' }, 'stats');
    expect(s.handedOut - statsBefore.handedOut).toBe(SESSIONS);
    expect((s.byEvent['release:allow'] ?? 0) - (statsBefore.byEvent['release:allow'] ?? 0)).toBe(SESSIONS);
    expect((s.byEvent['attest:allow'] ?? 0) - (statsBefore.byEvent['attest:allow'] ?? 0)).toBe(SESSIONS);
    expect(s.entries - statsBefore.entries).toBe(2 * SESSIONS);
    expect(s.allWiped).toBe(true);
    pool.push(...granted);
    statsBefore = s;
  }, 60_000);

  it(`${BAD_REQUESTS} bad requests release nothing, none is a 500, each is refused for its reason; memory stays flat; every refusal is audited (malformed ones grouped) and the chain holds`, async () => {
    const { misses, byKind } = await runBad(cases, BAD_REQUESTS, clientsAt('127.0.2', BAD_CLIENTS));
    expect(misses).toEqual([]);
    expect(Object.values(byKind).reduce((a, b) => a + b, 0)).toBe(BAD_REQUESTS);

    const s = await broker.ask<BrokerStats>({ type: 'stats' }, 'stats');
    expect(s.handedOut).toBe(statsBefore.handedOut); // the keystore handed out no key
    expect(s.byEvent['release:allow']).toBe(statsBefore.byEvent['release:allow']);
    expect(s.byEvent['attest:allow']).toBe(statsBefore.byEvent['attest:allow']);
    // Every refusal tied to a session, evidence or key is audited, one entry each; malformed
    // requests from one address are grouped per window (one entry counts the rest), so they
    // write at least one and at most one entry each. Nothing but denials is written.
    const groupable = ['oversized body', 'malformed auth', 'malformed attest', 'wrong method'].reduce((n, k) => n + (byKind[k] ?? 0), 0);
    const written = s.entries - statsBefore.entries;
    expect(written).toBeLessThanOrEqual(BAD_REQUESTS);
    expect(written).toBeGreaterThanOrEqual(BAD_REQUESTS - groupable + 1);
    expect(Object.keys(s.byEvent).filter((k) => k.endsWith(':deny')).reduce((n, k) => n + s.byEvent[k]! - (statsBefore.byEvent[k] ?? 0), 0)).toBe(written);
    expect(s.rateLimited).toBe(0);
    expect(s.chainBreak).toBeUndefined();
    expect(s.errors).toEqual([]);

    const after = await broker.ask<MemorySample>({ type: 'memory' }, 'memory');
    const growth = { heapUsed: after.heapUsed - afterWarmUp.heapUsed, rss: after.rss - afterWarmUp.rss };
    if (process.env.SEALED_TENSORS_LOAD_REPORT) process.stderr.write(`broker memory after warm-up ${JSON.stringify(afterWarmUp)}, after the ${BAD_REQUESTS}: ${JSON.stringify(after)}; audit entries ${s.entries}\n`);
    expect(growth.heapUsed, JSON.stringify({ afterWarmUp, after })).toBeLessThan(MAX_HEAP_GROWTH);
    expect(growth.rss, JSON.stringify({ afterWarmUp, after })).toBeLessThan(MAX_RSS_GROWTH);
    statsBefore = s;
  }, 120_000);

  it('the rate limiter throttles one abusive client (429, Retry-After, audited once) and no one else', async () => {
    const [abuser] = clientsAt('127.0.3', 1) as [Client];
    let allowed = 0;
    let refused: Reply | undefined;
    // Bounded, and without a clock: at 2 requests/s refill the 64-request burst is spent long before 1,000.
    for (let n = 0; n < 1000 && refused === undefined; n++) {
      const r = await abuser.resource();
      if (r.status === 429) refused = r;
      else {
        expect(r.status).toBe(401);
        allowed++;
      }
    }
    expect(refused, `no 429 after ${allowed} requests`).toBeDefined();
    expect(allowed).toBeGreaterThanOrEqual(RATE_LIMIT.burst);
    expect(Number(refused!.headers['retry-after'])).toBeGreaterThan(0);
    expect((refused!.json as { reasons: string[] }).reasons).toEqual([expect.stringMatching(/^rate: more than 64 requests at once/)]);
    expect((await abuser.resource()).status).toBe(429);
    // Another address is served as before.
    const other = new Client('127.0.3.2');
    await other.auth();
    const s = await broker.ask<BrokerStats>({ type: 'stats' }, 'stats');
    expect(s.rateLimited).toBe(1);
    expect(s.handedOut).toBe(statsBefore.handedOut);
    expect(s.chainBreak).toBeUndefined();
    expect(s.errors).toEqual([]);
  }, 120_000);
});
