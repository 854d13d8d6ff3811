/**
 * The receipt a release is answered with: a compact JWS (ES256, our kid) over what went where,
 * pointing at the audit entry that recorded it (sequence number and line hash), so an auditor with
 * the broker's public key and the log checks each release offline. Signed only after the entry is
 * appended: a receipt always names an entry that exists.
 *
 * NOTE for the merge: the contract gives broker-store's audit.ts a `signReceipt(claims)`; until that
 * lands, this is the broker's signer. The payload below is what both should agree on.
 */
import { CompactSign } from 'jose';
import type { ModelBinding } from '../protocol/resource.js';
import { SIGNING_ALG, type Signer } from './signer.js';

export const RECEIPT_HEADER = 'sealed-tensors-receipt';
export const RECEIPT_TYP = 'sealed-tensors-receipt+jws';

export interface ReceiptClaims {
  /** Receipt id (UUID), also in the audit entry's detail. */
  rid: string;
  audit: { seq: number; hash: string };
  keyId: string;
  models: ModelBinding[];
  tee: string;
  teePubkeyThumbprint: string;
  evidenceDigest: string;
  verdict: 'allow';
  /** Seconds since the epoch. */
  iat: number;
}

export async function signReceipt(signer: Signer, claims: ReceiptClaims): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: SIGNING_ALG, kid: signer.kid, typ: RECEIPT_TYP })
    .sign(signer.privateKey);
}
