import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { IoError } from '../errors.js';
import { SimulatedTee } from '../attestation/providers/simulated.js';

/**
 * The simulated TEE's root key file (development only): read it, or create it (Ed25519, PKCS#8 PEM,
 * mode 0600, never over an existing file) on first use. The broker trusts its fingerprint
 * (`broker init --simulated-key`), `load --simulated --simulated-key` signs evidence with it.
 */
export async function simulatedRootKey(path: string, what: string): Promise<{ key: KeyObject; created: boolean }> {
  let pem: Uint8Array | undefined;
  try {
    pem = new Uint8Array(await readFile(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new IoError(`cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (pem) return { key: SimulatedTee.keyFrom(pem), created: false };
  const key = generateKeyPairSync('ed25519').privateKey;
  try {
    await writeFile(path, key.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    throw new IoError(`cannot create ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
  return { key, created: true };
}
