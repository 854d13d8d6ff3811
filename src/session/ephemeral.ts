/**
 * The session reaches the addon's ephemeral keys only through this module: the private half and
 * every released data key stay in native secure memory (docs/NATIVE.md). There is deliberately no
 * JavaScript fallback.
 */
export { generateEphemeralKey, unwrapDataKey, type EphemeralKey } from '../native/ephemeral.js';
