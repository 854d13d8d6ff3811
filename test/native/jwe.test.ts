// The session's ephemeral key and the data-key JWE, opened in the addon: interop with jose (the
// broker's JOSE library) for both key-management algorithms, every field tampered with, release
// semantics, OpenSSL's secure heap, and a child process whose memory and heap snapshot hold no copy
// of the data key, the JWE's intermediate secrets or the ephemeral private key.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash, generateKeyPairSync, randomBytes, webcrypto } from 'node:crypto';
import { join } from 'node:path';
import fc from 'fast-check';
import { FlattenedEncrypt, importJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { fromNative, loadAddon } from '../../src/native/addon.js';
import { _nativeEphemeral, generateEphemeralKey, unwrapDataKey, type EphemeralKey } from '../../src/native/ephemeral.js';
import { importKey } from '../../src/native/key.js';
import { parsePublicJwk, type PublicJwk } from '../../src/protocol/jwk.js';
import type { FlattenedJwe } from '../../src/protocol/messages.js';
import { encodeDataKeyResource, parseManifest, type DataKeyManifest } from '../../src/protocol/resource.js';
import { NativeSealedModelReader } from '../../src/reader/native-model.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { sealSmall } from '../helpers/sealed.js';
import { OTHER_KEY, TEST_KEY, tempDir } from '../helpers/tmp.js';
import { transpile } from '../helpers/transpile.js';
import { addonPath, runChild, vmLckBytes, which } from './helpers.js';

const dir = tempDir('st-jwe-');
const addon = loadAddon();
const MANIFEST: DataKeyManifest = {
  v: 1,
  keyId: 'test-key',
  models: [{ bundleId: '00112233445566778899aabbccddeeff', headerDigest: 'ab'.repeat(32) }],
  notAfter: '2030-01-01T00:00:00Z',
};

function resource(key: Uint8Array = TEST_KEY, manifest: DataKeyManifest = MANIFEST): Uint8Array {
  return encodeDataKeyResource(key, manifest);
}

interface JweOptions {
  cek?: Uint8Array;
  epk?: webcrypto.CryptoKey;
  apu?: Uint8Array;
  apv?: Uint8Array;
  header?: Record<string, unknown>;
}

/** What the broker does: jose's flattened JWE to the session's public JWK. */
async function makeJwe(jwk: PublicJwk, plaintext: Uint8Array, opts: JweOptions = {}): Promise<FlattenedJwe> {
  const enc = new FlattenedEncrypt(plaintext).setProtectedHeader({ alg: jwk.alg, enc: 'A256GCM', ...opts.header });
  if (opts.cek) enc.setContentEncryptionKey(opts.cek);
  if (opts.epk || opts.apu || opts.apv) enc.setKeyManagementParameters({ epk: opts.epk, apu: opts.apu, apv: opts.apv });
  const out = await enc.encrypt(await importJWK({ ...jwk }, jwk.alg));
  return { protected: out.protected!, encrypted_key: out.encrypted_key!, iv: out.iv!, ciphertext: out.ciphertext, tag: out.tag! };
}

const b64 = (s: string) => Buffer.from(s, 'base64url');
const enc64 = (b: Uint8Array) => Buffer.from(b).toString('base64url');
const headerOf = (jwe: FlattenedJwe) => JSON.parse(b64(jwe.protected).toString('utf8')) as Record<string, unknown>;
const withHeader = (jwe: FlattenedJwe, h: Record<string, unknown>): FlattenedJwe => ({ ...jwe, protected: enc64(Buffer.from(JSON.stringify(h))) });

/** The outcome of an unwrap: 'ok' (handle released again) or the error code. */
function outcome(eph: EphemeralKey, jwe: FlattenedJwe): string {
  try {
    unwrapDataKey(eph, jwe).key.release();
    return 'ok';
  } catch (err) {
    if (err instanceof SealedTensorsError) return err.code;
    throw err;
  }
}

/**
 * Runs `fn`, which must fail; returns the error code, and checks that every secure region the
 * attempt made was wiped (release probe: no non-zero byte left) and that nothing stays locked.
 */
function failsClean(fn: () => unknown): string {
  const lockedBefore = vmLckBytes();
  const before = addon._testing.releaseProbe();
  let code = 'NO_ERROR';
  try {
    const r = fn() as { key?: { release(): boolean } } | undefined;
    r?.key?.release();
  } catch (err) {
    const e = fromNative(err); // the addon's own errors, when a test calls it directly
    code = e instanceof SealedTensorsError ? e.code : `FOREIGN:${(e as Error).message}`;
  }
  const after = addon._testing.releaseProbe();
  expect(after.nonzeroBytes - before.nonzeroBytes, 'a released region held non-zero bytes').toBe(0);
  expect(vmLckBytes(), 'secure memory still locked after a failed unwrap').toBe(lockedBefore);
  return code;
}

const REFUSED = ['ERR_INTEGRITY', 'ERR_INVALID_ARGUMENT', 'ERR_PROTOCOL'];

let ec: EphemeralKey;
let rsa: EphemeralKey;
let model: Awaited<ReturnType<typeof sealSmall>>;

beforeAll(async () => {
  addon._testing.setReleaseProbe(true);
  ec = generateEphemeralKey();
  rsa = generateEphemeralKey('rsa-3072');
  model = await sealSmall(dir, 'jwe-model', TEST_KEY);
});

afterAll(() => {
  addon._testing.setReleaseProbe(false);
  ec?.release();
  rsa?.release();
});

describe('generateEphemeralKey', () => {
  it('returns public members only, in the shape the KBS tee-pubkey takes', () => {
    expect(Object.keys(ec.publicJwk)).toEqual(['kty', 'crv', 'x', 'y', 'alg']);
    expect(ec.publicJwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW' });
    expect(Object.keys(rsa.publicJwk)).toEqual(['kty', 'n', 'e', 'alg']);
    expect(rsa.publicJwk).toMatchObject({ kty: 'RSA', e: 'AQAB', alg: 'RSA-OAEP-256' });
    expect(b64((rsa.publicJwk as { n: string }).n).length).toBe(384);
    // The protocol's strict parser (public members only, point on the curve) accepts both as they are.
    expect(parsePublicJwk(ec.publicJwk)).toEqual(ec.publicJwk);
    expect(parsePublicJwk(rsa.publicJwk)).toEqual(rsa.publicJwk);
    expect(ec.kind).toBe('ec-p256');
    expect(rsa.kind).toBe('rsa-3072');
    // Fresh keys each time.
    const other = generateEphemeralKey();
    expect(other.publicJwk).not.toEqual(ec.publicJwk);
    other.release();
  });

  it('keeps nothing reachable from JavaScript but the public key', () => {
    const native = _nativeEphemeral(ec);
    expect(Object.keys(native)).toEqual([]);
    expect(Object.keys(ec)).toEqual(['kind', 'publicJwk']);
    expect(JSON.stringify(ec)).not.toMatch(/"d"/);
    expect(Object.isFrozen(ec.publicJwk)).toBe(true);
  });

  it('refuses an unknown kind', () => {
    expect(() => generateEphemeralKey('ec-p384' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
    expect(() => addon.ephemeralKeyGenerate('x25519' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
  });

  it('sets up OpenSSL secure heap, locked and out of core dumps, and keeps the private key there', () => {
    const h = addon.hardening();
    expect(h.opensslSecureHeap).toBe(true);
    expect(h.opensslSecureHeapDetail).toMatchObject({ initialized: true, locked: true, dontDump: true, initializedBy: 'addon', initResult: 1 });
    expect(h.opensslSecureHeapDetail.size).toBe(256 * 1024);
    const used = addon._testing.opensslSecureUsed();
    const k = generateEphemeralKey();
    const grown = addon._testing.opensslSecureUsed() - used;
    expect(grown).toBeGreaterThan(0); // the private scalar went to the secure heap
    k.release();
    expect(addon._testing.opensslSecureUsed()).toBe(used); // and came back from it
  });
});

describe('unwrapDataKey: interop with jose', () => {
  for (const kind of ['ec-p256', 'rsa-3072'] as const) {
    it(`${kind}: a JWE jose made opens into a key handle that decrypts the sealed model`, async () => {
      const eph = kind === 'ec-p256' ? ec : rsa;
      const jwe = await makeJwe(eph.publicJwk, resource());
      expect(headerOf(jwe)).toMatchObject({ alg: eph.publicJwk.alg, enc: 'A256GCM' });
      const before = addon._testing.releaseProbe();
      const { key, manifest } = unwrapDataKey(eph, jwe);
      const after = addon._testing.releaseProbe();
      // The scratch (Z, KEK, CEK) and plaintext regions were freed wiped; the key's region lives on.
      expect(after.releases - before.releases).toBe(2);
      expect(after.nonzeroBytes - before.nonzeroBytes).toBe(0);
      expect(parseManifest(manifest)).toEqual(MANIFEST);
      expect(Object.keys(key)).toEqual([]);
      const reader = await NativeSealedModelReader.open(model.path, key, { threads: 1 });
      try {
        const all = await reader.loadAll();
        try {
          for (const [name, t] of all.tensors) expect(Buffer.from(t.bytes).equals(Buffer.from(model.data.get(name)!))).toBe(true);
        } finally {
          all.release();
        }
      } finally {
        reader.close();
      }
      expect(key.release()).toBe(true);
      expect(key.released).toBe(true);
    });
  }

  it('ECDH-ES: PartyUInfo and PartyVInfo (apu, apv) enter the Concat KDF', async () => {
    const jwe = await makeJwe(ec.publicJwk, resource(), { apu: Buffer.from('broker'), apv: Buffer.from('session') });
    expect(headerOf(jwe)).toMatchObject({ apu: enc64(Buffer.from('broker')), apv: enc64(Buffer.from('session')) });
    expect(outcome(ec, jwe)).toBe('ok');
    // The same JWE with apv changed in the header: another KEK, so the key does not unwrap.
    expect(failsClean(() => unwrapDataKey(ec, withHeader(jwe, { ...headerOf(jwe), apv: enc64(Buffer.from('other')) })))).toBe('ERR_INTEGRITY');
  });

  it('an empty manifest (exactly "STK1" and the key) opens; a shorter plaintext is refused before decryption', async () => {
    const plain = resource().subarray(0, 36);
    const r = unwrapDataKey(ec, await makeJwe(ec.publicJwk, plain));
    expect(r.manifest.length).toBe(0);
    r.key.release();
    expect(failsClean(() => unwrapDataKey(ec, null as never))).toBe('ERR_PROTOCOL');
    const short = await makeJwe(ec.publicJwk, plain.subarray(0, 35));
    expect(failsClean(() => unwrapDataKey(ec, short))).toBe('ERR_INVALID_ARGUMENT');
  });
});

it('the hook that exports an ephemeral private key exists only when SEALED_TENSORS_TEST_HOOKS=1 (never in a production process)', () => {
  const probe = `process.stdout.write(typeof require(${JSON.stringify(addonPath)})._testing.ephemeralPrivate)`;
  const without = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', env: { ...process.env, SEALED_TENSORS_TEST_HOOKS: '' } });
  const withHooks = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8', env: { ...process.env, SEALED_TENSORS_TEST_HOOKS: '1' } });
  expect(without.stdout, without.stderr).toBe('undefined');
  expect(withHooks.stdout, withHooks.stderr).toBe('function');
});

describe('unwrapDataKey: tampering', () => {
  for (const kind of ['ec-p256', 'rsa-3072'] as const) {
    describe(kind, () => {
      let eph: EphemeralKey;
      let jwe: FlattenedJwe;
      beforeAll(async () => {
        eph = kind === 'ec-p256' ? ec : rsa;
        jwe = await makeJwe(eph.publicJwk, resource());
      });

      for (const field of ['protected', 'encrypted_key', 'iv', 'ciphertext', 'tag'] as const) {
        it(`a flipped bit anywhere in ${field} is refused, nothing kept`, () => {
          const bytes = b64(jwe[field]);
          // Every byte for the short fields; a spread of positions for the long ones.
          const step = Math.max(1, Math.floor(bytes.length / 48));
          const codes = new Set<string>();
          for (let i = 0; i < bytes.length; i += step) {
            const t = Buffer.from(bytes);
            t[i]! ^= 1 << i % 8;
            codes.add(failsClean(() => unwrapDataKey(eph, { ...jwe, [field]: enc64(t) })));
          }
          for (const c of codes) expect(REFUSED).toContain(c);
          if (field !== 'protected') expect([...codes]).toEqual(['ERR_INTEGRITY']);
        });
      }

      it('the protected header re-serialized (same members, other bytes) no longer authenticates: the AAD is the bytes received', () => {
        const h = headerOf(jwe);
        const reordered = Object.fromEntries(Object.entries(h).reverse());
        expect(failsClean(() => unwrapDataKey(eph, withHeader(jwe, reordered)))).toBe('ERR_INTEGRITY');
        expect(failsClean(() => unwrapDataKey(eph, { ...jwe, protected: enc64(Buffer.from(JSON.stringify(h, null, 1))) }))).toBe('ERR_INTEGRITY');
      });

      it('wrong alg, wrong enc, zip, crit and malformed headers are refused before any decryption', () => {
        const h = headerOf(jwe);
        const other = kind === 'ec-p256' ? 'RSA-OAEP-256' : 'ECDH-ES+A256KW';
        const cases: Record<string, unknown>[] = [
          { ...h, alg: other },
          { ...h, alg: 'ECDH-ES' },
          { ...h, alg: 'RSA1_5' },
          { ...h, alg: 'dir' },
          { ...h, enc: 'A128GCM' },
          { ...h, enc: 'A256CBC-HS512' },
          { ...h, zip: 'DEF' },
          { ...h, crit: ['exp'], exp: 1 },
        ];
        for (const c of cases) expect(failsClean(() => unwrapDataKey(eph, withHeader(jwe, c))), JSON.stringify(c)).toBe('ERR_PROTOCOL');
        for (const extra of [{ aad: 'AAAA' }, { header: { kid: 'x' } }, { unprotected: {} }]) {
          expect(failsClean(() => unwrapDataKey(eph, { ...jwe, ...extra } as FlattenedJwe)), JSON.stringify(extra)).toBe('ERR_PROTOCOL');
        }
        for (const p of ['', 'e30', enc64(Buffer.from('[]')), enc64(Buffer.from('{"alg":')), 'AAAA=', 'ab+/', 'A']) {
          expect(failsClean(() => unwrapDataKey(eph, { ...jwe, protected: p })), p).toBe('ERR_PROTOCOL');
        }
      });

      it('wrong sizes are refused as arguments; a JWE for another key as an integrity failure', async () => {
        for (const [field, len] of [['iv', 11], ['iv', 16], ['tag', 15], ['tag', 12], ['encrypted_key', kind === 'ec-p256' ? 32 : 256]] as const) {
          expect(failsClean(() => unwrapDataKey(eph, { ...jwe, [field]: enc64(randomBytes(len)) })), `${field} ${len}`).toBe('ERR_PROTOCOL');
        }
        expect(failsClean(() => unwrapDataKey(eph, { ...jwe, ciphertext: jwe.ciphertext + 'AAAA' }))).toBe('ERR_INTEGRITY');
        const other = generateEphemeralKey(kind === 'ec-p256' ? 'ec-p256' : 'rsa-3072');
        try {
          const forOther = await makeJwe(other.publicJwk, resource());
          expect(outcome(other, forOther)).toBe('ok');
          expect(failsClean(() => unwrapDataKey(eph, forOther))).toBe('ERR_INTEGRITY');
        } finally {
          other.release();
        }
      });

      it('a plaintext without the "STK1" magic is refused', async () => {
        const bad = resource();
        bad[3] = 0x32; // "STK2"
        const jwe = await makeJwe(eph.publicJwk, bad);
        expect(failsClean(() => unwrapDataKey(eph, jwe))).toBe('ERR_INTEGRITY');
      });

      it('fast-check: random damage to a valid JWE never opens and never keeps anything', () => {
        const fields = ['protected', 'encrypted_key', 'iv', 'ciphertext', 'tag'] as const;
        fc.assert(
          fc.property(
            fc.constantFrom(...fields),
            fc.oneof(
              fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
              fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
              fc.record({ op: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
            ),
            (field, damage) => {
              const bytes = Buffer.from(b64(jwe[field]));
              let t: Buffer;
              if (damage.op === 'flip') {
                t = bytes;
                t[damage.at % t.length]! ^= 1 << damage.bit;
              } else if (damage.op === 'cut') {
                t = bytes.subarray(0, damage.at % bytes.length);
              } else {
                t = Buffer.concat([bytes, damage.extra]);
              }
              expect(REFUSED).toContain(failsClean(() => unwrapDataKey(eph, { ...jwe, [field]: enc64(t) })));
            },
          ),
          { numRuns: fuzzRuns(kind === 'ec-p256' ? 200 : 60) },
        );
      });
    });
  }

  it('ECDH-ES: another valid epk in the header, or a point off the curve, does not open', async () => {
    const jwe = await makeJwe(ec.publicJwk, resource());
    const h = headerOf(jwe) as { epk: { x: string; y: string } };
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    expect(failsClean(() => unwrapDataKey(ec, withHeader(jwe, { ...h, epk: { kty: 'EC', crv: 'P-256', x: stranger.x, y: stranger.y } })))).toBe('ERR_INTEGRITY');
    // Straight to the addon with the header untouched (so the AAD is right) and the point moved off
    // the curve: the import and the public-key check refuse it, as the same generic failure.
    const y = b64(h.epk.y);
    y[31]! ^= 1;
    const input = {
      protectedB64: jwe.protected,
      alg: 'ECDH-ES+A256KW' as const,
      epk: { x: new Uint8Array(b64(h.epk.x)), y: new Uint8Array(y) },
      encryptedKey: new Uint8Array(b64(jwe.encrypted_key)),
      iv: new Uint8Array(b64(jwe.iv)),
      ciphertext: new Uint8Array(b64(jwe.ciphertext)),
      tag: new Uint8Array(b64(jwe.tag)),
    };
    expect(failsClean(() => addon.jweUnwrapDataKey(_nativeEphemeral(ec), input))).toBe('ERR_INTEGRITY');
    const zero = { ...input, epk: { x: new Uint8Array(32), y: new Uint8Array(32) } };
    expect(failsClean(() => addon.jweUnwrapDataKey(_nativeEphemeral(ec), zero))).toBe('ERR_INTEGRITY');
    // And with the point as sent, the same input opens: the refusal above was the point.
    input.epk.y = new Uint8Array(b64(h.epk.y));
    expect(failsClean(() => addon.jweUnwrapDataKey(_nativeEphemeral(ec), { ...input, tag: new Uint8Array(16) }))).toBe('ERR_INTEGRITY');
    addon.jweUnwrapDataKey(_nativeEphemeral(ec), input).key.release();
  });

  it('ECDH-ES: an epk with other members, a non-P-256 curve or short coordinates is refused; RSA takes no epk', async () => {
    const jwe = await makeJwe(ec.publicJwk, resource());
    const h = headerOf(jwe) as { epk: Record<string, string> };
    for (const epk of [
      { ...h.epk, d: h.epk['x'] },
      { ...h.epk, crv: 'P-384' },
      { ...h.epk, kty: 'OKP' },
      { ...h.epk, x: enc64(b64(h.epk['x']!).subarray(1)) },
      'not a jwk',
      null,
    ]) {
      expect(failsClean(() => unwrapDataKey(ec, withHeader(jwe, { ...h, epk }))), JSON.stringify(epk)).toBe('ERR_PROTOCOL');
    }
    const { epk: _drop, ...noEpk } = h;
    expect(failsClean(() => unwrapDataKey(ec, withHeader(jwe, noEpk)))).toBe('ERR_PROTOCOL');
    const r = await makeJwe(rsa.publicJwk, resource());
    expect(failsClean(() => unwrapDataKey(rsa, withHeader(r, { ...headerOf(r), epk: h.epk })))).toBe('ERR_PROTOCOL');
  });

  it('the addon itself checks its arguments (what the wrapper would have refused)', async () => {
    const jwe = await makeJwe(ec.publicJwk, resource());
    const h = headerOf(jwe) as { epk: { x: string; y: string } };
    const good = {
      protectedB64: jwe.protected,
      alg: 'ECDH-ES+A256KW' as const,
      epk: { x: new Uint8Array(b64(h.epk.x)), y: new Uint8Array(b64(h.epk.y)) },
      encryptedKey: new Uint8Array(b64(jwe.encrypted_key)),
      iv: new Uint8Array(b64(jwe.iv)),
      ciphertext: new Uint8Array(b64(jwe.ciphertext)),
      tag: new Uint8Array(b64(jwe.tag)),
    };
    const native = _nativeEphemeral(ec);
    const bad: [string, unknown][] = [
      ['alg for the other kind', { ...good, alg: 'RSA-OAEP-256' }],
      ['unknown alg', { ...good, alg: 'A256KW' }],
      ['no epk', { ...good, epk: undefined }],
      ['epk x short', { ...good, epk: { ...good.epk, x: good.epk.x.subarray(1) } }],
      ['iv as a string', { ...good, iv: jwe.iv }],
      ['tag as a Buffer view of the wrong type', { ...good, tag: new Uint16Array(8) }],
      ['empty protected', { ...good, protectedB64: '' }],
      ['oversized ciphertext', { ...good, ciphertext: new Uint8Array(36 + 64 * 1024 + 1) }],
      ['oversized apu', { ...good, apu: new Uint8Array(1025) }],
    ];
    for (const [what, input] of bad) {
      expect(failsClean(() => addon.jweUnwrapDataKey(native, input as never)), what).toBe('ERR_INVALID_ARGUMENT');
    }
    // Getters run while the addon reads its input: one that releases the key, one that detaches a
    // member read before it. Neither may reach freed memory: the key is refused as released, and
    // the members were copied as they were read.
    const eph = generateEphemeralKey();
    const jwe2 = await makeJwe(eph.publicJwk, resource());
    const h2 = headerOf(jwe2) as { epk: { x: string; y: string } };
    const input2 = {
      protectedB64: jwe2.protected,
      alg: 'ECDH-ES+A256KW' as const,
      epk: { x: new Uint8Array(b64(h2.epk.x)), y: new Uint8Array(b64(h2.epk.y)) },
      encryptedKey: new Uint8Array(b64(jwe2.encrypted_key)),
      iv: new Uint8Array(b64(jwe2.iv)),
      ciphertext: new Uint8Array(b64(jwe2.ciphertext)),
      tag: new Uint8Array(b64(jwe2.tag)),
    };
    const detaching = {
      ...input2,
      get tag() {
        structuredClone(input2.ciphertext.buffer, { transfer: [input2.ciphertext.buffer] }); // detaches the array read before
        return new Uint8Array(b64(jwe2.tag));
      },
    };
    const opened = addon.jweUnwrapDataKey(_nativeEphemeral(eph), detaching);
    expect(parseManifest(opened.manifest)).toEqual(MANIFEST);
    opened.key.release();
    const releasing = {
      ...input2,
      ciphertext: new Uint8Array(b64(jwe2.ciphertext)),
      get tag() {
        eph.release();
        return new Uint8Array(b64(jwe2.tag));
      },
    };
    expect(failsClean(() => addon.jweUnwrapDataKey(_nativeEphemeral(eph), releasing))).toBe('ERR_RELEASED');
    expect(failsClean(() => addon.jweUnwrapDataKey(native, { ...good, protectedB64: good.protectedB64 + '\u00e9' }))).toBe('ERR_INVALID_ARGUMENT');

    const key = importKey(new Uint8Array(TEST_KEY));
    expect(failsClean(() => addon.jweUnwrapDataKey(key as never, good))).toBe('ERR_INVALID_ARGUMENT');
    key.release();
    expect(failsClean(() => addon.jweUnwrapDataKey({} as never, good))).toBe('ERR_INVALID_ARGUMENT');
    addon.jweUnwrapDataKey(native, good).key.release();
  });
});

describe('release', () => {
  it('a released ephemeral key opens nothing (ERR_RELEASED); release is idempotent; the data key outlives it', async () => {
    const eph = generateEphemeralKey();
    const jwe = await makeJwe(eph.publicJwk, resource());
    const { key } = unwrapDataKey(eph, jwe);
    expect(eph.released).toBe(false);
    expect(eph.release()).toBe(true);
    expect(eph.released).toBe(true);
    expect(eph.release()).toBe(false);
    expect(() => unwrapDataKey(eph, jwe)).toThrow(expect.objectContaining({ code: 'ERR_RELEASED' }));
    expect(() => addon.jweUnwrapDataKey(_nativeEphemeral(eph), {} as never)).toThrow(expect.objectContaining({ code: 'ERR_RELEASED' }));
    expect(() => addon._testing.ephemeralPrivate(_nativeEphemeral(eph))).toThrow(expect.objectContaining({ code: 'ERR_RELEASED' }));
    // The data key handle is independent of the ephemeral key.
    const reader = await NativeSealedModelReader.open(model.path, key, { threads: 1 });
    reader.close();
    key.release();
    await expect(NativeSealedModelReader.open(model.path, key)).rejects.toMatchObject({ code: 'ERR_RELEASED' });
  });

  it('an object that is not an ephemeral key is refused, by the wrapper and by the addon (methods check `this`)', () => {
    expect(() => unwrapDataKey({ kind: 'ec-p256', publicJwk: ec.publicJwk, released: false, release: () => true }, {} as never)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    const native = _nativeEphemeral(ec);
    expect(() => native.release.call({})).toThrow(TypeError); // V8's receiver check
    const released = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(native), 'released')!.get!;
    expect(() => released.call({})).toThrow(expect.objectContaining({ code: 'ERR_INVALID_THIS' })); // the addon's tag check
    expect(() => new (addon as unknown as { NativeEphemeralKey: new () => unknown }).NativeEphemeralKey()).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('a key that is garbage-collected without release() frees its private key (finalizer)', () => {
    const r = runChild(
      `const used = () => addon._testing.opensslSecureUsed();
      globalThis.first = addon.ephemeralKeyGenerate(); // sets up the heap; kept
      const base = used();
      for (let i = 0; i < 200; i++) addon.ephemeralKeyGenerate();
      const held = used() - base;
      (async () => {
        for (let i = 0; i < 10 && used() > base; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
        console.log(JSON.stringify({ held, left: used() - base }));
      })();`,
      { nodeArgs: ['--expose-gc'] },
    );
    expect(r.stderr).toBe('');
    const out = r.json as { held: number; left: number };
    expect(out.held).toBeGreaterThanOrEqual(200 * 32);
    expect(out.left).toBe(0);
  });
});

describe('OpenSSL secure heap under memory-lock limits', () => {
  const lim = (bytes: number) => {
    const prefix = ['prlimit', `--memlock=${bytes}:${bytes}`, '--'];
    if (process.getuid?.() === 0) prefix.push('setpriv', '--bounding-set=-ipc_lock', '--inh-caps=-ipc_lock', '--');
    return prefix;
  };
  // The child makes a key, reports what hardening() says, and runs a (failing) unwrap, which needs
  // secure memory of its own beside the heap.
  const CHILD = `
    const { handle } = addon.ephemeralKeyGenerate();
    const h = addon.hardening();
    const caps = /CapEff:\\s+(\\w+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1];
    const vmlck = /VmLck:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1];
    let unwrap;
    try { addon.jweUnwrapDataKey(handle, { protectedB64: 'eyJ9', alg: 'ECDH-ES+A256KW', epk: { x: new Uint8Array(32), y: new Uint8Array(32) }, encryptedKey: new Uint8Array(40), iv: new Uint8Array(12), ciphertext: new Uint8Array(40), tag: new Uint8Array(16) }); }
    catch (e) { unwrap = e.code; }
    console.log(JSON.stringify({ heap: h.opensslSecureHeap, detail: h.opensslSecureHeapDetail, caps, vmlck: Number(vmlck), unwrap }));`;
  if (!which('prlimit')) console.warn('SKIPPED test/native/jwe.test.ts secure-heap limits: no prlimit (util-linux)');

  it.skipIf(!which('prlimit'))('with the common unprivileged 8 MiB limit: locked', () => {
    const r = runChild(CHILD, { prefix: lim(8 << 20) });
    expect(r.stderr).toBe('');
    const out = r.json as { heap: boolean; detail: { locked: boolean; initResult: number }; caps: string; vmlck: number; unwrap: string };
    expect(BigInt('0x' + out.caps) & (1n << 14n)).toBe(0n); // no CAP_IPC_LOCK
    expect(out.heap).toBe(true);
    expect(out.detail).toMatchObject({ locked: true, initResult: 1 });
    expect(out.vmlck).toBeGreaterThanOrEqual(256); // KiB: the heap counts against the limit
    expect(out.unwrap).toBe('ERR_INTEGRITY'); // the JWE step's own secure memory fits beside it
  });

  it.skipIf(!which('prlimit'))('with no room to lock it (64 KiB): keys still work, hardening() says the heap is not locked', () => {
    const r = runChild(CHILD, { prefix: lim(64 << 10) });
    expect(r.stderr).toBe('');
    const out = r.json as { heap: boolean; detail: { locked: boolean; initialized: boolean; dontDump: boolean; initResult: number }; unwrap: string };
    expect(out.heap).toBe(false);
    expect(out.detail).toMatchObject({ initialized: true, locked: false, dontDump: true, initResult: 2 });
    expect(out.unwrap).toBe('ERR_INTEGRITY');
  });

  it('node --secure-heap: the addon uses the heap Node set up', () => {
    const r = runChild(
      `const before = addon.hardening().opensslSecureHeapDetail;
      addon.ephemeralKeyGenerate();
      const h = addon.hardening();
      console.log(JSON.stringify({ before, heap: h.opensslSecureHeap, detail: h.opensslSecureHeapDetail }));`,
      { nodeArgs: ['--secure-heap=65536', '--secure-heap-min=32'] },
    );
    expect(r.stderr).toBe('');
    const out = r.json as { before: { initialized: boolean }; heap: boolean; detail: { initializedBy: string; size: number; initResult: number } };
    expect(out.before.initialized).toBe(true);
    expect(out.detail).toMatchObject({ initializedBy: 'node', initResult: -1, size: 65536 });
    expect(out.heap).toBe(true);
  });

  const asRoot = process.getuid?.() === 0;
  if (!asRoot || !which('setpriv')) console.warn('SKIPPED test/native/jwe.test.ts unprivileged secure heap: needs root and setpriv to drop to uid 65534');
  it.skipIf(!asRoot || !which('setpriv') || !which('prlimit'))('as an unprivileged user (uid 65534) with 8 MiB: locked', () => {
    const shared = mkdtempSync(join(dir, 'nobody-'));
    chmodSync(dir, 0o711);
    chmodSync(shared, 0o711);
    const copy = join(shared, 'addon.node');
    copyFileSync(addonPath, copy);
    chmodSync(copy, 0o644);
    const script = `const addon = require(${JSON.stringify(copy)});\n${CHILD}`;
    const argv = ['prlimit', `--memlock=${8 << 20}:${8 << 20}`, '--', 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script];
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', cwd: shared, timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ heap: true, detail: { locked: true, initResult: 1 }, unwrap: 'ERR_INTEGRITY' });
  });
});

// ---- No copy in the child's memory or heap snapshot ---------------------------------------------

const SCAN_CHILD = `
import fs from 'node:fs';
import v8 from 'node:v8';
import readline from 'node:readline';
// Opened before the addon makes the process non-dumpable (which makes /proc/self/mem root's).
const mem = fs.openSync('/proc/self/mem', 'r');
const [lib, snapshotPath] = process.argv.slice(2);
const { generateEphemeralKey, unwrapDataKey, _nativeEphemeral } = await import(lib + '/src/native/ephemeral.js');
const { loadAddon } = await import(lib + '/src/native/addon.js');
const addon = loadAddon();
const keys = [generateEphemeralKey('ec-p256'), generateEphemeralKey('rsa-3072')];
process.stdout.write(JSON.stringify(keys.map((k) => k.publicJwk)) + '\\n');
const rl = readline.createInterface({ input: process.stdin });
const line = await new Promise((resolve) => rl.once('line', resolve));
rl.close();
const msg = JSON.parse(line);
const opened = msg.jwes.map((jwe, i) => unwrapDataKey(keys[i], jwe));
globalThis.keep = [keys, opened];

// Needles, each as two 16-byte halves in 4 KiB buffers of their own: never a whole copy here.
const half = (fill) => { const b = Buffer.alloc(4096); fill(b); return b.subarray(0, 16); };
const needles = {};
for (const [name, [a, b]] of Object.entries(msg.halves)) needles[name] = [half((x) => x.write(a, 0, 'hex')), half((x) => x.write(b, 0, 'hex'))];
// The private keys, read from a secure buffer the test hook fills: a 32-byte window of each part,
// in memory (little-endian limb) order and reversed (big-endian, as a serialized key would be).
const privParts = { ec: [['scalar', 0]], rsa: [['d', 64], ['p', 384 + 32], ['q', 576 + 32], ['dP', 768 + 32], ['dQ', 960 + 32], ['qInv', 1152 + 32]] };
const privs = keys.map((k) => new Uint8Array(addon._testing.ephemeralPrivate(_nativeEphemeral(k))));
for (const [i, kind] of [[0, 'ec'], [1, 'rsa']]) {
  for (const [part, at] of privParts[kind]) {
    const p = privs[i];
    needles[kind + '.' + part + '.le'] = [half((x) => { for (let j = 0; j < 16; j++) x[j] = p[at + j]; }), half((x) => { for (let j = 0; j < 16; j++) x[j] = p[at + 16 + j]; })];
    needles[kind + '.' + part + '.be'] = [half((x) => { for (let j = 0; j < 16; j++) x[j] = p[at + 31 - j]; }), half((x) => { for (let j = 0; j < 16; j++) x[j] = p[at + 15 - j]; })];
  }
}
const canaryByte = (i) => (i * 91 + 7) & 0xff ^ 0x3c;
const canary = new Uint8Array(32);
for (let i = 0; i < 32; i++) canary[i] = canaryByte(i);
globalThis.keep.push(canary);
needles.canary = [half((x) => { for (let j = 0; j < 16; j++) x[j] = canaryByte(j); }), half((x) => { for (let j = 0; j < 16; j++) x[j] = canaryByte(16 + j); })];

// A scavenge moves young objects: one from a mapping not yet read into one already read would be
// missed. Promote everything first (before listing the mappings: a GC maps and unmaps pages), then
// allocate (almost) nothing while reading.
globalThis.gc();
globalThis.gc();
const maps = [];
let cur;
for (const l of fs.readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
  const m = /^([0-9a-f]+)-([0-9a-f]+) (\\S{4}) \\S+ \\S+ \\S+\\s*(.*)$/.exec(l);
  if (m) { cur = { start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], name: m[4], flags: [] }; maps.push(cur); }
  else if (cur && l.startsWith('VmFlags:')) cur.flags = l.slice(8).trim().split(/\\s+/);
}
// Hits outside the undumpable mappings (ours and OpenSSL's secure heap) are copies that should not
// exist; inside them, where each one is (the flags of its mapping).
const hits = Object.fromEntries(Object.keys(needles).map((n) => [n, 0]));
const secureHits = Object.fromEntries(Object.keys(needles).map((n) => [n, []]));
const CH = 1 << 20;
const buf = Buffer.allocUnsafeSlow(CH);
const list = Object.entries(needles);
for (const m of maps) m.where = m.flags.filter((f) => ['lo', 'lf', 'dd', 'wf'].includes(f)).sort().join(',');
let scanned = 0;
const unread = [];
for (const m of maps) {
  if (m.perms[0] !== 'r' || m.name.startsWith('[vvar') || m.name === '[vsyscall]') continue;
  const secure = m.flags.includes('dd');
  for (let at = m.start; at < m.end; at += CH - 64) {
    let n;
    try { n = fs.readSync(mem, buf, 0, Math.min(CH, m.end - at), at); } catch (e) { unread.push(m.name + ' ' + e.code); break; }
    scanned += n;
    for (const [name, [a, b]] of list) {
      for (let p = buf.indexOf(a); p >= 0 && p < n; p = buf.indexOf(a, p + 1)) {
        let same = p + 32 <= n;
        for (let j = 0; same && j < 16; j++) same = buf[p + 16 + j] === b[j];
        if (!same) continue;
        if (secure) secureHits[name].push(m.where);
        else hits[name]++;
      }
    }
  }
}
fs.closeSync(mem);
v8.writeHeapSnapshot(snapshotPath);
// Written before these strings exist: a hit in the snapshot is a real copy.
const text = fs.readFileSync(snapshotPath, 'latin1');
const join2 = ([a, b], enc) => Buffer.concat([a, b]).toString(enc);
const inSnapshot = {};
for (const [name, pair] of Object.entries(needles)) {
  if (name.endsWith('.le')) continue;
  inSnapshot[name] = ['hex', 'base64', 'base64url'].some((enc) => text.includes(join2(pair, enc).slice(0, 40)));
}
console.log(JSON.stringify({ hits, secureHits, inSnapshot, scanned, unread, manifests: opened.map((o) => Buffer.from(o.manifest).toString()) }));
`;

describe('no copy of any secret outside secure memory (child process: /proc/self/mem and a heap snapshot)', () => {
  it('holds for the data key, the CEK, Z, the KEK and both ephemeral private keys after opening a JWE of each kind', async () => {
    const lib = join(dir, 'lib');
    transpile(['src/native/ephemeral.ts'], lib);
    const childPath = join(dir, 'scan-child.mjs');
    writeFileSync(childPath, SCAN_CHILD);
    const snapshot = join(dir, 'child.heapsnapshot');
    const child = spawn(process.execPath, ['--expose-gc', childPath, lib, snapshot], {
      env: { ...process.env, SEALED_TENSORS_ADDON: addonPath },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<number | null>((resolve) => child.on('close', resolve));
    const jwks = await new Promise<PublicJwk[]>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        const nl = stdout.indexOf('\n');
        if (nl >= 0 && stdout.length > 0) resolve(JSON.parse(stdout.slice(0, nl)) as PublicJwk[]);
      });
      child.on('close', () => reject(new Error(`child ended early: ${stderr}`)));
    });
    // Secrets chosen here so the child can look for them: the data key, both CEKs, and for ECDH the
    // sender's ephemeral key, from which Z and the KEK follow (RFC 7518 4.6.2, computed by hand).
    const dataKey = randomBytes(32);
    const cek = [randomBytes(32), randomBytes(32)];
    const { subtle } = webcrypto;
    const epk = (await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits'])) as webcrypto.CryptoKeyPair;
    const { alg: _alg, ...sessionJwk } = jwks[0]!;
    const sessionKey = await subtle.importKey('jwk', sessionJwk, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
    const z = Buffer.from(await subtle.deriveBits({ name: 'ECDH', public: sessionKey }, epk.privateKey, 256));
    const lp = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
    const otherInfo = Buffer.concat([lp(Buffer.from('ECDH-ES+A256KW')), lp(Buffer.alloc(0)), lp(Buffer.alloc(0)), Buffer.from([0, 0, 1, 0])]);
    const kek = createHash('sha256').update(Buffer.concat([Buffer.from([0, 0, 0, 1]), z, otherInfo])).digest();
    const plain = resource(new Uint8Array(dataKey));
    const jwes = [
      await makeJwe(jwks[0]!, plain, { cek: cek[0], epk: epk.privateKey }),
      await makeJwe(jwks[1]!, plain, { cek: cek[1] }),
    ];
    const halves = (b: Buffer) => [b.subarray(0, 16).toString('hex'), b.subarray(16, 32).toString('hex')];
    child.stdin.write(JSON.stringify({ jwes, halves: { dataKey: halves(dataKey), cekEc: halves(cek[0]!), cekRsa: halves(cek[1]!), z: halves(z), kek: halves(kek) } }) + '\n');
    child.stdin.end();
    const status = await done;
    expect(stderr).toBe('');
    expect(status).toBe(0);
    const out = JSON.parse(stdout.trim().split('\n').pop()!) as {
      hits: Record<string, number>;
      secureHits: Record<string, string[]>;
      inSnapshot: Record<string, boolean>;
      scanned: number;
      unread: string[];
      manifests: string[];
    };
    expect(out.manifests.map((m) => JSON.parse(m) as unknown)).toEqual([MANIFEST, MANIFEST]);
    expect(out.scanned).toBeGreaterThan(16 << 20);
    expect(out.unread, 'mappings the scan could not read').toEqual([]);
    const { canary, ...secrets } = out.hits;
    expect(canary).toBeGreaterThanOrEqual(1); // the scan sees the V8 heap
    expect(secrets).toEqual(Object.fromEntries(Object.keys(secrets).map((k) => [k, 0])));
    // Where the secrets are: the data keys in our regions (locked, undumpable, wiped on fork) ...
    expect(out.secureHits['dataKey']).toEqual(['dd,lo,wf', 'dd,lo,wf']);
    // ... nothing of the JWE's intermediates anywhere (their regions were wiped) ...
    for (const n of ['cekEc', 'cekRsa', 'z', 'kek']) expect(out.secureHits[n], n).toEqual([]);
    // ... and the private keys in OpenSSL's secure heap (locked on fault, undumpable: no "wf", which
    // only our regions have) besides the test hook's own copy in one of our regions.
    const openssl = 'dd,lf,lo';
    for (const [name, where] of Object.entries(out.secureHits)) {
      if (!/^(ec|rsa)\./.test(name)) continue;
      if (name.endsWith('.le')) expect(where.sort(), name).toEqual(['dd,lo,wf', openssl].sort());
      else expect(where, name).toEqual([]);
    }
    for (const [name, found] of Object.entries(out.inSnapshot)) {
      if (name !== 'canary') expect(found, `${name} in the heap snapshot`).toBe(false);
    }
  }, 120_000);
});
