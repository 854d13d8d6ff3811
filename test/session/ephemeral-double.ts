/**
 * TEST DOUBLE for src/session/ephemeral.ts (the native ephemeral key, branch native-jwe), with the
 * contract's exact signatures, so the session's tests run before the addon functions land. The
 * private key and the unwrapped plaintext are on the JS heap here: tests only, never in src.
 *
 * It opens the JWE by hand with node:crypto (ECDH, the JWA Concat KDF, AES key unwrap, AES-256-GCM)
 * rather than with jose, so the fake broker's jose-made JWEs are checked by an independent reading
 * of RFC 7516/7518, as the native implementation will have to.
 */
import { createDecipheriv, createHash, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { importKey, type NativeKeyHandle } from '../../src/native/key.js';
import { ProtocolError, IntegrityError } from '../../src/errors.js';
import type { PublicJwk } from '../../src/protocol/jwk.js';
import type { FlattenedJwe } from '../../src/protocol/messages.js';
import { RESOURCE_MAGIC } from '../../src/protocol/resource.js';

export interface EphemeralKey {
  readonly publicJwk: PublicJwk;
  release(): boolean;
  readonly released: boolean;
}

/** Every ephemeral key the double made (tests check they were all released). */
export const made: EphemeralKey[] = [];
/** Every data-key handle the double made. */
export const handles: NativeKeyHandle[] = [];

const privates = new WeakMap<EphemeralKey, KeyObject>();

export function generateEphemeralKey(kind: 'ec-p256' | 'rsa-3072' = 'ec-p256'): EphemeralKey {
  if (kind !== 'ec-p256') throw new Error('the test double makes EC P-256 keys only');
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' }) as { x: string; y: string };
  let released = false;
  const eph: EphemeralKey = {
    publicJwk: { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: jwk.x, y: jwk.y },
    release() {
      if (released) return false;
      released = true;
      privates.delete(eph);
      return true;
    },
    get released() {
      return released;
    },
  };
  privates.set(eph, privateKey);
  made.push(eph);
  return eph;
}

function concatKdf(z: Buffer, alg: string): Buffer {
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const algId = Buffer.from(alg, 'ascii');
  // RFC 7518 4.6.2: round 1 of SHA-256 gives the 256 bits A256KW needs.
  return createHash('sha256').update(Buffer.concat([u32(1), z, u32(algId.length), algId, u32(0), u32(0), u32(256)])).digest();
}

export function unwrapDataKey(eph: EphemeralKey, jwe: FlattenedJwe): { key: NativeKeyHandle; manifest: Uint8Array } {
  const priv = privates.get(eph);
  if (!priv) throw new ProtocolError('the ephemeral key was released');
  let header: { alg: string; enc: string; epk: { kty: string; crv: string; x: string; y: string } };
  try {
    header = JSON.parse(Buffer.from(jwe.protected, 'base64url').toString('utf8'));
  } catch (cause) {
    throw new ProtocolError('the JWE protected header is not JSON', { cause });
  }
  if (typeof header !== 'object' || header === null) throw new ProtocolError('the JWE protected header is not an object');
  if (header.alg !== 'ECDH-ES+A256KW' || header.enc !== 'A256GCM' || header.epk?.crv !== 'P-256') throw new ProtocolError('unexpected JWE header');
  let plain: Buffer;
  try {
    const epk = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: header.epk.x, y: header.epk.y }, format: 'jwk' });
    const kek = concatKdf(diffieHellman({ privateKey: priv, publicKey: epk }), header.alg);
    const unwrap = createDecipheriv('id-aes256-wrap', kek, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
    const cek = Buffer.concat([unwrap.update(Buffer.from(jwe.encrypted_key, 'base64url')), unwrap.final()]);
    const gcm = createDecipheriv('aes-256-gcm', cek, Buffer.from(jwe.iv, 'base64url'));
    gcm.setAAD(Buffer.from(jwe.protected, 'ascii'));
    gcm.setAuthTag(Buffer.from(jwe.tag, 'base64url'));
    plain = Buffer.concat([gcm.update(Buffer.from(jwe.ciphertext, 'base64url')), gcm.final()]);
    cek.fill(0);
  } catch (cause) {
    throw new IntegrityError('the released key does not decrypt', { cause });
  }
  try {
    if (plain.length < 36 || plain.subarray(0, 4).toString('latin1') !== RESOURCE_MAGIC) throw new ProtocolError('the released resource is not a data key');
    const key = new Uint8Array(new ArrayBuffer(32));
    key.set(plain.subarray(4, 36));
    const handle = importKey(key);
    handles.push(handle);
    return { key: handle, manifest: new Uint8Array(plain.subarray(36)) };
  } finally {
    plain.fill(0);
  }
}
