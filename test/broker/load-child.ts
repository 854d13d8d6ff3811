/**
 * The broker of test/broker/load.test.ts, in a process of its own so that its memory is measured
 * without the test's clients in it: startBroker on loopback HTTPS with the in-memory stores,
 * driven over IPC. Run with --expose-gc and the TypeScript hooks (test/helpers/ts-hooks.mjs).
 *
 * Messages in: {type:'start', ...LoadBrokerConfig}, {type:'memory'}, {type:'stats'}, {type:'close'}.
 * Messages out: {type:'ready', url, signingJwk}, {type:'memory', ...}, {type:'stats', ...}, {type:'closed'}.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startBroker, type RunningBroker } from '../../src/broker/server.js';
import { validatePolicy } from '../../src/attestation/policy/policy.js';
import { DATA_KEY, KEY_ID, MODELS, signingKey, simulatedPolicy } from './fixture.js';
import { MemoryAudit, MemoryKeystore, MemoryPolicies, type AuditLine } from './memory.js';
import { REVOKED_KEY_ID, STRICT_KEY_ID, type BrokerStats, type LoadBrokerConfig, type MemorySample } from './load-protocol.js';

const send = (m: unknown): void => void process.send!(m);

function verifyChain(entries: readonly AuditLine[]): number | undefined {
  let prev = '0'.repeat(64);
  for (const [i, e] of entries.entries()) {
    const { hash, ...line } = e;
    // MemoryAudit stored the parsed line: re-serialising it in the same member order is the line.
    if (e.seq !== i + 1 || e.prev !== prev || createHash('sha256').update(JSON.stringify(line)).digest('hex') !== hash) return e.seq;
    prev = hash;
  }
  return undefined;
}

let broker: RunningBroker | undefined;
const keystore = new MemoryKeystore();
const policies = new MemoryPolicies();
const audit = new MemoryAudit();
const errors: string[] = [];

async function start(cfg: LoadBrokerConfig): Promise<void> {
  policies.policies.set('default', simulatedPolicy());
  policies.policies.set('strict', validatePolicy({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: ['00'.repeat(48)] } } } }));
  await keystore.add(DATA_KEY, { keyId: KEY_ID, models: MODELS, policy: 'default' });
  await keystore.add(DATA_KEY.map((b) => b ^ 0xff), { keyId: STRICT_KEY_ID, models: MODELS, policy: 'strict' });
  await keystore.add(DATA_KEY.map((b) => b ^ 0x55), { keyId: REVOKED_KEY_ID, models: MODELS, policy: 'default' });
  await keystore.revoke(REVOKED_KEY_ID, 'load test');
  const signing = await signingKey('broker-load-1');
  broker = await startBroker({
    keystore,
    policies,
    audit,
    signingKey: signing,
    receiptKey: await signingKey('broker-load-receipt-1'),
    tls: cfg.tls,
    host: '127.0.0.1',
    port: 0,
    allowSimulated: true,
    simulatedRoots: [cfg.simulatedRoot],
    rateLimit: cfg.rateLimit,
    onError: (err) => errors.push(err instanceof Error ? (err.stack ?? err.message) : String(err)),
  });
  send({ type: 'ready', url: broker.url, signingJwk: signing.publicJwk, kid: signing.kid });
}

/** Memory after full collections: a few rounds with a turn of the event loop between, so finalizers and freed sockets settle. */
async function memory(): Promise<MemorySample> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('the load-test broker needs --expose-gc');
  for (let i = 0; i < 4; i++) {
    gc();
    await sleep(20);
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers };
}

function stats(): BrokerStats {
  const byEvent: Record<string, number> = {};
  for (const e of audit.entries) {
    const k = `${e.event}:${e.verdict ?? '-'}`;
    byEvent[k] = (byEvent[k] ?? 0) + 1;
  }
  return {
    handedOut: keystore.handedOut.length,
    allWiped: keystore.handedOut.every((k) => k.every((b) => b === 0)),
    entries: audit.entries.length,
    byEvent,
    rateLimited: audit.entries.filter((e) => e.reasons?.some((r) => r.startsWith('rate:'))).length,
    chainBreak: verifyChain(audit.entries),
    errors,
  };
}

process.on('message', (m: { type: string } & Partial<LoadBrokerConfig>) => {
  const reply = async (): Promise<void> => {
    if (m.type === 'start') await start(m as unknown as LoadBrokerConfig);
    else if (m.type === 'memory') send({ type: 'memory', ...(await memory()) });
    else if (m.type === 'stats') send({ type: 'stats', ...stats() });
    else if (m.type === 'close') {
      await broker?.close();
      send({ type: 'closed' });
      process.disconnect();
    }
  };
  reply().catch((err: unknown) => send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }));
});
