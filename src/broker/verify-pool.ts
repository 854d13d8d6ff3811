/**
 * Evidence verification in worker threads, so the main thread's TLS, HTTP and JOSE work runs on
 * another core while a report's signature and chain are checked (an ECDSA P-384 verification and
 * X.509 work per attestation). Workers hold no broker state: a job is the evidence bytes, the DER
 * certificates sent with it, `now` and the roots to pin; the answer is the verifier's claims and
 * checks, or its typed error. Challenges, sessions, the audit log and keys stay on the main thread.
 *
 * Defaults deny: a worker that exits, throws outside a job or does not answer within the timeout
 * fails every job it held with VerifierUnavailableError (the handler denies), and is replaced on
 * the next job. Nothing is retried: a crash is never turned into an accept.
 */
import type { X509Certificate } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Check, Claims, TeeType } from '../attestation/types.js';
import type { BrokerVerifyOptions } from './options.js';
import { BrokerError, EvidenceChainError, EvidenceFormatError, EvidenceSignatureError, InvalidArgumentError, PolicyError, SealedTensorsError } from '../errors.js';

/** What each worker gets once: the broker's verifyOptions in cloneable form (certificates as DER). */
export interface PoolStatics {
  issuers: Uint8Array[];
  crls?: Uint8Array[];
  collateral?: { tcbInfo?: unknown; qeIdentity?: unknown; crls: Uint8Array[]; certificates: Uint8Array[] };
}

export interface PoolJob {
  type: TeeType;
  evidence: Uint8Array;
  /** DER certificates sent with the evidence (after the broker's own issuers, as in-process). */
  certificates: Uint8Array[];
  nowMs: number;
  trustedRoots?: readonly string[];
}

export interface PoolResult {
  tee: TeeType;
  claims: Claims;
  checks: Check[];
}

/** The verifier could not give an answer (worker crashed, hung or was closed): the request is denied. */
export class VerifierUnavailableError extends BrokerError {}

export interface VerifyPoolOptions {
  /** Worker threads, 1 to 16. */
  threads: number;
  /** Job timeout; the worker is then terminated. Default 30 s. */
  timeoutMs?: number;
  /** The worker script (tests); default verify-worker.js beside this module. */
  workerUrl?: URL;
  onError?: (err: unknown) => void;
}

interface Pending {
  resolve: (r: PoolResult) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
  dead: boolean;
}

type Answer = { id: number; ok: true; result: PoolResult } | { id: number; ok: false; error: { code?: string; message: string } };

const ERRORS: Record<string, new (m: string) => SealedTensorsError> = {
  ERR_EVIDENCE_FORMAT: EvidenceFormatError,
  ERR_EVIDENCE_SIGNATURE: EvidenceSignatureError,
  ERR_EVIDENCE_CHAIN: EvidenceChainError,
  ERR_INVALID_ARGUMENT: InvalidArgumentError,
  ERR_POLICY: PolicyError,
};

/** The worker's typed error rebuilt with its code and message; anything else is the broker's failure. */
function rebuild(e: { code?: string; message: string }): Error {
  const Cls = e.code !== undefined ? ERRORS[e.code] : undefined;
  return Cls ? new Cls(e.message) : new BrokerError(`the evidence verifier failed: ${e.message}`);
}

export class VerifyPool {
  private readonly slots: (Slot | undefined)[];
  private readonly timeoutMs: number;
  private readonly workerUrl: URL;
  private readonly onError: (err: unknown) => void;
  private nextId = 1;
  private closed = false;

  constructor(private readonly statics: PoolStatics, opts: VerifyPoolOptions) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1 || opts.threads > 16) throw new InvalidArgumentError(`verify threads must be an integer from 1 to 16, got ${String(opts.threads)}`);
    this.slots = new Array(opts.threads).fill(undefined);
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.workerUrl = opts.workerUrl ?? new URL('./verify-worker.js', import.meta.url);
    this.onError = opts.onError ?? (() => {});
  }

  private spawn(i: number): Slot {
    const worker = new Worker(this.workerUrl, { workerData: this.statics });
    const slot: Slot = { worker, pending: new Map(), dead: false };
    worker.unref(); // a pool never keeps the process alive; jobs in flight keep their requests' sockets
    worker.on('message', (a: Answer) => {
      const p = slot.pending.get(a.id);
      if (!p) return;
      slot.pending.delete(a.id);
      clearTimeout(p.timer);
      if (a.ok) p.resolve(a.result);
      else p.reject(rebuild(a.error));
    });
    const fail = (why: string, err?: unknown): void => {
      if (err !== undefined) this.onError(err);
      this.retire(slot, why);
      if (this.slots[i] === slot) this.slots[i] = undefined;
    };
    worker.on('error', (err) => fail(`the verifier thread failed (${err.message})`, err));
    worker.on('messageerror', (err) => fail('the verifier thread sent an unreadable answer', err));
    worker.on('exit', (code) => fail(`the verifier thread exited (code ${code})`));
    this.slots[i] = slot;
    return slot;
  }

  /** Fails every job the slot holds and stops it; the next job gets a fresh worker. */
  private retire(slot: Slot, why: string): void {
    const wasDead = slot.dead;
    slot.dead = true;
    for (const [id, p] of slot.pending) {
      slot.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new VerifierUnavailableError(`${why}; the evidence was not verified`));
    }
    if (!wasDead) void slot.worker.terminate().catch(() => {});
  }

  verify(job: PoolJob): Promise<PoolResult> {
    if (this.closed) return Promise.reject(new VerifierUnavailableError('the verifier pool is closed; the evidence was not verified'));
    // The live worker with the fewest jobs, or a fresh one in an empty slot.
    let best: Slot | undefined;
    let bestIndex = -1;
    for (const [i, s] of this.slots.entries()) {
      if (s === undefined || s.dead) {
        best = undefined;
        bestIndex = i;
        break;
      }
      if (best === undefined || s.pending.size < best.pending.size) {
        best = s;
        bestIndex = i;
      }
    }
    const slot = best ?? this.spawn(bestIndex);
    const id = this.nextId++;
    return new Promise<PoolResult>((resolve, reject) => {
      const timer = setTimeout(() => this.retire(slot, `the verifier thread did not answer within ${this.timeoutMs} ms`), this.timeoutMs);
      timer.unref();
      slot.pending.set(id, { resolve, reject, timer });
      try {
        slot.worker.postMessage({ id, ...job });
      } catch (err) {
        slot.pending.delete(id);
        clearTimeout(timer);
        reject(new VerifierUnavailableError(`the job could not be sent to the verifier thread: ${(err as Error).message}`));
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const live = this.slots.filter((s): s is Slot => s !== undefined);
    this.slots.fill(undefined);
    for (const s of live) this.retire(s, 'the verifier pool was closed');
    await Promise.all(live.map((s) => s.worker.terminate().catch(() => {})));
  }
}

/** The broker's verifyOptions as a worker gets them: certificates as DER. */
export function poolStatics(v: BrokerVerifyOptions): PoolStatics {
  const der = (c: X509Certificate): Uint8Array => new Uint8Array(c.raw);
  return {
    issuers: (v.certificates ?? []).map(der),
    ...(v.crls !== undefined ? { crls: [...v.crls] } : {}),
    ...(v.collateral !== undefined ? { collateral: { ...v.collateral, crls: [...v.collateral.crls], certificates: v.collateral.certificates.map(der) } } : {}),
  };
}
