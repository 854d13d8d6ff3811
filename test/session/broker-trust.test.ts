// The session knows its broker: TLS trust said explicitly (ca, or trustPublicRoots), and the
// broker's signing keys pinned (brokerKey): a broker with another key, a token or a receipt signed
// by anything else, is refused with ERR_BROKER_UNTRUSTED and nothing is kept.
import net from 'node:net';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { calculateJwkThumbprint, CompactSign, type JWK } from 'jose';
import { BrokerTrustError, InvalidArgumentError, SealedTensorsError } from '../../src/errors.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { startBroker, type RunningBroker } from '../../src/broker/server.js';
import { EnclaveSession } from '../../src/session/enclave-session.js';
import { pinBrokerKeys, verifyReleaseReceipt } from '../../src/session/broker-trust.js';
import { RECEIPT_TYP } from '../../src/protocol/token.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from '../broker/memory.js';
import { signingKey, testCertificates, SIM_MEASUREMENT, type SigningMaterial } from '../broker/fixture.js';
import { handles, made } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { sealedFile } from './setup.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { failure } from './harness.js';

const running: { close(): Promise<void> | void }[] = [];
afterEach(async () => {
  for (const b of running.splice(0)) await b.close();
});

const tee = new SimulatedTee();
const pub = (k: SigningMaterial): JWK => ({ ...k.publicJwk, kid: k.kid });

async function broker(
  model: { binding: { bundleId: string; headerDigest: string } },
  keys: { signing: SigningMaterial; receipt: SigningMaterial },
  tls: { cert: string; key: string },
  issuer?: string,
): Promise<RunningBroker> {
  const keystore = new MemoryKeystore();
  const policies = new MemoryPolicies();
  policies.policies.set('default', validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } } } }));
  await keystore.add(TEST_KEY, { keyId: 'model-key', models: [model.binding], policy: 'default' });
  const b = await startBroker({
    keystore,
    policies,
    audit: new MemoryAudit(),
    signingKey: keys.signing,
    receiptKey: keys.receipt,
    host: '127.0.0.1',
    port: 0,
    tls,
    allowSimulated: true,
    simulatedRoots: [tee.rootFingerprint],
    ...(issuer ? { issuer } : {}),
  });
  running.push(b);
  return b;
}


function expectAllReleased(): void {
  expect(made.every((e) => e.released) && handles.every((h) => h.released)).toBe(true);
}

describe('EnclaveSession: the broker it trusts', () => {
  it('with brokerKey pinned: its own broker is accepted (token and receipt verified); a broker with another signing key, or another issuer, is refused', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'model-key');
    const { tls, ca } = await testCertificates();
    const ours = { signing: await signingKey('tok'), receipt: await signingKey('rcpt') };
    const good = await broker(model, ours, tls);
    const brokerKey = { keys: [pub(ours.signing), pub(ours.receipt)] };

    const session = await EnclaveSession.establish({ broker: good.url, ca, brokerKey, provider: tee, keys: ['model-key'] });
    try {
      expect(session.info.brokerKeyId).toBe('tok');
      expect(session.info.receipts).toHaveLength(1);
      await (await session.open(model.path)).close();
    } finally {
      session.close();
    }
    // A JWK without kid is known by its thumbprint; the broker's kids here are not thumbprints.
    const byThumbprint = { keys: [{ ...ours.signing.publicJwk }, { ...ours.receipt.publicJwk }] };
    expect((await failure(EnclaveSession.establish({ broker: good.url, ca, brokerKey: byThumbprint, provider: tee, keys: ['model-key'] }))).code).toBe('ERR_BROKER_UNTRUSTED');

    // Same name, same CA (a certificate an attacker got for it), other signing keys.
    const impostor = await broker(model, { signing: await signingKey('tok'), receipt: await signingKey('rcpt') }, tls);
    const err = await failure(EnclaveSession.establish({ broker: impostor.url, ca, brokerKey, provider: tee, keys: ['model-key'] }));
    expect(err).toBeInstanceOf(BrokerTrustError);
    expect(err.code).toBe('ERR_BROKER_UNTRUSTED');
    expect(err.message).toMatch(/token does not verify with the pinned key/);
    // Without the pin the same impostor is let in on TLS alone: what the pin is for.
    (await EnclaveSession.establish({ broker: impostor.url, ca, provider: tee, keys: ['model-key'] })).close();

    // Our keys, but a token issuer other than the one the session expects.
    const renamed = await broker(model, ours, tls, 'some-other-broker');
    expect((await failure(EnclaveSession.establish({ broker: renamed.url, ca, brokerKey, provider: tee, keys: ['model-key'] }))).message).toMatch(/another iss/);
    (await EnclaveSession.establish({ broker: renamed.url, ca, brokerKey, brokerIssuer: 'some-other-broker', provider: tee, keys: ['model-key'] })).close();

    // Only the token key pinned: the receipt's key is not, so the release is refused.
    const tokenOnly = await failure(EnclaveSession.establish({ broker: good.url, ca, brokerKey: pub(ours.signing), provider: tee, keys: ['model-key'] }));
    expect(tokenOnly.code).toBe('ERR_BROKER_UNTRUSTED');
    expect(tokenOnly.message).toMatch(/receipt .* not pinned/);
    expectAllReleased();
  });

  it('no ca and no trustPublicRoots: refused before any connection; a bad brokerKey too', async () => {
    let connections = 0;
    const server = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    running.push({ close: () => new Promise<void>((r) => server.close(() => r())) });
    const url = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const none = await failure(EnclaveSession.establish({ broker: url, provider: tee, keys: ['k1'] }));
    expect(none).toBeInstanceOf(InvalidArgumentError);
    expect(none.message).toMatch(/must know its broker: pass ca\b.*trustPublicRoots: true/);
    const { ca } = await testCertificates();
    expect(await failure(EnclaveSession.establish({ broker: url, ca, trustPublicRoots: true, provider: tee, keys: ['k1'] }))).toBeInstanceOf(InvalidArgumentError);
    const k = await signingKey();
    const privateJwk = { ...pub(k), d: 'x'.repeat(43) };
    for (const bad of [privateJwk, { kty: 'RSA', n: 'x', e: 'AQAB' }, { keys: [] }, 'key', { keys: [pub(k), pub(k)] }]) {
      expect(await failure(EnclaveSession.establish({ broker: url, ca, brokerKey: bad as JWK, provider: tee, keys: ['k1'] }))).toBeInstanceOf(InvalidArgumentError);
    }
    expect(await failure(EnclaveSession.establish({ broker: url, ca, brokerIssuer: 'x', provider: tee, keys: ['k1'] }))).toBeInstanceOf(InvalidArgumentError);
    expect(connections).toBe(0);
  });
});

