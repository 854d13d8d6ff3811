/**
 * A small fake KBS for the session's tests: the RCAR endpoints on loopback (HTTP, or HTTPS with a
 * test CA), parsed with src/protocol's own strict parsers. It accepts any simulated evidence whose
 * report data binds the nonce and tee-pubkey (no verifier, no policy: that is the real broker's
 * job), issues an EAR-shaped ES256 token, and releases data keys as jose-made JWEs to the session's
 * tee-pubkey, with a receipt header. Each step can be overridden to misbehave.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { CompactSign, exportJWK, FlattenedEncrypt, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import { kbsReportData } from '../../src/protocol/binding.js';
import { parseAttestRequest, parseAuthRequest, parseJsonBody, parseResourcePath, MAX_REQUEST_BYTES, SESSION_COOKIE, problemType } from '../../src/protocol/messages.js';
import { encodeDataKeyResource, type ModelBinding } from '../../src/protocol/resource.js';
import { EAR_PROFILE } from '../../src/protocol/token.js';
import { parseSimulatedEvidence } from '../../src/attestation/verifiers/simulated.js';

export interface FakeKey {
  key: Uint8Array;
  models: ModelBinding[];
  /** Default: the token's expiry. */
  notAfter?: string;
  /** What the manifest says the key id is (default: the id asked for). */
  manifestKeyId?: string;
}

export type Step = 'auth' | 'attest' | 'resource';
/** Takes over a step: answer (or not) however the test wants. */
export type Override = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

export interface FakeKbsOptions {
  keys?: Record<string, FakeKey>;
  tokenTtlSeconds?: number;
  tls?: { cert: string; key: string };
  /** The tee-pubkey the token names (default: the one the session sent). */
  tokenTeePubkey?: (sent: object) => object;
}

interface KbsSession {
  nonce: string;
  teePubkey?: JWK;
  token?: string;
  tokenExp?: number;
}

export class FakeKbs {
  readonly requests: { method: string; path: string; cookie: string | undefined; authorization: string | undefined }[] = [];
  readonly override: Partial<Record<Step, Override>> = {};
  keys: Record<string, FakeKey>;
  tokenTtlSeconds: number;
  /** Attestations whose report data bound the nonce and the tee-pubkey. */
  boundAttestations = 0;
  /** The additional_evidence text of each bound attestation, as received. */
  readonly additionalEvidence: string[] = [];
  readonly #sessions = new Map<string, KbsSession>();

  private constructor(
    private readonly server: http.Server,
    readonly url: string,
    private readonly signing: { privateKey: CryptoKey; jwk: JWK },
    private readonly options: FakeKbsOptions,
  ) {
    this.keys = options.keys ?? {};
    this.tokenTtlSeconds = options.tokenTtlSeconds ?? 300;
  }

  static async start(options: FakeKbsOptions = {}): Promise<FakeKbs> {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    let kbs: FakeKbs | undefined;
    const handler = (req: IncomingMessage, res: ServerResponse) => void kbs!.handle(req, res);
    const server = options.tls ? https.createServer({ cert: options.tls.cert, key: options.tls.key }, handler) : http.createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    kbs = new FakeKbs(server, `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`, { privateKey, jwk }, options);
    return kbs;
  }

  /** Stops listening and cuts every open connection (stalled ones included). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    let length = 0;
    for await (const c of req) {
      length += (c as Buffer).length;
      if (length > MAX_REQUEST_BYTES) return problem(res, 413, 'too large', []);
      chunks.push(c as Buffer);
    }
    const body = Buffer.concat(chunks);
    const url = req.url ?? '';
    this.requests.push({ method: req.method ?? '', path: url, cookie: req.headers.cookie, authorization: req.headers.authorization });
    const step: Step | null = url === '/kbs/v0/auth' ? 'auth' : url === '/kbs/v0/attest' ? 'attest' : url.startsWith('/kbs/v0/resource/') ? 'resource' : null;
    if (step === null) return problem(res, 404, 'no such endpoint', []);
    const override = this.override[step];
    if (override) return override(req, res, body);
    return this.standard(step, req, res, body);
  }

  /** The step's normal answer (overrides call it to misbehave only some of the time). */
  async standard(step: Step, req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
    const url = req.url ?? '';
    try {
      if (step === 'auth') return this.auth(req, res, body);
      if (step === 'attest') return await this.attest(req, res, body);
      return await this.resource(req, res, url.slice('/kbs/v0/resource/'.length));
    } catch (err) {
      return problem(res, 400, (err as Error).message, []);
    }
  }

