/**
 * A software stand-in for NVIDIA GPUs, for development and tests: `simulated-nvidia` device
 * evidence (docs/PROTOCOL.md), the simulated TEE's format (STSIMEV1, Ed25519 over a root the
 * broker must be told to trust) with the 32-byte device binding as its report data. It is SIMULATED
 * in its kind, its claims and the broker's audit; a broker accepts it only with allowSimulated and a
 * key's policy only with allowSimulated.
 */
import type { KeyObject } from 'node:crypto';
import { assertBytes } from '../../bytes.js';
import { InvalidArgumentError } from '../../errors.js';
import { SimulatedTee } from './simulated.js';
import type { DeviceEvidence, DeviceEvidenceProvider } from './types.js';

/** The 32-byte device binding (the SPDM requester nonce it stands for). */
const DEVICE_NONCE_BYTES = 32;

/**
 * The default measurement a simulated GPU reports (as block m1): SHA-384("sealed-tensors simulated
 * GPU"), written out so that importing the package does not load node:crypto (a test recomputes it).
 */
export const SIMULATED_GPU_MEASUREMENT = '218213ff1e4a2de4f50d069f3a3be825cc7c086a1920a191fe20a7ce8e5938161ea9318e2b4a955f0845d0a5cd6cfa07';

export interface SimulatedGpuOptions {
  /** Ed25519 private key of the simulated root; a fresh one when absent. May be the SimulatedTee's. */
  rootKey?: KeyObject;
  /** 48-byte measurement (reported as block m1); default SIMULATED_GPU_MEASUREMENT. */
  measurement?: Uint8Array;
  /** How many GPUs to simulate (1 to 16); default 1. */
  count?: number;
  debug?: boolean;
  now?: () => Date;
}

export class SimulatedGpu implements DeviceEvidenceProvider {
  readonly kind = 'simulated-nvidia' as const;
  readonly count: number;
  readonly #tee: SimulatedTee;

  constructor(opts: SimulatedGpuOptions = {}) {
    const count = opts.count ?? 1;
    if (!Number.isSafeInteger(count) || count < 1 || count > 16) throw new InvalidArgumentError(`SimulatedGpu count must be an integer from 1 to 16, got ${String(count)}`);
    this.count = count;
    this.#tee = new SimulatedTee({
      ...(opts.rootKey !== undefined ? { rootKey: opts.rootKey } : {}),
      measurement: opts.measurement ?? new Uint8Array(Buffer.from(SIMULATED_GPU_MEASUREMENT, 'hex')),
      ...(opts.debug !== undefined ? { debug: opts.debug } : {}),
      ...(opts.now !== undefined ? { now: opts.now } : {}),
    });
  }

  /** SHA-256 of the simulated root's SPKI: what the broker's simulatedRoots must list. */
  get rootFingerprint(): string {
    return this.#tee.rootFingerprint;
  }

  async getDeviceEvidence(nonce: Uint8Array): Promise<DeviceEvidence[]> {
    assertBytes(nonce, 'nonce', DEVICE_NONCE_BYTES);
    const reportData = new Uint8Array(64);
    reportData.set(nonce);
    const out: DeviceEvidence[] = [];
    for (let i = 0; i < this.count; i++) out.push({ evidence: await this.#tee.getEvidence(reportData), uuid: `SIMULATED-GPU-${i}` });
    return out;
  }
}
