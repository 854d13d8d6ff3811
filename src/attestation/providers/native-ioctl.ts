import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IoError, NativeUnavailableError, NoTeeError, SealedTensorsError } from '../../errors.js';

/**
 * The three TEE ioctls of the native addon (native/tee_ioctl.cc). Loaded lazily and only by the
 * ioctl fallbacks, so verifiers never need native code.
 */
export interface TeeIoctls {
  teeSnpGetReport(reportData: Uint8Array, vmpl?: number): Promise<Uint8Array>;
  teeTdxGetReport0(reportData: Uint8Array): Promise<Uint8Array>;
  teeNsmRequest(request: Uint8Array): Promise<Uint8Array>;
}

let cached: TeeIoctls | undefined;

export function loadTeeIoctls(): TeeIoctls {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  // src/attestation/providers or dist/attestation/providers: the addon is three levels up.
  const path = resolve(here, '../../../build/Release/sealed_tensors.node');
  let addon: Partial<TeeIoctls>;
  try {
    addon = createRequire(import.meta.url)(path) as Partial<TeeIoctls>;
  } catch (err) {
    throw new NativeUnavailableError(
      `the native addon (${path}) could not be loaded: ${(err as Error).message}; build it with "npm run build:native" (needs a C++ compiler and python3), or use a kernel with configfs-tsm (Linux 6.7+)`,
      { cause: err },
    );
  }
  if (typeof addon.teeSnpGetReport !== 'function' || typeof addon.teeTdxGetReport0 !== 'function' || typeof addon.teeNsmRequest !== 'function') {
    throw new NativeUnavailableError(`the native addon at ${path} has no TEE ioctls; rebuild it with "npm run build:native"`);
  }
  cached = addon as TeeIoctls;
  return cached;
}

/** Maps the addon's "ENOENT: ..." messages to typed errors with advice. */
export function ioctlError(err: unknown, device: string): Error {
  const msg = err instanceof Error ? err.message : String(err);
  if (/^(ENOENT|ENODEV|ENOTTY)/.test(msg)) {
    return new NoTeeError(`${device} is not usable (${msg}); this machine is not a guest of that TEE`, { cause: err });
  }
  if (/^(EACCES|EPERM)/.test(msg)) {
    return new IoError(`${msg}; run as root or grant this user access to ${device}`, { cause: err });
  }
  return new IoError(`${msg}; the TEE guest driver refused the request`, { cause: err });
}

/** Where providers get the ioctls; tests pass fakes. */
export type IoctlLoader = () => TeeIoctls;

/** Runs one ioctl call: a missing addon stays ERR_NATIVE_UNAVAILABLE, errno failures become typed errors. */
export async function callIoctl<T>(device: string, load: IoctlLoader, fn: (io: TeeIoctls) => Promise<T>): Promise<T> {
  const io = load();
  try {
    return await fn(io);
  } catch (err) {
    if (err instanceof SealedTensorsError) throw err;
    throw ioctlError(err, device);
  }
}
