import { createHash, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SealedTensorsError } from '../../src/errors.js';
import { jcs, kbsDeviceNonce, kbsReportData } from '../../src/protocol/binding.js';
import { parsePublicJwk } from '../../src/protocol/jwk.js';
import {
  KBS_PROTOCOL_VERSION,
  parseAttestRequest,
  parseAuthRequest,
  parseChallenge,
  parseFlattenedJwe,
  parseResourcePath,
  parseTokenResponse,
} from '../../src/protocol/messages.js';
import { encodeDataKeyResource, manifestAllows, parseManifest, RESOURCE_KEY_OFFSET } from '../../src/protocol/resource.js';
import { teePubkeyOfToken } from '../../src/protocol/token.js';
import { fuzzRuns } from '../helpers/fuzz.js';

const ecJwk = () => {
  const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
  return { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: jwk.x!, y: jwk.y! };
};
const nonce = Buffer.alloc(32, 7).toString('base64');

describe('binding (Trustee parse_runtime_data)', () => {
  it('matches the upstream JCS + SHA-384 vector', () => {
    // trustee attestation-service/src/lib.rs, test parse_runtimedata_json_binding
    const text = jcs({ b: 1, a: 'test', c: { d: 'e' } });
    expect(text).toBe('{"a":"test","b":1,"c":{"d":"e"}}');
    expect(createHash('sha384').update(text).digest('hex')).toBe(
      'e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3',
    );
  });

  it('hashes additional-evidence, nonce and tee-pubkey, zero-padded to 64 bytes', () => {
    const key = ecJwk();
    const rd = kbsReportData(nonce, key, '');
    const expected = createHash('sha384').update(jcs({ 'additional-evidence': '', nonce, 'tee-pubkey': key })).digest();
    expect(Buffer.from(rd.subarray(0, 48)).equals(expected)).toBe(true);
    expect(rd.subarray(48).every((b) => b === 0)).toBe(true);
    expect(Buffer.from(kbsReportData(nonce, key, '{"nvgpu":{}}')).equals(Buffer.from(rd))).toBe(false);
    expect(Buffer.from(kbsReportData(nonce, ecJwk())).equals(Buffer.from(rd))).toBe(false);
    expect(kbsDeviceNonce(nonce, key)).toHaveLength(32);
  });
});

describe('tee-pubkey', () => {
  it('accepts EC P-256 and RSA-OAEP-256 public keys only', () => {
    expect(parsePublicJwk(ecJwk()).alg).toBe('ECDH-ES+A256KW');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    expect(parsePublicJwk({ kty: 'RSA', alg: 'RSA-OAEP-256', n: rsa.n, e: rsa.e }).kty).toBe('RSA');
    const priv = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
    expect(() => parsePublicJwk({ ...priv, alg: 'ECDH-ES+A256KW' })).toThrow(/must not have/);
    expect(() => parsePublicJwk({ ...ecJwk(), crv: 'P-384' })).toThrow(/P-256/);
    expect(() => parsePublicJwk({ kty: 'RSA', alg: 'RSA1_5', n: rsa.n, e: rsa.e })).toThrow(/RSA-OAEP-256/);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
    expect(() => parsePublicJwk({ kty: 'RSA', n: small.n, e: small.e })).toThrow(/2048/);
    const off = ecJwk();
    const y = Buffer.from(off.y, 'base64url');
    y[31]! ^= 1;
    expect(() => parsePublicJwk({ ...off, y: y.toString('base64url') })).toThrow(expect.objectContaining({ code: 'ERR_PROTOCOL' }));
  });
});

