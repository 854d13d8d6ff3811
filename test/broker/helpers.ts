import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { initBroker, type InitOptions } from '../../src/broker/init.js';
import { loadBrokerConfig, type BrokerConfig } from '../../src/broker/config.js';
import { AuditLog } from '../../src/broker/audit.js';
import { FileKeystore } from '../../src/broker/keystore.js';

/** A fresh broker folder in a temp folder removed after the test. */
export async function makeBroker(opts: InitOptions = {}): Promise<{ dir: string; root: string }> {
  const root = tempDir('st-broker-');
  const dir = join(root, 'broker');
  await initBroker(dir, opts);
  return { dir, root };
}

/** Config, audit log and keystore of a broker folder; close() closes both. */
export async function openBroker(dir: string): Promise<{ config: BrokerConfig; audit: AuditLog; keystore: FileKeystore; close(): Promise<void> }> {
  const config = await loadBrokerConfig(dir);
  const audit = await AuditLog.open(dir);
  const keystore = await FileKeystore.open(config, audit);
  return { config, audit, keystore, close: async () => { await keystore.close(); await audit.close(); } };
}

export const KEY_A = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
export const KEY_B = Uint8Array.from({ length: 32 }, (_, i) => 200 - i);
export const MODEL_1 = { bundleId: '11'.repeat(16), headerDigest: 'aa'.repeat(32), label: 'model-1' };
export const MODEL_2 = { bundleId: '22'.repeat(16), headerDigest: 'bb'.repeat(32), label: 'model-2' };
