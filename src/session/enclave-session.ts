/**
 * EnclaveSession: the only way this package decrypts a sealed model for inference. It proves the
 * TEE to a key broker over the KBS attestation protocol, receives each data key wrapped to an
 * ephemeral key that lives in the addon's secure memory, opens it natively into a key handle, and
 * opens only the sealed models the broker's release names (bundle id and header digest).
 *
 * Trust in the broker is said explicitly: TLS to its CA (or, by explicit choice, Node's public
 * roots), and optionally its signing keys pinned (brokerKey): then the attestation token and every
 * release receipt must verify with them (broker-trust.ts), so neither a certificate for the broker's
 * name nor a misconfigured TLS client lets anyone else answer for it. The token is also checked for
 * what binds it to this session: an expiry, and our own tee-pubkey inside it.
 */
import { nodeCrypto } from '../crypto-builtin.js';
import { toHex } from '../bytes.js';
import {
  BrokerError,
  DeniedError,
  FormatError,
  InvalidArgumentError,
  NativeUnavailableError,
  NotFoundError,
  PolicyError,
  ProtocolError,
  ReleasedError,
  SealedTensorsError,
} from '../errors.js';
import type { TeeType } from '../attestation/types.js';
import { FileKind } from '../format/constants.js';
import type { DeviceEvidenceProvider, EvidenceProvider } from '../attestation/providers/types.js';
import { loadAddon, nativeStatus } from '../native/addon.js';
import type { NativeKeyHandle } from '../native/key.js';
import { SecureArena } from '../native/secure-arena.js';
import type { PublicJwk } from '../protocol/jwk.js';
import type { FlattenedJwe } from '../protocol/messages.js';
import type { DataKeyManifest, ModelBinding } from '../protocol/resource.js';
import type { EarStatus } from '../protocol/token.js';
import type { TensorSelection } from '../reader/native-file.js';
import { FileSealedSource } from '../sources/file.js';
import { sealedSource, type HttpSourceOptions } from '../sources/index.js';
import type { SealedSource } from '../sources/types.js';
import type { EphemeralKey } from './ephemeral.js';
import type { BrokerKeyInput, CheckedToken, PinnedBrokerKeys } from './broker-trust.js';
import { SessionModel } from './session-model.js';
import type { SentDevice } from './device-evidence.js';
import type * as Runtime from './session-runtime.js';

// The KBS client, broker-key checks (jose), evidence codecs, the JWE opener and the native reader
// load with the first establish() or open(): importing the package must not pay for them.
let runtime: typeof Runtime | undefined;
async function loadRuntime(): Promise<typeof Runtime> {
  return (runtime ??= await import('./session-runtime.js'));
}
/** For the code below, which runs only after establish() or open() loaded it. */
function rt(): typeof Runtime {
  if (!runtime) throw new Error('internal: the session runtime was used before it loaded');
  return runtime;
}

export const DEFAULT_ESTABLISH_TIMEOUT_MS = 60_000;
/** A key id must also be a KBS resource tag. */
const RESOURCE_TAG = /^[A-Za-z0-9._-]{1,128}$/;
/** setTimeout's limit; an expiry further away is re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface EnclaveSessionOptions {
  /** The key broker's URL (https://host:port). */
  broker: string;
  /** PEM of the broker's CA (`broker init` writes DIR/ca.pem): then the only trust anchor. Required unless trustPublicRoots. */
  ca?: string | Uint8Array;
  /**
   * Instead of `ca`: trust whatever certificate Node's bundled public roots vouch for under the
   * broker's name. Anyone who obtains one can then answer as the broker: pin brokerKey too.
   */
  trustPublicRoots?: boolean;
  /**
   * The broker's public signing keys, pinned: a P-256 JWK, or a JWK Set with its token key and its
   * receipt key (`broker init` writes DIR/broker.jwks). Then the token must be signed by a pinned key
   * with the broker's issuer and audience, and every release must come with a receipt signed by the
   * other pinned key, for this key id, this session and the released models; else BrokerTrustError.
   */
  brokerKey?: BrokerKeyInput;
  /** With brokerKey: the broker's token issuer (`iss`), when it was configured with one; default its key's "sealed-tensors-broker:<thumbprint>". */
  brokerIssuer?: string;
  /** Gathers this TEE's evidence (detectTee/defaultProvider, or a SimulatedTee for development). */
  provider: EvidenceProvider;
  /**
   * Devices attested with the TEE (composite evidence): each provider's evidence is bound to the same
   * challenge and key and sent as additional evidence, for keys whose policy requires them
   * (requireDevices). NvidiaGpus for the GPUs of this confidential VM; SimulatedGpu for development.
   */
  devices?: readonly DeviceEvidenceProvider[];
  /** The data keys to fetch, by key id (a sealed header's keyId). */
  keys: readonly string[];
  /** Cancels the establishment. */
  signal?: AbortSignal;
  /** Deadline for the whole establishment (evidence and every request); default 60 s. */
  timeoutMs?: number;
  /** Time to connect and longest silence per request (see RcarClientOptions). */
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  /**
   * Development only: run even when the process could not be hardened (core dumps and ptrace of
   * secure memory not disabled). session.info.hardened says which it is.
   */
  allowUnhardened?: boolean;
  /** Development only: accept http:// for a loopback broker. */
  allowPlainHttpOnLoopback?: boolean;
  /**
   * Keep the secure memory of a released `loadAll()` (wiped at once, still locked) for the next
   * load in this session, until close(): a reload skips the first touch of fresh locked memory,
   * which costs more than the decryption. Default true; false unmaps it at every release.
   */
  reuseMemory?: boolean;
}

