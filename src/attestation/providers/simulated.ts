import type { KeyObject } from 'node:crypto';
import { nodeCrypto } from '../../crypto-builtin.js';
import { InvalidArgumentError } from '../../errors.js';
import { assertBytes } from '../../bytes.js';
import { SIMULATED_MAGIC, SIMULATED_VERSION } from '../verifiers/simulated.js';
import type { EvidenceProvider } from './types.js';

export interface SimulatedTeeOptions {
  /** Ed25519 private key of the local root; a fresh one per instance when absent. */
  rootKey?: KeyObject;
  /** 48-byte launch measurement to report; default SHA-384 of a fixed label. */
  measurement?: Uint8Array;
  debug?: boolean;
  /** Clock, for tests. */
  now?: () => Date;
}

/**
 * A software TEE for development and tests. Its evidence says `simulated` in its magic, its
 * claims and its tee type; no policy accepts it unless the policy sets allowSimulated.
 */
export class SimulatedTee implements EvidenceProvider {
  readonly tee = 'simulated' as const;
  readonly rootKey: KeyObject;
  readonly rootPublicKeyDer: Uint8Array;
  /** SHA-256 of the root SPKI: what a verifier must be told to trust. */
  readonly rootFingerprint: string;
  private readonly measurement: Uint8Array;
  private readonly debug: boolean;
  private readonly now: () => Date;

  constructor(opts: SimulatedTeeOptions = {}) {
    this.rootKey = opts.rootKey ?? nodeCrypto().generateKeyPairSync('ed25519').privateKey;
    if (this.rootKey.asymmetricKeyType !== 'ed25519' || this.rootKey.type !== 'private') {
      throw new InvalidArgumentError('SimulatedTee rootKey must be an Ed25519 private key');
    }
    this.rootPublicKeyDer = new Uint8Array(nodeCrypto().createPublicKey(this.rootKey).export({ format: 'der', type: 'spki' }));
    this.rootFingerprint = nodeCrypto().createHash('sha256').update(this.rootPublicKeyDer).digest('hex');
    if (opts.measurement !== undefined) assertBytes(opts.measurement, 'measurement', 48);
    this.measurement = opts.measurement ?? new Uint8Array(nodeCrypto().createHash('sha384').update('sealed-tensors simulated TEE').digest());
    this.debug = opts.debug ?? false;
    this.now = opts.now ?? (() => new Date());
  }

  /** Reads a PEM/DER Ed25519 private key, as `attest report --simulated --simulated-key FILE` does. */
  static keyFrom(data: Uint8Array | string): KeyObject {
    try {
      const k = typeof data === 'string' || data[0] === 0x2d ? nodeCrypto().createPrivateKey(Buffer.from(data)) : nodeCrypto().createPrivateKey({ key: Buffer.from(data), format: 'der', type: 'pkcs8' });
      return k;
    } catch (err) {
      throw new InvalidArgumentError('simulated root key must be an Ed25519 private key in PEM or PKCS#8 DER', { cause: err });
    }
  }

  async getEvidence(reportData: Uint8Array): Promise<Uint8Array> {
    assertBytes(reportData, 'reportData', 64);
    const header = Buffer.alloc(138);
    header.write(SIMULATED_MAGIC, 0, 'latin1');
    header.writeUInt16LE(SIMULATED_VERSION, 8);
    header.writeUInt16LE(this.debug ? 1 : 0, 10);
    header.writeBigUInt64LE(BigInt(this.now().getTime()), 16);
    header.set(this.measurement, 24);
    header.set(reportData, 72);
    header.writeUInt16LE(this.rootPublicKeyDer.length, 136);
    const signed = Buffer.concat([header, this.rootPublicKeyDer]);
    const signature = nodeCrypto().sign(null, signed, this.rootKey);
    return new Uint8Array(Buffer.concat([signed, signature]));
  }
}
