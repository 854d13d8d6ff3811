/**
 * Data keys as opaque native handles: importing copies the 32 bytes into secure memory and wipes the
 * caller's array, so after import no key byte is reachable from the JS heap through us.
 */
import { assertBytes } from '../bytes.js';
import { callNative, loadAddon, type NativeKeyHandle } from './addon.js';

export type { NativeKeyHandle } from './addon.js';

/**
 * Moves `key` (32 bytes) into secure memory; `key` is zero-filled on return.
 *
 * The safe way to get a key here: `readKeyFile` (or an array made as
 * `new Uint8Array(new ArrayBuffer(32))`), passed straight to `importKey`. A typed array made with
 * only a length of 64 bytes or less lives inside V8's heap, and reading its buffer (which the addon
 * must do) makes V8 move it out and leave the old bytes behind; so the key is first copied into an
 * array of its own for the addon, and the caller's array is wiped in place.
 */
export function importKey(key: Uint8Array): NativeKeyHandle {
  assertBytes(key, 'key', 32);
  const addon = loadAddon();
  const own = new Uint8Array(new ArrayBuffer(32)); // an ArrayBuffer's bytes are never on the V8 heap
  try {
    own.set(key);
    const handle = callNative(() => addon.keyImport(own));
    key.fill(0); // in place: wiping never moves an on-heap array
    return handle;
  } finally {
    own.fill(0);
  }
}
