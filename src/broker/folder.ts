/**
 * A broker folder opened for serving or managing: its checked configuration, the audit log, the
 * file keystore and the policy store, and the options that start the HTTPS front on them.
 */
import type { BrokerOptions } from './options.js';
import { AuditLog } from './audit.js';
import { loadBrokerConfig, parseListen, type BrokerConfig } from './config.js';
import { FileKeystore } from './keystore.js';
import { FilePolicyStore } from './policies.js';
import type { AuditSink } from './types.js';

export interface OpenedBrokerFolder {
  config: BrokerConfig;
  audit: AuditLog;
  keystore: FileKeystore;
  policies: FilePolicyStore;
  /** Closes the keystore, then the audit log (after its queued appends). */
  close(): Promise<void>;
}

export async function openBrokerFolder(dir: string): Promise<OpenedBrokerFolder> {
  const config = await loadBrokerConfig(dir);
  const audit = await AuditLog.open(config.dir);
  let keystore: FileKeystore;
  try {
    keystore = await FileKeystore.open(config, audit);
  } catch (err) {
    await audit.close();
    throw err;
  }
  return {
    config,
    audit,
    keystore,
    policies: new FilePolicyStore(config.dir),
    close: async () => {
      await keystore.close();
      await audit.close();
    },
  };
}

/** startBroker's options for an opened folder; `listen` overrides config.json's. */
export function brokerOptions(b: OpenedBrokerFolder, over: { listen?: string; allowPlainHttpOnLoopback?: boolean; verifyThreads?: number } = {}): BrokerOptions {
  const c = b.config;
  const { host, port } = parseListen(over.listen ?? c.listen);
  const plain = over.allowPlainHttpOnLoopback === true;
  return {
    keystore: b.keystore,
    policies: b.policies,
    audit: b.audit,
    signingKey: c.signingKey,
    receiptKey: c.receiptKey,
    ...(plain ? { allowPlainHttpOnLoopback: true } : { tls: { cert: c.tls.cert, key: c.tls.key } }),
    host,
    port,
    allowSimulated: c.allowSimulated,
    simulatedRoots: c.simulatedRoots,
    tokenTtlSeconds: c.tokenTtlSeconds,
    challengeTtlSeconds: c.challengeTtlSeconds,
    maxPendingChallenges: c.maxPendingChallenges,
    rateLimit: { burst: c.rateLimitBurst, perSecond: c.rateLimitPerSecond },
    requestTimeoutMs: c.requestTimeoutMs,
    maxRequestBytes: c.maxRequestBytes,
    ...(over.verifyThreads ? { verifyThreads: { threads: over.verifyThreads } } : {}),
  };
}