export interface SessionOpenOptions {
  /** Read only these tensors (names, each must exist; or a predicate): only their chunks are read. */
  only?: TensorSelection;
  /** Decryption threads (default: every core). */
  threads?: number;
  /** Aborts reads: a load aborted midway closes the model and wipes what it decrypted. */
  signal?: AbortSignal;
  /** An https:// source: PEM of the CA that issued the file server's certificate (then the only trust anchor). */
  ca?: string | Uint8Array;
  /** An http(s) source: extra request headers (e.g. authorization). */
  headers?: Record<string, string>;
  /** Development and tests only: accept http:// for a loopback file server. */
  allowHttp?: boolean;
  /** An http(s) source: sealed bytes fetched per step (see NativeReaderOptions.windowBytes). */
  windowBytes?: number;
}

export interface SessionVerdict {
  /** The broker's appraisal (EAR status) as its token states it. */
  status: EarStatus | 'unknown';
  /** The tee the broker appraised, as the token names it. */
  tee?: string;
  /** The claims the broker verified, as the token states them. */
  claims?: Record<string, unknown>;
  /** The token's id (jti), to find this appraisal in the broker's audit log. */
  tokenId?: string;
  /** The broker's appraisal of each device it attested (the token's gpu<i> submods). */
  devices?: { submod: string; status: EarStatus | 'unknown'; label?: string; tee?: string }[];
}

export interface SessionKeyInfo {
  keyId: string;
  /** The sealed models this release may open. */
  models: ModelBinding[];
  /** The release is void after this. */
  notAfter: Date;
}

export interface SessionInfo {
  /** The TEE this session attested as. */
  tee: TeeType;
  /** The devices it attested with (additional evidence), as the broker labels them. */
  devices: SentDevice[];
  broker: string;
  verdict: SessionVerdict;
  /** The broker's signed receipts (compact JWS), one per released key that came with one. */
  receipts: { keyId: string; receipt: string }[];
  /** The first receipt, for the common one-key case. */
  receipt?: string;
  /** The pinned broker key (kid) that verified the token, when brokerKey was given; the receipts were verified too then. */
  brokerKeyId?: string;
  /** False when the process runs without its hardening (allowUnhardened). */
  hardened: boolean;
  /** The session ends with the broker's token. */
  expiresAt: Date;
  keys: SessionKeyInfo[];
}

interface HeldKey {
  handle: NativeKeyHandle;
  manifest: DataKeyManifest;
  notAfter: Date;
}

