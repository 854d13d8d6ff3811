/**
 * The gate loading APIs go through: the hardened native reader, or (only when the caller says so)
 * the unhardened TypeScript reference reader. The result says which one it is.
 */
import { NativeUnavailableError } from '../errors.js';
import { assertBytes } from '../bytes.js';
import { loadAddon } from '../native/addon.js';
import { importKey, type NativeKeyHandle } from '../native/key.js';
import { SealedModelReader } from './sealed-model.js';
import { NativeSealedModelReader } from './native-model.js';
import type { NativeReaderOptions } from './native-file.js';
import { FileSealedSource } from '../sources/file.js';
import type { SealedSource } from '../sources/types.js';

export type OpenedModel =
  | { hardened: true; reader: NativeSealedModelReader }
  | { hardened: false; reader: SealedModelReader };

export interface OpenModelOptions extends NativeReaderOptions {
  /** Accept the TypeScript path (plaintext on the JS heap: swappable, dumpable) when the addon is missing. */
  allowUnhardened?: boolean;
}

/**
 * Opens a sealed model on the hardened path. `key`: a native handle, or 32 raw bytes (moved into
 * secure memory and wiped). Without the addon this throws NativeUnavailableError (with what was
 * tried and how to fix it) unless `allowUnhardened` is set.
 */
export async function openSealedModel(path: string | SealedSource, key: NativeKeyHandle | Uint8Array, options: OpenModelOptions = {}): Promise<OpenedModel> {
  let unavailable: NativeUnavailableError | null = null;
  try {
    loadAddon();
  } catch (err) {
    if (!(err instanceof NativeUnavailableError)) throw err;
    unavailable = err;
  }
  if (unavailable === null) {
    if (key instanceof Uint8Array) {
      assertBytes(key, 'key', 32);
      const handle = importKey(key);
      try {
        return { hardened: true, reader: await NativeSealedModelReader.open(path, handle, options) };
      } finally {
        handle.release(); // the readers keep only per-file subkeys
      }
    }
    return { hardened: true, reader: await NativeSealedModelReader.open(path, key, options) };
  }
  if (!options.allowUnhardened) throw unavailable;
  if (!(key instanceof Uint8Array)) throw unavailable; // a handle without the addon cannot exist; be explicit anyway
  // The reference reader reads local files only.
  const local = typeof path === 'string' ? path : path instanceof FileSealedSource ? path.path : null;
  if (local === null) throw unavailable;
  try {
    return { hardened: false, reader: await SealedModelReader.open(local, key) };
  } finally {
    key.fill(0);
  }
}