describe('verifyReleaseReceipt', () => {
  it('refuses a receipt that is missing, signed by the token key or an unpinned key, of another typ, or for another key, session or model list', async () => {
    const token = await signingKey('tok');
    const receipt = await signingKey('rcpt');
    const stranger = await signingKey('rcpt');
    const pinned = await pinBrokerKeys({ keys: [pub(token), pub(receipt)] });
    const tokenSigner = pinned.keys[0]!;
    const models = [{ bundleId: 'aa'.repeat(16), headerDigest: 'bb'.repeat(32) }];
    const teePubkey = await calculateJwkThumbprint(token.publicJwk, 'sha256');
    const expected = { keyId: 'k1', teePubkey, models };
    const claims = { keyId: 'k1', teePubkey, models: [{ ...models[0], label: 'x' }], receiptId: 'r'.repeat(22) };
    const sign = (k: SigningMaterial, c: object = claims, typ = RECEIPT_TYP): Promise<string> =>
      new CompactSign(Buffer.from(JSON.stringify(c))).setProtectedHeader({ alg: 'ES256', kid: k.kid, typ }).sign(k.privateKey);

    await verifyReleaseReceipt(await sign(receipt), pinned, tokenSigner, expected);
    const refused = async (jws: string | undefined, why: RegExp): Promise<void> => {
      const err = await failure(verifyReleaseReceipt(jws, pinned, tokenSigner, expected));
      expect(err.code).toBe('ERR_BROKER_UNTRUSTED');
      expect(err.message).toMatch(why);
    };
    await refused(undefined, /without a receipt/);
    await refused(await sign(token), /signed by the token key/);
    await refused(await sign(stranger), /does not verify with the pinned key/);
    await refused(await sign(receipt, claims, 'JWT'), /typ/);
    await refused(await sign(receipt, { ...claims, keyId: 'k2' }), /for key "k2"/);
    await refused(await sign(receipt, { ...claims, teePubkey: 'x'.repeat(43) }), /another session key/);
    await refused(await sign(receipt, { ...claims, models: [] }), /other models/);
    await refused(await sign(receipt, { ...claims, models: [...claims.models, { bundleId: 'cc'.repeat(16), headerDigest: 'dd'.repeat(32) }] }), /other models/);
  });
});

