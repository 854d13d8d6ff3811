// The session against the project's own broker (src/broker/server.ts, in-memory stores), over
// HTTPS with a pinned CA: the two halves of the protocol agree. The lead's end-to-end test adds
// `broker init`/`serve` and the native ephemeral key; here the JWE is opened by the test double.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DeniedError, SealedTensorsError } from '../../src/errors.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { startBroker, type RunningBroker } from '../../src/broker/server.js';
import { EnclaveSession } from '../../src/session/enclave-session.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies } from '../broker/memory.js';
import { signingKey, testCertificates, SIM_MEASUREMENT } from '../broker/fixture.js';
import { handles, made } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { lockedBytes, sealedSharded } from './setup.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';


const running: RunningBroker[] = [];
afterEach(async () => {
  for (const b of running.splice(0)) await b.close();
});

describe('EnclaveSession with the real broker', () => {
  it('a granted session loads a sharded model byte-identical; a policy denial comes back with its reasons', async () => {
    const dir = tempDir();
    const model = await sealedSharded(dir, 'sharded', TEST_KEY, 'model-key');
    const tee = new SimulatedTee();
    const keystore = new MemoryKeystore();
    const policies = new MemoryPolicies();
    const audit = new MemoryAudit();
    policies.policies.set('default', validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [SIM_MEASUREMENT] } } } }));
    policies.policies.set('other', validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: ['00'.repeat(48)] } } } }));
    await keystore.add(TEST_KEY, { keyId: 'model-key', models: [{ ...model.binding, label: 'sharded' }], policy: 'default' });
    const { tls, ca } = await testCertificates();
    const broker = await startBroker({
      keystore,
      policies,
      audit,
      signingKey: await signingKey(),
      receiptKey: await signingKey('receipt'),
      host: '127.0.0.1',
      port: 0,
      tls,
      allowSimulated: true,
      simulatedRoots: [tee.rootFingerprint],
    });
    running.push(broker);
    expect(broker.url).toMatch(/^https:/);

    const baseline = lockedBytes();
    const session = await EnclaveSession.establish({ broker: broker.url, ca, provider: tee, keys: ['model-key'] });
    try {
      expect(session.info.verdict.status).toBe('warning'); // simulated evidence
      expect(session.info.receipts.map((r) => r.keyId)).toEqual(['model-key']);
      expect(session.info.keys[0]!.models).toEqual([{ ...model.binding, label: 'sharded' }]);
      const m = await session.open(model.path);
      let n = 0;
      for await (const t of m.tensors()) {
        expect(Buffer.from(t.bytes).equals(Buffer.from(model.data.get(t.info.name)!)), t.info.name).toBe(true);
        n++;
      }
      expect(n).toBe(model.data.size);
    } finally {
      session.close();
    }
    expect(lockedBytes()).toBe(baseline);

    await keystore.setPolicy('model-key', 'other');
    const err = await EnclaveSession.establish({ broker: broker.url, ca, provider: tee, keys: ['model-key'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeniedError);
    expect((err as DeniedError).status).toBe(403);
    expect((err as DeniedError).reasons.length).toBeGreaterThan(0);
    const unknown = (await EnclaveSession.establish({ broker: broker.url, ca, provider: tee, keys: ['no-such-key'] }).catch((e: unknown) => e)) as SealedTensorsError;
    expect(unknown.code).toBe('ERR_DENIED');
    expect(made.every((e) => e.released) && handles.every((h) => h.released)).toBe(true);
  });
});
