/**
 * SEAM (lead: replace this file's body with
 *   export { generateEphemeralKey, unwrapDataKey, type EphemeralKey } from '../native/ephemeral.js';
 * once branch native-jwe lands on main). The session reaches the addon's ephemeral keys only
 * through this module, with exactly the contract's signatures (CONTRACTS.md, "Native"), so the swap
 * is one line. Until then both functions refuse: a session cannot run without the native JWE path,
 * and there is deliberately no JavaScript fallback (the private key and the data key would be on
 * the JS heap). The session's tests replace this module with a jose-based double (test/session).
 */
import { NativeUnavailableError } from '../errors.js';
import type { NativeKeyHandle } from '../native/key.js';
import type { PublicJwk } from '../protocol/jwk.js';
import type { FlattenedJwe } from '../protocol/messages.js';

/** The session's ephemeral key pair: the private half in the addon's secure memory, only the public JWK here. */
export interface EphemeralKey {
  readonly publicJwk: PublicJwk;
  /** Wipes the private key; false when it was already released. */
  release(): boolean;
  readonly released: boolean;
}

function notLanded(): never {
  throw new NativeUnavailableError(
    'this build lacks the native ephemeral-key functions (src/native/ephemeral.ts, ephemeralKeyGenerate/jweUnwrapDataKey in the addon): rebuild with them to establish sessions',
  );
}

export function generateEphemeralKey(_kind: 'ec-p256' | 'rsa-3072' = 'ec-p256'): EphemeralKey {
  return notLanded();
}

export function unwrapDataKey(_eph: EphemeralKey, _jwe: FlattenedJwe): { key: NativeKeyHandle; manifest: Uint8Array } {
  return notLanded();
}
