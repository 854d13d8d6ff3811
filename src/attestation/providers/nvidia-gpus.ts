/**
 * NVIDIA GPUs (Hopper, Confidential Computing mode on) as device evidence: for every GPU NVML
 * lists, its attestation report (SPDM GET_MEASUREMENTS request with the session's 32-byte device
 * binding as requester nonce, and the GPU's signed response) and its attestation certificate chain,
 * in Trustee's `nvidia` shape. NVML is NVIDIA's driver library (libnvidia-ml.so.1), called by the
 * native addon (native/nvml_attest.cc), loaded only when evidence is asked for. Where there is no
 * NVIDIA driver, no GPU, or Confidential Computing is off, getDeviceEvidence throws NoTeeError
 * saying which: never evidence of something else.
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertBytes } from '../../bytes.js';
import { IoError, NativeUnavailableError, NoTeeError, SealedTensorsError, UnsupportedError } from '../../errors.js';
import type { DeviceEvidence, DeviceEvidenceProvider } from './types.js';

/** One GPU as the addon reports it. */
export interface NvmlGpuEvidence {
  uuid: string;
  /** NVML's nvmlDeviceArchitecture_t (9: Hopper). */
  architecture: number;
  evidence: Uint8Array;
  certificatesPem: string;
}

export type NvmlAttest = (nonce: Uint8Array) => Promise<NvmlGpuEvidence[]>;

function loadNvmlAttest(): NvmlAttest {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/attestation/providers or dist/attestation/providers: the addon is three levels up.
  const path = resolve(here, '../../../build/Release/sealed_tensors.node');
  let addon: { nvmlGpuAttestation?: NvmlAttest };
  try {
    addon = createRequire(import.meta.url)(path) as typeof addon;
  } catch (err) {
    throw new NativeUnavailableError(`NVIDIA GPU evidence is gathered by the native addon (${path}), which could not be loaded: ${(err as Error).message}; build it with "npm run build:native"`, { cause: err });
  }
  if (typeof addon.nvmlGpuAttestation !== 'function') throw new NativeUnavailableError(`the native addon at ${path} cannot gather NVIDIA GPU evidence; rebuild it with "npm run build:native"`);
  return addon.nvmlGpuAttestation;
}

function typed(err: unknown): Error {
  if (err instanceof SealedTensorsError) return err;
  const code = (err as { code?: unknown }).code;
  const msg = err instanceof Error ? err.message : String(err);
  if (code === 'ERR_NO_TEE') return new NoTeeError(msg, { cause: err });
  if (code === 'ERR_UNSUPPORTED') return new UnsupportedError(msg, { cause: err });
  return new IoError(`NVIDIA GPU evidence could not be gathered: ${msg}`, { cause: err });
}

export interface NvidiaGpusOptions {
  /** Where the evidence comes from; default the addon's NVML call (tests pass a double). */
  nvml?: NvmlAttest;
}

export class NvidiaGpus implements DeviceEvidenceProvider {
  readonly kind = 'nvidia' as const;
  readonly #nvml: NvmlAttest | undefined;

  constructor(opts: NvidiaGpusOptions = {}) {
    this.#nvml = opts.nvml;
  }

  async getDeviceEvidence(nonce: Uint8Array): Promise<DeviceEvidence[]> {
    assertBytes(nonce, 'nonce', 32);
    const nvml = this.#nvml ?? loadNvmlAttest();
    let gpus: NvmlGpuEvidence[];
    try {
      gpus = await nvml(nonce);
    } catch (err) {
      throw typed(err);
    }
    if (gpus.length === 0) throw new NoTeeError('NVML found no NVIDIA GPU');
    return gpus.map((g) => ({ evidence: new Uint8Array(g.evidence), certificatesPem: g.certificatesPem, uuid: g.uuid }));
  }
}
