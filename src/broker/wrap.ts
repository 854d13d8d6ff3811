/**
 * The released resource as a flattened JWE to the session's tee-pubkey (jose): ECDH-ES+A256KW for
 * EC P-256, RSA-OAEP-256 for RSA, content A256GCM; exactly the five members KBS clients expect
 * (no aad, no unprotected header: everything the receiver relies on is in the protected header).
 */
import { FlattenedEncrypt, importJWK } from 'jose';
import type { PublicJwk } from '../protocol/jwk.js';
import { BrokerError } from '../errors.js';
import type { FlattenedJwe } from '../protocol/messages.js';

export const CONTENT_ENC = 'A256GCM';

export async function encryptToTeePubkey(teePubkey: PublicJwk, plaintext: Uint8Array): Promise<FlattenedJwe> {
  const key = await importJWK({ ...teePubkey }, teePubkey.alg);
  const jwe = await new FlattenedEncrypt(plaintext).setProtectedHeader({ alg: teePubkey.alg, enc: CONTENT_ENC }).encrypt(key);
  if (jwe.protected === undefined || jwe.encrypted_key === undefined || jwe.iv === undefined || jwe.tag === undefined || jwe.aad !== undefined || jwe.header !== undefined || jwe.unprotected !== undefined) {
    throw new BrokerError('jose produced a JWE outside the KBS shape (a jose upgrade changed its output): pin the jose version this broker was tested with');
  }
  return { protected: jwe.protected, encrypted_key: jwe.encrypted_key, iv: jwe.iv, ciphertext: jwe.ciphertext, tag: jwe.tag };
}
