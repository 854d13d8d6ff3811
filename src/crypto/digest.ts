import type { CryptoBackend, Sha256 } from './backend.js';
import { toHex } from '../bytes.js';

const LEAF_PREFIX = Uint8Array.of(0x00);
const ROOT_PREFIX = Uint8Array.of(0x01);

/**
 * Builds a tensor's tree digest (FORMAT.md section 6) from its leaves, each leaf being the
 * tensor's part inside one payload chunk. Leaves may arrive in pieces but must arrive in order.
 */
export class TensorDigest {
  private readonly leafHashes: Uint8Array[] = [];
  private leaf: Sha256 | null = null;
  private length = 0;

  constructor(private readonly backend: Pick<CryptoBackend, 'sha256'>) {}

  /** Add bytes to the current leaf (opening one if needed). */
  update(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.leaf === null) this.leaf = this.backend.sha256().update(LEAF_PREFIX);
    this.leaf.update(bytes);
    this.length += bytes.length;
  }

  /** Close the current leaf: call at every chunk boundary the tensor crosses. */
  endLeaf(): void {
    if (this.leaf === null) return;
    this.leafHashes.push(this.leaf.digest());
    this.leaf = null;
  }

  /** Add a leaf whose hash was computed elsewhere (a native worker, another thread). */
  addLeafHash(hash: Uint8Array, leafLength: number): void {
    this.endLeaf();
    this.leafHashes.push(hash);
    this.length += leafLength;
  }

  digest(): Uint8Array {
    this.endLeaf();
    const lengthLe = new Uint8Array(8);
    new DataView(lengthLe.buffer).setBigUint64(0, BigInt(this.length), true);
    const root = this.backend.sha256().update(ROOT_PREFIX).update(lengthLe);
    for (const h of this.leafHashes) root.update(h);
    return root.digest();
  }

  digestHex(): string {
    return toHex(this.digest());
  }
}

/** Tree digest of a tensor held whole in memory, that starts at payload offset `begin`. */
export function tensorDigest(backend: CryptoBackend, bytes: Uint8Array, begin: number, chunkSize: number): Uint8Array {
  const d = new TensorDigest(backend);
  let at = 0;
  while (at < bytes.length) {
    const chunkEnd = (Math.floor((begin + at) / chunkSize) + 1) * chunkSize;
    const take = Math.min(bytes.length - at, chunkEnd - (begin + at));
    d.update(bytes.subarray(at, at + take));
    d.endLeaf();
    at += take;
  }
  return d.digest();
}