export class EnclaveSession {
  readonly #keys: Map<string, HeldKey>;
  readonly #models = new Set<SessionModel>();
  /** Secure buffers of released loads, wiped, for the next loadAll (null: reuseMemory false). */
  readonly #arena: SecureArena | null;
  readonly #info: SessionInfo;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  private constructor(keys: Map<string, HeldKey>, info: SessionInfo, reuseMemory: boolean) {
    this.#keys = keys;
    this.#arena = reuseMemory ? new SecureArena() : null;
    this.#info = info;
    this.#armExpiry();
  }

  /**
   * Attests this TEE to the broker and fetches the data keys. All or nothing: on any failure
   * every key handle and the ephemeral key are released before the error is thrown.
   */
  static async establish(options: EnclaveSessionOptions): Promise<EnclaveSession> {
    await loadRuntime();
    const keyIds = checkOptions(options);
    const deviceProviders = rt().checkDeviceProviders(options.devices);
    // The broker's keys, before anything else: a bad brokerKey is the caller's mistake, found without a connection.
    const pinned = options.brokerKey !== undefined ? await rt().pinBrokerKeys(options.brokerKey) : undefined;
    const status = nativeStatus();
    if (!status.available) {
      throw new NativeUnavailableError(`an EnclaveSession needs the native addon (keys never enter the JS heap): ${status.reason ?? 'not available'}`);
    }
    if (!status.hardened && !options.allowUnhardened) {
      throw new NativeUnavailableError(
        'this process could not be hardened (core dumps of secure memory not disabled); pass allowUnhardened for development only',
      );
    }

    const timeoutMs = options.timeoutMs ?? DEFAULT_ESTABLISH_TIMEOUT_MS;
    const deadline = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, deadline.signal]) : deadline.signal;
    const client = new (rt().RcarClient)({
      broker: options.broker,
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(options.trustPublicRoots ? { trustPublicRoots: true } : {}),
      ...(options.allowPlainHttpOnLoopback ? { allowPlainHttpOnLoopback: true } : {}),
      ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
      ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      requestTimeoutMs: timeoutMs,
      signal,
    });
    // Armed only once nothing before it can throw: the finally below clears it.
    const timer = setTimeout(
      () => deadline.abort(new BrokerError(`the key release from ${client.origin} did not complete within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const held = new Map<string, HeldKey>();
    let eph: EphemeralKey | null = null;
    let hardened = status.hardened;
    try {
      eph = rt().generateEphemeralKey('ec-p256');
      // The addon sets up OpenSSL's secure heap with the first ephemeral key: only now does
      // hardening() say whether the private key sits in locked, non-dumpable memory.
      const heapLocked = loadAddon().hardening().opensslSecureHeap;
      if (!heapLocked && !options.allowUnhardened) {
        throw new NativeUnavailableError(
          "OpenSSL's secure heap (where the session's ephemeral private key lives) could not be locked in memory: raise RLIMIT_MEMLOCK (ulimit -l) by at least 256 KiB, or pass allowUnhardened for development only",
        );
      }
      hardened = status.hardened && heapLocked;
      const publicJwk = eph.publicJwk;
      const teeName = rt().sessionTeeName(options.provider.tee);
      const challenge = await client.auth(teeName);
      checkHashSelection(challenge['extra-params']);
      // Devices first: the primary evidence's report data covers their additional_evidence text.
      const devices = await raceSignal(rt().gatherDeviceEvidence(deviceProviders, challenge.nonce, publicJwk), signal);
      const reportData = rt().kbsReportData(challenge.nonce, publicJwk, devices.additionalEvidence);
      const teeEvidence = await raceSignal(rt().gatherTeeEvidence(options.provider, reportData, devices.additionalEvidence), signal);
      const token = await client.attest({ 'runtime-data': { nonce: challenge.nonce, 'tee-pubkey': publicJwk }, 'tee-evidence': teeEvidence });
      const checked = await checkToken(token, publicJwk, pinned, options.brokerIssuer);
      const ourThumbprint = pinned ? await rt().jwkThumbprint(publicJwk) : '';
      const receipts: { keyId: string; receipt: string }[] = [];
      for (const keyId of keyIds) {
        const released = await client.resource(rt().DATA_KEY_REPOSITORY, rt().DATA_KEY_TYPE, keyId);
        signal.throwIfAborted();
        const { key, manifest: manifestBytes } = openRelease(eph, released.jwe, keyId);
        try {
          const manifest = rt().parseManifest(manifestBytes);
          if (manifest.keyId !== keyId) {
            throw new ProtocolError(`the broker released key "${manifest.keyId}" when "${keyId}" was asked for`);
          }
          const notAfter = new Date(Math.min(Date.parse(manifest.notAfter), checked.expiresAt.getTime()));
          if (notAfter.getTime() <= Date.now()) {
            throw new DeniedError(`the release of key "${keyId}" expired at ${manifest.notAfter} before it arrived: check the clocks, then establish again`, {
              status: 401,
              reasons: ['release expired'],
            });
          }
          if (pinned) {
            await rt().verifyReleaseReceipt(released.receipt, pinned, checked.signer!, { keyId, teePubkey: ourThumbprint, models: manifest.models });
          }
          held.set(keyId, { handle: key, manifest, notAfter });
        } catch (err) {
          key.release();
          throw err;
        }
        if (released.receipt !== undefined) receipts.push({ keyId, receipt: released.receipt });
      }
      const info: SessionInfo = {
        tee: options.provider.tee,
        devices: devices.sent,
        broker: client.origin,
        verdict: checked.verdict,
        receipts,
        ...(receipts[0] ? { receipt: receipts[0].receipt } : {}),
        hardened,
        ...(checked.signer ? { brokerKeyId: checked.signer.kid } : {}),
        expiresAt: checked.expiresAt,
        keys: [...held].map(([keyId, k]) => ({ keyId, models: k.manifest.models.map((m) => ({ ...m })), notAfter: k.notAfter })),
      };
      return new EnclaveSession(held, info, options.reuseMemory ?? true);
    } catch (err) {
      for (const k of held.values()) k.handle.release();
      throw err;
    } finally {
      clearTimeout(timer);
      eph?.release(); // only needed to open the releases
      client.close();
    }
  }

  /** What this session is: TEE, the broker's verdict and receipts, hardening, expiry, keys and the models each may open. */
  get info(): SessionInfo {
    return {
      ...this.#info,
      verdict: { ...this.#info.verdict, ...(this.#info.verdict.devices ? { devices: this.#info.verdict.devices.map((d) => ({ ...d })) } : {}) },
      devices: this.#info.devices.map((d) => ({ ...d })),
      expiresAt: new Date(this.#info.expiresAt),
      receipts: this.#info.receipts.map((r) => ({ ...r })),
      keys: this.#info.keys.map((k) => ({ ...k, notAfter: new Date(k.notAfter), models: k.models.map((m) => ({ ...m })) })),
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True once the broker's token (or every key's release) has run out. */
  get expired(): boolean {
    return Date.now() >= this.#info.expiresAt.getTime();
  }

  /**
   * Opens a sealed model (file, sealed index, or folder holding one) with the key its header names,
   * if the broker's release lists this exact model (bundle id and header digest of its top-level
   * file): else PolicyError. Tensors are read on the hardened native path only.
   */
  async open(source: string | URL | SealedSource, options: SessionOpenOptions = {}): Promise<SessionModel> {
    this.#checkLive();
    await loadRuntime();
    const only = options.only;
    if (only !== undefined) {
      const checkSelection: (only: unknown) => asserts only is TensorSelection = rt().checkSelection;
      checkSelection(only); // before anything is fetched
    }
    if (options.threads !== undefined && (!Number.isSafeInteger(options.threads) || options.threads < 1 || options.threads > 256)) {
      throw new InvalidArgumentError(`threads must be an integer from 1 to 256, got ${String(options.threads)}`);
    }
    options.signal?.throwIfAborted();
    const src = await resolveSource(source, options);
    const where = src.description;

    // The public header first, through the source (no key used, no tensor chunk fetched): which
    // key, and is this model on the release?
    let pre: { keyId: string; bundleId: string; headerDigest: string };
    const file = await src.open();
    try {
      const { header, headerBytes } = await rt().readPublicHeader(file);
      if (header.kind === FileKind.SHARD) {
        throw new FormatError(`${where} is one shard of a sharded model: open the model's sealed index (or its folder) instead`);
      }
      pre = { keyId: header.keyId, bundleId: toHex(header.bundleId), headerDigest: nodeCrypto().createHash('sha256').update(headerBytes).digest('hex') };
    } finally {
      await file.close();
    }
    const key = this.#keyFor(pre.keyId);
    this.#checkBinding(where, key.manifest, pre);

    // `only` goes to the reader: it opens only the shards, and reads only the chunks, of the selection.
    const reader = await rt().NativeSealedModelReader.open(src, key.handle, {
      ...(only !== undefined ? { only } : {}),
      ...(options.threads !== undefined ? { threads: options.threads } : {}),
      ...(options.windowBytes !== undefined ? { windowBytes: options.windowBytes } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    let model: SessionModel;
    try {
      // The same check on what the reader itself read and authenticated: the file may have been
      // replaced between the two reads.
      const top = reader.index ?? reader.files[0]!;
      const opened = { keyId: top.header.keyId, bundleId: toHex(top.header.bundleId), headerDigest: toHex(top.headerDigest) };
      if (opened.keyId !== pre.keyId) throw new PolicyError(`${where} changed while it was being opened (another key id): open it again`);
      this.#checkBinding(where, key.manifest, opened);
      // After the reader ran the caller's predicate, which may itself have closed the session.
      if (this.#closed) throw new ReleasedError('the session was closed while the model was being opened');
      model = new SessionModel(
        reader,
        only !== undefined,
        { path: where, ...opened, sharded: reader.sharded },
        options.signal,
        (m) => this.#models.delete(m),
        () => {
          this.#checkLive();
          this.#keyFor(opened.keyId);
        },
        this.#arena ?? undefined,
      );
    } catch (err) {
      reader.close();
      throw err;
    }
    this.#models.add(model);
    return model;
  }

  /** Releases every key handle and closes every model it opened (wiping every tensor they handed out). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const errors: unknown[] = [];
    for (const m of [...this.#models]) {
      try {
        m.close();
      } catch (err) {
        errors.push(err);
      }
    }
    this.#models.clear();
    this.#arena?.close(); // after the models: what they gave back is released with the rest
    this.#releaseKeys();
    if (errors.length > 0) throw errors[0];
  }

  #releaseKeys(): void {
    for (const k of this.#keys.values()) k.handle.release();
  }

  /** The token ran out: every key released and every model closed (what they handed out wiped). */
  #expire(): void {
    this.#releaseKeys();
    for (const m of [...this.#models]) {
      try {
        m.close();
      } catch {
        // closing the rest matters more than one model's close error
      }
    }
    this.#arena?.close();
  }

  #checkLive(): void {
    if (this.#closed) throw new ReleasedError('this session was closed: establish a new one');
    if (this.expired) {
      this.#expire();
      throw new DeniedError(`this session expired at ${this.#info.expiresAt.toISOString()} (the broker's token ran out): establish a new session`, {
        status: 401,
        reasons: ['session expired'],
      });
    }
  }

  #keyFor(keyId: string): HeldKey {
    const key = this.#keys.get(keyId);
    if (!key) {
      throw new NotFoundError(
        `this model is sealed under key "${keyId}", which this session did not fetch (it holds ${[...this.#keys.keys()].map((k) => `"${k}"`).join(', ')}): establish the session with keys: ["${keyId}"]`,
      );
    }
    if (key.handle.released || key.notAfter.getTime() <= Date.now()) {
      key.handle.release();
      throw new DeniedError(`the release of key "${keyId}" expired at ${key.notAfter.toISOString()}: establish a new session`, { status: 401, reasons: ['release expired'] });
    }
    return key;
  }

  #checkBinding(path: string, manifest: DataKeyManifest, model: { bundleId: string; headerDigest: string }): void {
    if (!rt().manifestAllows(manifest, model)) {
      throw new PolicyError(
        `${path} (bundle ${model.bundleId}, header digest ${model.headerDigest}) is not registered for this key at the broker: key "${manifest.keyId}" may open only the ${manifest.models.length} model version(s) registered with it (another model, or an older or newer version of it, is refused); ask the broker's operator to register it`,
      );
    }
  }

  /**
   * Releases each key when its release runs out, and everything when the token does, so an idle
   * expired session holds nothing. Re-armed after each key's expiry: the token's still has to come.
   */
  #armExpiry(): void {
    const arm = (): void => {
      this.#timer = null;
      if (this.#closed) return;
      if (this.expired) {
        this.#expire(); // the token's end ends everything
        return;
      }
      // A key's own end (also checked at open) releases its handle; then wait for the next end.
      const now = Date.now();
      const later: number[] = [];
      for (const k of this.#keys.values()) {
        if (k.notAfter.getTime() <= now) k.handle.release();
        else later.push(k.notAfter.getTime());
      }
      const at = Math.min(this.#info.expiresAt.getTime(), ...later);
      this.#timer = setTimeout(arm, Math.min(Math.max(at - now, 0), MAX_TIMER_MS));
      this.#timer.unref();
    };
    arm();
  }
}

/**
 * The binding hashes with SHA-384 (what Trustee uses for SNP and TDX, and we for every type). A
 * broker that announces another hash in the challenge would compute another report data: refuse.
 */
function checkHashSelection(extra: unknown): void {
  if (typeof extra !== 'object' || extra === null) return;
  const selected = (extra as Record<string, unknown>)['selected-hash-algorithm'];
  if (selected !== undefined && selected !== 'sha384') {
    throw new ProtocolError(`the broker selected the ${JSON.stringify(selected)} hash for the report-data binding; this session binds with sha384`);
  }
}

/** The addon opens the JWE into a key handle; anything but a library error from it is still a bad release. */
function openRelease(eph: EphemeralKey, jwe: FlattenedJwe, keyId: string): { key: NativeKeyHandle; manifest: Uint8Array } {
  try {
    return rt().unwrapDataKey(eph, jwe);
  } catch (cause) {
    if (cause instanceof SealedTensorsError) throw cause;
    throw new ProtocolError(`the broker's release of key "${keyId}" could not be opened (${(cause as Error)?.message ?? String(cause)})`, { cause });
  }
}

function checkOptions(options: EnclaveSessionOptions): string[] {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('EnclaveSession.establish needs an options object');
  if (typeof options.broker !== 'string') throw new InvalidArgumentError('broker must be the key broker URL (https://host:port)');
  let url: URL | undefined;
  try {
    url = new URL(options.broker);
  } catch {
    // RcarClient says what is wrong with it
  }
  if (url) rt().checkBrokerTransport(url, options);
  if (options.brokerIssuer !== undefined && (typeof options.brokerIssuer !== 'string' || options.brokerIssuer.length === 0 || options.brokerIssuer.length > 256)) {
    throw new InvalidArgumentError('brokerIssuer must be a non-empty string of at most 256 characters');
  }
  if (options.brokerIssuer !== undefined && options.brokerKey === undefined) throw new InvalidArgumentError('brokerIssuer is checked against a pinned key: give brokerKey too');
  const provider = options.provider as Partial<EvidenceProvider> | undefined;
  if (!provider || typeof provider.getEvidence !== 'function' || typeof provider.tee !== 'string') {
    throw new InvalidArgumentError('provider must be an EvidenceProvider (defaultProvider() inside a TEE, or a SimulatedTee for development)');
  }
  if (!Array.isArray(options.keys) || options.keys.length === 0) throw new InvalidArgumentError('keys must list at least one key id');
  const ids = new Set<string>();
  for (const k of options.keys) {
    if (typeof k !== 'string' || !RESOURCE_TAG.test(k)) {
      throw new InvalidArgumentError(`key id ${JSON.stringify(k)} cannot be fetched from a KBS (a resource tag: letters, digits, . _ -, at most 128)`);
    }
    ids.add(k);
  }
  if (options.reuseMemory !== undefined && typeof options.reuseMemory !== 'boolean') throw new InvalidArgumentError('reuseMemory must be a boolean');
  // Past 2^31 - 1 ms Node's timers fire at once.
  for (const name of ['timeoutMs', 'connectTimeoutMs', 'idleTimeoutMs'] as const) {
    const v = options[name];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1 || v > MAX_TIMER_MS)) {
      throw new InvalidArgumentError(`${name} must be a positive integer of milliseconds, at most ${MAX_TIMER_MS}, got ${String(v)}`);
    }
  }
  return [...ids];
}

