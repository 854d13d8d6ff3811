/**
 * The NVML entry point's nonce argument: exactly 32 bytes of a Uint8Array. Another typed array of
 * 32 elements (Float64Array, Uint16Array) has 32 elements but not those 32 bytes: the requester
 * nonce the GPU signs would be the first 32 bytes of its memory, not the session's binding.
 */
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../../src/native/addon.js';

type Nvml = (nonce: unknown) => Promise<unknown>;

describe('nvmlGpuAttestation arguments', () => {
  it('refuses a typed array that is not a Uint8Array, whatever its element count', async () => {
    const nvml = (loadAddon() as unknown as { nvmlGpuAttestation: Nvml }).nvmlGpuAttestation;
    for (const bad of [new Float64Array(32), new Uint16Array(32), new Int32Array(32), new Uint8ClampedArray(32), new Uint8Array(31), new Uint8Array(33), 'x'.repeat(32)]) {
      let started: Promise<unknown> | undefined;
      expect(() => {
        started = nvml(bad);
      }, bad.constructor.name).toThrow(/32-byte Uint8Array/);
      await started?.catch(() => {});
    }
    // A 32-byte Uint8Array starts the job (on a machine without NVIDIA's driver, it then rejects typed).
    await nvml(new Uint8Array(32)).catch((e: { code?: string }) => expect(['ERR_NO_TEE', 'ERR_UNSUPPORTED']).toContain(e.code));
  });
});
