export { loadAddon, nativeStatus, requireHardened, fromNative, type NativeStatus, type NativeAddon } from './addon.js';
export { SecureBuffer } from './secure-buffer.js';
export { importKey, type NativeKeyHandle } from './key.js';
export { generateEphemeralKey, unwrapDataKey, type EphemeralKey, type EphemeralKeyKind, type UnwrappedDataKey } from './ephemeral.js';
