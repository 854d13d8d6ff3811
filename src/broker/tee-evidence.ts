/**
 * STOPGAP until src/protocol/evidence.ts lands (helper "trustee-evidence"): decodes the tee-evidence
 * of an /attest request into our evidence bytes. Same signature as the contract's
 * `decodeTeeEvidence(tee, teeEvidence)`; once the real one is on main, this file becomes
 * `export { decodeTeeEvidence } from '../protocol/evidence.js';`.
 *
 * Only our extension shape is understood here: {"evidence": base64(our bytes)}, for tee
 * "simulated" and, so that real SEV-SNP reports can go through /attest before Trustee's JSON shape
 * is decoded, "snp" (the raw report; its certificates come from the broker's verify options).
 */
import { ProtocolError } from '../errors.js';
import type { TeeType } from '../attestation/types.js';
import { MAX_REQUEST_BYTES } from '../protocol/messages.js';

export interface DecodedEvidence {
  type: TeeType;
  evidence: Uint8Array;
  /** DER certificates that came with the evidence (Trustee's cert_chain). */
  certificates?: Uint8Array[];
}

const EXTENSION_TYPES: Readonly<Record<string, TeeType>> = { simulated: 'simulated', snp: 'snp' };
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function decodeTeeEvidence(tee: string, teeEvidence: unknown): DecodedEvidence {
  const type = Object.hasOwn(EXTENSION_TYPES, tee) ? EXTENSION_TYPES[tee] : undefined;
  if (type === undefined) throw new ProtocolError(`evidence of tee "${tee}" is not supported by this broker (supported: ${Object.keys(EXTENSION_TYPES).join(', ')})`);
  if (typeof teeEvidence !== 'object' || teeEvidence === null || Array.isArray(teeEvidence)) {
    throw new ProtocolError(`tee-evidence for "${tee}" must be a JSON object {"evidence": base64}`);
  }
  const obj = teeEvidence as Record<string, unknown>;
  for (const k of Object.keys(obj)) if (k !== 'evidence') throw new ProtocolError(`tee-evidence for "${tee}" has an unknown member "${k}" (expected evidence)`);
  const b64 = obj['evidence'];
  if (typeof b64 !== 'string' || b64.length === 0 || b64.length > MAX_REQUEST_BYTES || b64.length % 4 !== 0 || !B64.test(b64)) {
    throw new ProtocolError(`tee-evidence.evidence for "${tee}" must be non-empty padded base64`);
  }
  const evidence = new Uint8Array(Buffer.from(b64, 'base64'));
  if (Buffer.from(evidence).toString('base64') !== b64) throw new ProtocolError(`tee-evidence.evidence for "${tee}" is not canonical base64`);
  return { type, evidence };
}