/** The token's signature (by a pinned broker key, else by its own header key: shape only), expiry and binding to our key. */
async function checkToken(
  token: string,
  ours: PublicJwk,
  pinned: PinnedBrokerKeys | undefined,
  issuer: string | undefined,
): Promise<{ expiresAt: Date; verdict: SessionVerdict; signer?: CheckedToken['signer'] }> {
  const { payload, signer } = await rt().verifyBrokerToken(token, pinned, issuer);
  const bound = rt().parsePublicJwk(rt().teePubkeyOfToken(payload));
  if (!sameKey(bound, ours)) {
    throw new ProtocolError("the broker's attestation token names another session key (tee-pubkey): it was not issued for this session");
  }
  const exp = payload['exp'] as number;
  // jose accepts any finite number: one past what a Date holds would make every expiry check false.
  const expiresAt = new Date(exp * 1000);
  if (Number.isNaN(expiresAt.getTime())) {
    throw new ProtocolError(`the broker's attestation token has an expiry (exp ${exp}) that is not a representable time`);
  }
  const submods = (typeof payload['submods'] === 'object' && payload['submods'] !== null ? payload['submods'] : {}) as Record<string, unknown>;
  const cpu0 = (submods['cpu0'] ?? {}) as Record<string, unknown>;
  const annotated = (cpu0['ear.veraison.annotated-evidence'] ?? {}) as Record<string, unknown>;
  const status = cpu0['ear.status'];
  const verdict: SessionVerdict = {
    status: status === 'affirming' || status === 'warning' || status === 'contraindicated' || status === 'none' ? status : 'unknown',
    ...(typeof annotated['tee'] === 'string' ? { tee: annotated['tee'] } : {}),
    ...(typeof annotated['claims'] === 'object' && annotated['claims'] !== null ? { claims: annotated['claims'] as Record<string, unknown> } : {}),
    ...(typeof payload['jti'] === 'string' ? { tokenId: payload['jti'] } : {}),
  };
  // The broker's appraisal of each device (submods gpu0, gpu1, ...), for session.info; informative only.
  const devices = Object.entries(submods)
    .filter(([name, sub]) => rt().DEVICE_SUBMOD.test(name) && typeof sub === 'object' && sub !== null)
    .map(([name, sub]): NonNullable<SessionVerdict['devices']>[number] => {
      const s = sub as Record<string, unknown>;
      const ae = (s['ear.veraison.annotated-evidence'] ?? {}) as Record<string, unknown>;
      const device = (ae['device'] ?? {}) as Record<string, unknown>;
      const st = s['ear.status'];
      return {
        submod: name,
        status: st === 'affirming' || st === 'warning' || st === 'contraindicated' || st === 'none' ? st : 'unknown',
        ...(typeof device['label'] === 'string' ? { label: device['label'] } : {}),
        ...(typeof ae['tee'] === 'string' ? { tee: ae['tee'] } : {}),
      };
    });
  if (devices.length > 0) verdict.devices = devices;
  return { expiresAt, verdict, ...(signer ? { signer } : {}) };
}

