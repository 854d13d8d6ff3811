/**
 * Data keys as opaque native handles: importing copies the 32 bytes into secure memory and wipes the
 * caller's array, so after import no key byte is reachable from the JS heap through us.
 */
import { assertBytes } from '../bytes.js';
import { callNative, loadAddon, type NativeKeyHandle } from './addon.js';

export type { NativeKeyHandle } from './addon.js';

/** Moves `key` (32 bytes) into secure memory; `key` is zero-filled on return. */
export function importKey(key: Uint8Array): NativeKeyHandle {
  assertBytes(key, 'key', 32);
  const addon = loadAddon();
  return callNative(() => addon.keyImport(key));
}
