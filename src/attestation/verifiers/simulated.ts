import { nodeCrypto } from '../../crypto-builtin.js';
import { EvidenceChainError, EvidenceFormatError, EvidenceSignatureError } from '../../errors.js';
import { ByteReader, hex } from '../bin.js';
import { rootSet } from '../roots.js';
import type { Check, Claims, VerifiedEvidence, VerifyOptions } from '../types.js';

/**
 * Simulated evidence: software only, for development and tests. Layout (little-endian),
 * documented in docs/ATTESTATION.md:
 *
 *   0    8  magic "STSIMEV1"
 *   8    2  version = 1
 *   10   2  flags: bit 0 = debug
 *   12   4  reserved, zero
 *   16   8  timestamp, ms since the epoch
 *   24  48  measurement
 *   72  64  report data
 *   136  2  n = length of the root public key
 *   138  n  root public key, Ed25519 SubjectPublicKeyInfo DER
 *   138+n 64 Ed25519 signature over bytes 0 .. 138+n
 *
 * The verifier trusts a root only by the SHA-256 of its SPKI given by the caller; there is no default.
 */
export const SIMULATED_MAGIC = 'STSIMEV1';
export const SIMULATED_VERSION = 1;

export interface SimulatedEvidence {
  version: number;
  debug: boolean;
  timestamp: number;
  measurement: Uint8Array;
  reportData: Uint8Array;
  rootPublicKey: Uint8Array;
  /** SHA-256 of the root SPKI, hex: what a verifier pins. */
  rootFingerprint: string;
  signature: Uint8Array;
  signed: Uint8Array;
}

export function parseSimulatedEvidence(bytes: Uint8Array): SimulatedEvidence {
  if (!(bytes instanceof Uint8Array)) throw new EvidenceFormatError('simulated evidence must be a Uint8Array');
  const r = new ByteReader(bytes, 'simulated evidence');
  const magic = Buffer.from(r.bytesOf(8, 'magic')).toString('latin1');
  if (magic !== SIMULATED_MAGIC) throw new EvidenceFormatError(`simulated evidence must start with "${SIMULATED_MAGIC}"; this is not simulated evidence`);
  const version = r.u16('version');
  if (version !== SIMULATED_VERSION) throw new EvidenceFormatError(`simulated evidence version ${version} is not supported (1 is)`);
  const flags = r.u16('flags');
  if (flags & ~1) throw new EvidenceFormatError(`simulated evidence has unknown flags 0x${flags.toString(16)}`);
  if (r.u32('reserved') !== 0) throw new EvidenceFormatError('simulated evidence reserved field must be zero');
  const ts = r.u64('timestamp');
  // 8.64e15 ms is the last instant a Date can hold; beyond it claims could not state the time.
  if (ts > 8_640_000_000_000_000n) throw new EvidenceFormatError('simulated evidence timestamp is out of range (after year 275760)');
  const measurement = r.bytesOf(48, 'measurement');
  const reportData = r.bytesOf(64, 'report data');
  const n = r.u16('root key length');
  if (n === 0 || n > 256) throw new EvidenceFormatError(`simulated evidence root key length ${n} is not 1..256`);
  const rootPublicKey = r.bytesOf(n, 'root public key');
  const signed = bytes.slice(0, r.offset);
  const signature = r.bytesOf(64, 'signature');
  if (r.remaining !== 0) throw new EvidenceFormatError(`simulated evidence has ${r.remaining} trailing bytes`);
  return {
    version,
    debug: (flags & 1) === 1,
    timestamp: Number(ts),
    measurement,
    reportData,
    rootPublicKey,
    rootFingerprint: nodeCrypto().createHash('sha256').update(rootPublicKey).digest('hex'),
    signature,
    signed,
  };
}

export function verifySimulatedEvidence(bytes: Uint8Array, opts: VerifyOptions = {}): VerifiedEvidence<SimulatedEvidence> {
  const ev = parseSimulatedEvidence(bytes);
  const checks: Check[] = [];
  let key;
  try {
    key = nodeCrypto().createPublicKey({ key: Buffer.from(ev.rootPublicKey), format: 'der', type: 'spki' });
  } catch (err) {
    throw new EvidenceFormatError('simulated evidence root public key is not an SPKI DER key', { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new EvidenceFormatError('simulated evidence root key must be Ed25519');
  if (!nodeCrypto().verify(null, ev.signed, key, ev.signature)) {
    throw new EvidenceSignatureError('simulated evidence signature does not verify with its root key: the evidence was modified');
  }
  checks.push({ check: 'simulated.signature', ok: true, detail: 'Ed25519 signature by the simulated root key (SIMULATED, not hardware)' });
  const trusted = rootSet(opts.trustedRoots ?? []);
  if (!trusted.has(ev.rootFingerprint)) {
    throw new EvidenceChainError(
      `simulated evidence is signed by root key ${ev.rootFingerprint}, which is not trusted; pass that fingerprint as a trusted simulated root (CLI: --simulated-root) if you created it`,
    );
  }
  checks.push({ check: 'simulated.root', ok: true, detail: `simulated root ${ev.rootFingerprint} trusted by the caller` });
  return { tee: 'simulated', claims: simulatedClaims(ev), raw: ev, checks };
}

export function simulatedClaims(ev: SimulatedEvidence): Claims {
  return {
    tee: 'simulated',
    simulated: true,
    measurement: hex(ev.measurement),
    measurements: { measurement: hex(ev.measurement) },
    reportData: hex(ev.reportData),
    debug: ev.debug,
    tcb: {},
    platform: { simulated: 'true', rootFingerprint: ev.rootFingerprint },
    issuedAt: new Date(ev.timestamp).toISOString(),
  };
}