function sameKey(a: PublicJwk, b: PublicJwk): boolean {
  if (a.kty === 'EC' && b.kty === 'EC') return a.x === b.x && a.y === b.y && a.crv === b.crv;
  if (a.kty === 'RSA' && b.kty === 'RSA') return a.n === b.n && a.e === b.e;
  return false;
}

/** A path (file, index, or folder holding one index), an http(s) URL, or a SealedSource as it is. */
async function resolveSource(source: string | URL | SealedSource, options: SessionOpenOptions): Promise<SealedSource> {
  if (typeof source === 'string' && source.length === 0) throw new InvalidArgumentError('source must be a sealed model path or an http(s) URL');
  const http: HttpSourceOptions = {
    ...(options.ca !== undefined ? { ca: options.ca } : {}),
    ...(options.headers !== undefined ? { headers: options.headers } : {}),
    ...(options.allowHttp ? { allowHttp: true } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const src = sealedSource(source, http);
  const httpOptions = options.ca !== undefined || options.headers !== undefined || options.allowHttp === true;
  if (httpOptions && !(typeof source === 'string' || source instanceof URL)) {
    throw new InvalidArgumentError('ca, headers and allowHttp apply to an http(s) URL: give a SealedSource its options when you make it');
  }
  if (httpOptions && src instanceof FileSealedSource) throw new InvalidArgumentError('ca, headers and allowHttp apply to an http(s) URL, not to a path');
  // A folder resolves to its one sealed index, so the header checked is the one the reader opens.
  return src instanceof FileSealedSource ? new FileSealedSource(await rt().resolveSealedModelPath(src.path)) : src;
}

/** Resolves with `promise`, or rejects with the signal's reason as soon as it aborts. */
function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
