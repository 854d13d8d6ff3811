/**
 * The session's ephemeral-key module with a recorder around the real native functions: the tests
 * check that every ephemeral key and every data-key handle a session made was released.
 */
import * as native from '../../src/native/ephemeral.js';
import type { NativeKeyHandle } from '../../src/native/key.js';

export type { EphemeralKey } from '../../src/native/ephemeral.js';

export const made: native.EphemeralKey[] = [];
export const handles: NativeKeyHandle[] = [];

export function generateEphemeralKey(kind?: native.EphemeralKeyKind): native.EphemeralKey {
  const key = native.generateEphemeralKey(kind);
  made.push(key);
  return key;
}

export function unwrapDataKey(eph: native.EphemeralKey, jwe: Parameters<typeof native.unwrapDataKey>[1]): ReturnType<typeof native.unwrapDataKey> {
  const result = native.unwrapDataKey(eph, jwe);
  handles.push(result.key);
  return result;
}