describe('messages', () => {
  it('parses the RCAR messages and refuses unknown members and versions', () => {
    expect(parseAuthRequest({ version: KBS_PROTOCOL_VERSION, tee: 'snp', 'extra-params': '' }).tee).toBe('snp');
    expect(() => parseAuthRequest({ version: '0.3.0', tee: 'snp', 'extra-params': '' })).toThrow(/not supported/);
    expect(() => parseAuthRequest({ version: KBS_PROTOCOL_VERSION, tee: 'snp', x: 1 })).toThrow(/unknown member "x"/);
    expect(parseChallenge({ nonce, 'extra-params': '' }).nonce).toBe(nonce);
    expect(() => parseChallenge({ nonce: 'AAAA' })).toThrow(/32 bytes/);
    const key = ecJwk();
    const wrapped = parseAttestRequest({ 'runtime-data': { nonce, 'tee-pubkey': key }, 'tee-evidence': { primary_evidence: { evidence: 'AA==' }, additional_evidence: '' } });
    expect(wrapped.primaryEvidence).toEqual({ evidence: 'AA==' });
    expect(wrapped.runtimeData.teePubkeyRaw).toBe(key);
    const bare = parseAttestRequest({ 'runtime-data': { nonce, 'tee-pubkey': key }, 'tee-evidence': { evidence: 'AA==' } });
    expect(bare.primaryEvidence).toEqual({ evidence: 'AA==' });
    expect(() => parseAttestRequest({ 'runtime-data': { nonce, 'tee-pubkey': key } })).toThrow(/tee-evidence/);
    expect(parseTokenResponse({ token: 'a.b.c' })).toBe('a.b.c');
    expect(() => parseTokenResponse({ token: 'a.b' })).toThrow(/compact JWS/);
    const jwe = { protected: 'eyJ9', encrypted_key: 'AA', iv: 'AA', ciphertext: 'AA', tag: 'AA' };
    expect(parseFlattenedJwe(jwe)).toEqual(jwe);
    expect(() => parseFlattenedJwe({ ...jwe, aad: 'AA' })).toThrow(/unknown member "aad"/);
    expect(() => parseFlattenedJwe({ ...jwe, iv: 'AA==' })).toThrow(/base64url/);
    expect(parseResourcePath('sealed-tensors/data-key/k1')).toEqual({ repository: 'sealed-tensors', type: 'data-key', tag: 'k1' });
    for (const bad of ['a/b', 'a/b/c/d', 'a/../c', 'a/b/%2e', 'a//c', '../b/c']) expect(() => parseResourcePath(bad)).toThrow(expect.objectContaining({ code: 'ERR_PROTOCOL' }));
    expect(teePubkeyOfToken({ submods: { cpu0: { 'ear.veraison.annotated-evidence': { runtime_data_claims: { 'tee-pubkey': key } } } } })).toBe(key);
    expect(() => teePubkeyOfToken({ submods: {} })).toThrow(/lacks/);
  });

  it('never throws anything but a SealedTensorsError on arbitrary JSON', () => {
    const parsers = [parseAuthRequest, parseChallenge, parseAttestRequest, parseTokenResponse, parseFlattenedJwe, parsePublicJwk, teePubkeyOfToken];
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        for (const p of parsers) {
          try {
            p(v);
          } catch (err) {
            if (!(err instanceof SealedTensorsError)) throw err;
          }
        }
      }),
      { numRuns: fuzzRuns(300) },
    );
  });
});

describe('data-key resource', () => {
  it('puts the key at a fixed offset and round-trips the manifest', () => {
    const key = new Uint8Array(32).fill(9);
    const manifest = { v: 1 as const, keyId: 'k1', models: [{ bundleId: 'ab'.repeat(16), headerDigest: 'cd'.repeat(32) }], notAfter: new Date(0).toISOString() };
    const bytes = encodeDataKeyResource(key, manifest);
    expect(Buffer.from(bytes.subarray(0, 4)).toString()).toBe('STK1');
    expect(bytes.subarray(RESOURCE_KEY_OFFSET, RESOURCE_KEY_OFFSET + 32)).toEqual(key);
    const parsed = parseManifest(bytes.subarray(36));
    expect(parsed).toEqual(manifest);
    expect(manifestAllows(parsed, { bundleId: 'ab'.repeat(16), headerDigest: 'cd'.repeat(32) })).toBe(true);
    expect(manifestAllows(parsed, { bundleId: 'ab'.repeat(16), headerDigest: 'ce'.repeat(32) })).toBe(false);
    expect(() => parseManifest(Buffer.from('{"v":1,"keyId":"k","models":[],"notAfter":"x"}'))).toThrow(/notAfter/);
    expect(() => parseManifest(Buffer.from('{"v":1,"keyId":"k","models":[{"bundleId":"AB","headerDigest":"cd"}],"notAfter":"2020-01-01T00:00:00Z"}'))).toThrow(/bundleId/);
  });
});
