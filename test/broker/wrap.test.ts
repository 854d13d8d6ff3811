// The broker's data-key JWE: decryptable by jose and by the session's addon, and by a Trustee client,
// which takes the AAD not from the `protected` string it received but from kbs-types'
// re-serialization of the decoded header (alg, enc, then the other members in sorted order).
import { createPublicKey, diffieHellman, createPrivateKey, randomBytes } from 'node:crypto';
import { flattenedDecrypt, importJWK, generateKeyPair, exportJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { concatKdfSha256, encryptToTeePubkey } from '../../src/broker/wrap.js';
import { generateEphemeralKey, unwrapDataKey } from '../../src/native/ephemeral.js';
import { parsePublicJwk, publicKeyFromJwk } from '../../src/protocol/jwk.js';
import { encodeDataKeyResource } from '../../src/protocol/resource.js';
import { TEST_KEY } from '../helpers/tmp.js';

/** kbs-types' ProtectedHeader::generate_aad: serde_json with a sorted Map, alg and enc first. */
function trusteeAad(protectedB64: string): Buffer {
  const header = JSON.parse(Buffer.from(protectedB64, 'base64url').toString('utf8')) as Record<string, unknown>;
  const sorted = (v: unknown): unknown =>
    v === null || typeof v !== 'object' || Array.isArray(v) ? v : Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])]));
  const { alg, enc, ...rest } = header;
  return Buffer.from(Buffer.from(JSON.stringify({ alg, enc, ...(sorted(rest) as object) }), 'utf8').toString('base64url'), 'ascii');
}

async function teeKeyPair(alg: 'ECDH-ES+A256KW' | 'RSA-OAEP-256') {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'RSA-OAEP-256' ? { modulusLength: 2048 } : {}) });
  const jwk = parsePublicJwk({ ...(await exportJWK(publicKey)), alg });
  return { jwk, privateKey };
}

describe('broker data-key JWE', () => {
  it('Concat KDF reproduces RFC 7518 appendix C (ECDH-ES, A128GCM, "Alice"/"Bob")', () => {
    const alice = createPrivateKey({
      key: { kty: 'EC', crv: 'P-256', x: 'gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0', y: 'SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps', d: '0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo' },
      format: 'jwk',
    });
    const bob = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: 'weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ', y: 'e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck' }, format: 'jwk' });
    const z = diffieHellman({ privateKey: alice, publicKey: bob });
    const key = concatKdfSha256(z, 'A128GCM', 128, Buffer.from('Alice'), Buffer.from('Bob'));
    expect(Buffer.from(key).toString('base64url')).toBe('VqqN6vgjbSBcIijNcacQGg');
    expect(() => concatKdfSha256(z, 'A512', 512)).toThrow(/not supported/);
  });

  for (const alg of ['ECDH-ES+A256KW', 'RSA-OAEP-256'] as const) {
    it(`${alg}: jose opens it, and its protected header survives Trustee's re-serialization byte for byte`, async () => {
      const { jwk, privateKey } = await teeKeyPair(alg);
      const secret = randomBytes(77);
      for (let i = 0; i < 5; i++) {
        const jwe = await encryptToTeePubkey(jwk, secret);
        expect(Object.keys(jwe).sort()).toEqual(['ciphertext', 'encrypted_key', 'iv', 'protected', 'tag']);
        expect(trusteeAad(jwe.protected).toString('ascii')).toBe(jwe.protected);
        const header = JSON.parse(Buffer.from(jwe.protected, 'base64url').toString('utf8')) as Record<string, unknown>;
        expect(header).toMatchObject({ alg, enc: 'A256GCM' });
        if (alg === 'ECDH-ES+A256KW') expect(Object.keys(header.epk as object)).toEqual(['crv', 'kty', 'x', 'y']);
        const opened = await flattenedDecrypt(jwe, privateKey);
        expect(Buffer.from(opened.plaintext).equals(secret)).toBe(true);
        // A bit changed anywhere is refused.
        const tag = Buffer.from(jwe.tag, 'base64url');
        tag[0]! ^= 1;
        await expect(flattenedDecrypt({ ...jwe, tag: tag.toString('base64url') }, privateKey)).rejects.toThrow();
      }
    });
  }

  it('a parsed tee-pubkey is frozen, so the key object kept for its JWE always matches it', async () => {
    const { jwk } = await teeKeyPair('ECDH-ES+A256KW');
    expect(Object.isFrozen(jwk)).toBe(true);
    expect(() => {
      (jwk as { x: string }).x = 'AAAA';
    }).toThrow(TypeError);
    expect(publicKeyFromJwk(jwk)).toBe(publicKeyFromJwk(jwk));
    expect(publicKeyFromJwk(jwk).export({ format: 'jwk' })).toMatchObject({ x: jwk.kty === 'EC' ? jwk.x : '' });
    // A copy is parsed afresh (and still gives the same key).
    expect(publicKeyFromJwk({ ...jwk }).export({ format: 'jwk' })).toEqual(publicKeyFromJwk(jwk).export({ format: 'jwk' }));
  });

  it('the session addon opens it into a key handle (EC P-256 and RSA-3072 ephemeral keys)', async () => {
    const resource = encodeDataKeyResource(TEST_KEY, { v: 1, keyId: 'k', models: [{ bundleId: '00'.repeat(16), headerDigest: 'ab'.repeat(32) }], notAfter: '2030-01-01T00:00:00Z' });
    for (const kind of ['ec-p256', 'rsa-3072'] as const) {
      const eph = generateEphemeralKey(kind);
      try {
        const jwe = await encryptToTeePubkey(eph.publicJwk, resource);
        const out = unwrapDataKey(eph, jwe);
        expect(JSON.parse(Buffer.from(out.manifest).toString('utf8'))).toMatchObject({ keyId: 'k' });
        expect(out.key.release()).toBe(true);
      } finally {
        eph.release();
      }
    }
  });

  it('jose cannot be made to emit the sorted epk (why wrap.ts composes ECDH-ES itself)', async () => {
    const { jwk } = await teeKeyPair('ECDH-ES+A256KW');
    const { FlattenedEncrypt } = await import('jose');
    const jwe = await new FlattenedEncrypt(new Uint8Array(32)).setProtectedHeader({ alg: jwk.alg, enc: 'A256GCM' }).encrypt(await importJWK({ ...jwk }, jwk.alg));
    // If a jose release fixes the order, wrap.ts could go back to jose: this test says so.
    expect(trusteeAad(jwe.protected!).toString('ascii')).not.toBe(jwe.protected);
  });
});