  private session(req: IncomingMessage): KbsSession | undefined {
    const m = /(?:^|;\s*)kbs-session-id=([^;]+)/.exec(req.headers.cookie ?? '');
    return m ? this.#sessions.get(m[1]!) : undefined;
  }

  private auth(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    if (req.method !== 'POST') return problem(res, 405, 'POST only', []);
    parseAuthRequest(parseJsonBody(body, MAX_REQUEST_BYTES, 'the auth request'));
    const id = randomUUID();
    const nonce = randomBytes(32).toString('base64');
    this.#sessions.set(id, { nonce });
    json(res, 200, { nonce, 'extra-params': '' }, { 'set-cookie': `${SESSION_COOKIE}=${id}; HttpOnly; Path=/kbs/v0` });
  }

  private async attest(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
    const session = this.session(req);
    if (!session) return problem(res, 401, 'no session', ['no kbs-session-id cookie']);
    const request = parseAttestRequest(parseJsonBody(body, MAX_REQUEST_BYTES, 'the attestation request'));
    if (request.runtimeData.nonce !== session.nonce) return problem(res, 403, 'denied', ['nonce is not the challenge']);
    const evidence = parseSimulatedEvidence(new Uint8Array(Buffer.from((request.primaryEvidence as { evidence: string }).evidence, 'base64')));
    const expected = kbsReportData(session.nonce, request.runtimeData.teePubkeyRaw, request.additionalEvidence);
    if (Buffer.compare(Buffer.from(evidence.reportData), Buffer.from(expected)) !== 0) {
      return problem(res, 403, 'denied', ['report data does not bind the nonce and tee-pubkey']);
    }
    this.boundAttestations++;
    this.additionalEvidence.push(request.additionalEvidence);
    const sent = request.runtimeData.teePubkeyRaw;
    const named = this.options.tokenTeePubkey ? this.options.tokenTeePubkey(sent) : sent;
    const now = Math.floor(Date.now() / 1000);
    const exp = now + this.tokenTtlSeconds;
    const token = await new SignJWT({
      eat_profile: EAR_PROFILE,
      'ear.verifier-id': { developer: 'fake-kbs', build: 'test' },
      submods: {
        cpu0: {
          'ear.status': 'affirming',
          'ear.veraison.annotated-evidence': {
            tee: 'simulated',
            claims: { simulated: true },
            runtime_data_claims: { nonce: session.nonce, 'tee-pubkey': named },
            evidence_digest: '00'.repeat(32),
          },
        },
      },
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', jwk: this.signing.jwk })
      .setIssuer('fake-kbs')
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .setJti(randomUUID())
      .sign(this.signing.privateKey);
    session.teePubkey = request.runtimeData.teePubkey as unknown as JWK;
    session.token = token;
    session.tokenExp = exp;
    json(res, 200, { token });
  }

  private async resource(req: IncomingMessage, res: ServerResponse, rest: string): Promise<void> {
    const session = this.session(req);
    if (!session?.token || !session.teePubkey) return problem(res, 401, 'not attested', ['no attested session']);
    if (req.headers.authorization !== `Bearer ${session.token}`) return problem(res, 401, 'bad token', ['bearer token missing or not this session\'s']);
    const path = parseResourcePath(rest);
    const entry = path.repository === 'sealed-tensors' && path.type === 'data-key' ? this.keys[path.tag] : undefined;
    if (!entry) return problem(res, 404, `no key ${path.tag}`, [`unknown resource ${rest}`]);
    const plain = encodeDataKeyResource(entry.key, {
      v: 1,
      keyId: entry.manifestKeyId ?? path.tag,
      models: entry.models,
      notAfter: entry.notAfter ?? new Date(session.tokenExp! * 1000).toISOString(),
    });
    const jwe = await new FlattenedEncrypt(plain)
      .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' })
      .encrypt(await importJWK({ ...session.teePubkey, alg: 'ECDH-ES+A256KW' }, 'ECDH-ES+A256KW'));
    plain.fill(0);
    const receipt = await new CompactSign(Buffer.from(JSON.stringify({ keyId: path.tag, released: new Date().toISOString() })))
      .setProtectedHeader({ alg: 'ES256', kid: 'fake-kbs' })
      .sign(this.signing.privateKey);
    json(res, 200, jwe, { 'sealed-tensors-receipt': receipt });
  }
}

export function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length, ...headers });
  res.end(body);
}

export function problem(res: ServerResponse, status: number, detail: string, reasons: string[]): void {
  json(res, status, { type: problemType(`http-${status}`), title: detail, status, detail, reasons });
}