describe('one key pinned under two kids (review-c)', () => {
  it('brokerKey listing the same public key twice is refused, and a receipt by the token key under another kid is never accepted', async () => {
    const token = await signingKey('tok');
    const receipt = await signingKey('rcpt');
    // The same key again under another kid: the token key would then pass for "another pinned key".
    const twice = { keys: [pub(token), { ...token.publicJwk, kid: 'tok-again' }, pub(receipt)] };
    const err = await failure(pinBrokerKeys(twice));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.message).toMatch(/same key twice/);
    // verifyReleaseReceipt on its own: a key set built by hand that holds the token key twice.
    const good = await pinBrokerKeys({ keys: [pub(token), pub(receipt)] });
    const again = (await pinBrokerKeys({ ...token.publicJwk, kid: 'tok-again' })).keys[0]!;
    const pinned = { keys: [...good.keys, again] };
    const models = [{ bundleId: 'aa'.repeat(16), headerDigest: 'bb'.repeat(32) }];
    const teePubkey = await calculateJwkThumbprint(receipt.publicJwk, 'sha256');
    const jws = await new CompactSign(Buffer.from(JSON.stringify({ keyId: 'k1', teePubkey, models })))
      .setProtectedHeader({ alg: 'ES256', kid: 'tok-again', typ: RECEIPT_TYP })
      .sign(token.privateKey);
    const refused = await failure(verifyReleaseReceipt(jws, pinned, pinned.keys[0]!, { keyId: 'k1', teePubkey, models }));
    expect(refused.code).toBe('ERR_BROKER_UNTRUSTED');
    expect(refused.message).toMatch(/signed by the token key/);
  });
});

describe('the pinned-key parsers, fuzzed', () => {
  const outcome = async (f: () => Promise<unknown>): Promise<string> => {
    try {
      await f();
      return 'ok';
    } catch (err) {
      return err instanceof SealedTensorsError ? err.code : `untyped: ${String(err)}`;
    }
  };

  it('brokerKey: any JSON value is a pinned key set or ERR_INVALID_ARGUMENT, never another error', async () => {
    const k = await signingKey();
    const near = fc.record({ kty: fc.constantFrom('EC', 'RSA', 'oct', 1), crv: fc.constantFrom('P-256', 'P-384', undefined), x: fc.oneof(fc.constant(k.publicJwk.x), fc.string()), y: fc.oneof(fc.constant(k.publicJwk.y), fc.string()), kid: fc.oneof(fc.string(), fc.integer(), fc.constant(undefined)), alg: fc.constantFrom('ES256', 'RS256', undefined) }, { requiredKeys: [] });
    const input = fc.oneof(fc.jsonValue(), near, fc.record({ keys: fc.oneof(fc.array(near, { maxLength: 20 }), fc.jsonValue()) }));
    await fc.assert(
      fc.asyncProperty(input, async (v) => {
        expect(['ok', 'ERR_INVALID_ARGUMENT']).toContain(await outcome(() => pinBrokerKeys(v)));
      }),
      { numRuns: fuzzRuns(200) },
    );
  });

  it('a receipt: any string or a flipped character of a good one is ERR_BROKER_UNTRUSTED, never accepted or untyped', async () => {
    const token = await signingKey('tok');
    const receipt = await signingKey('rcpt');
    const pinned = await pinBrokerKeys({ keys: [pub(token), pub(receipt)] });
    const models = [{ bundleId: 'aa'.repeat(16), headerDigest: 'bb'.repeat(32) }];
    const expected = { keyId: 'k1', teePubkey: 'T'.repeat(43), models };
    const good = await new CompactSign(Buffer.from(JSON.stringify({ keyId: 'k1', teePubkey: 'T'.repeat(43), models })))
      .setProtectedHeader({ alg: 'ES256', kid: 'rcpt', typ: RECEIPT_TYP })
      .sign(receipt.privateKey);
    await verifyReleaseReceipt(good, pinned, pinned.keys[0]!, expected);
    const flipped = fc.tuple(fc.nat({ max: good.length - 1 }), fc.constantFrom(...'AQgw_-.='.split(''))).map(([i, c]) => good.slice(0, i) + c + good.slice(i + 1)).filter((s) => s !== good);
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), flipped), async (s) => {
        const r = await outcome(() => verifyReleaseReceipt(s, pinned, pinned.keys[0]!, expected));
        // Base64url's last character may carry unused bits: a flip there can decode to the same bytes.
        if (r === 'ok') expect(Buffer.from(s.split('.')[2] ?? '', 'base64url').equals(Buffer.from(good.split('.')[2]!, 'base64url'))).toBe(true);
        else expect(r).toBe('ERR_BROKER_UNTRUSTED');
      }),
      { numRuns: fuzzRuns(200) },
    );
  });
});
