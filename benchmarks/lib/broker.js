// Pieces the broker benchmarks share (load.js, release.js): option parsing, a read-only in-memory
// keystore holding one key, and the broker's token and receipt signing keys.
import { exportJWK, generateKeyPair } from 'jose';

/** `--name value` from argv, or `dflt` when absent. */
export function optionReader(args) {
  return (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : dflt;
  };
}

/** A keystore with the one `record`, releasing a wiped copy of `dataKey`; `onRelease` counts releases. */
export function memoryKeystore(record, dataKey, onRelease = () => {}) {
  return {
    list: async () => [structuredClone(record)],
    get: async (id) => (id === record.keyId ? structuredClone(record) : undefined),
    async withDataKey(id, fn) {
      const copy = new Uint8Array(dataKey);
      try {
        return await fn(copy);
      } finally {
        copy.fill(0);
        onRelease();
      }
    },
    add: async () => {
      throw new Error('read-only');
    },
    revoke: async () => {},
    setPolicy: async () => {},
    setModels: async () => {},
  };
}

/** Fresh ES256 token-signing and receipt keys, as startBroker's signingKey and receiptKey. */
export async function benchSigningKeys() {
  const key = async (kid) => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    return { privateKey, publicJwk: await exportJWK(publicKey), kid };
  };
  return { signingKey: await key('bench'), receiptKey: await key('bench-receipt') };
}
