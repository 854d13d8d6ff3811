/**
 * The attestation token a broker returns from /attest: an EAR-style (Entity Attestation Result)
 * JWT, ES256, as Trustee issues it. The session reads its tee-pubkey at the same path Trustee uses,
 * so a token bound to another session's key is refused. Shapes only; signing and verifying live at
 * each end (jose).
 */
import { ProtocolError } from '../errors.js';

export const EAR_PROFILE = 'tag:github.com,2023:veraison/ear';
export const TOKEN_ALG = 'ES256';
/** Where Trustee (kbs/src/token) reads the session key from an EAR token. */
export const TEE_PUBKEY_CLAIM_PATH = ['submods', 'cpu0', 'ear.veraison.annotated-evidence', 'runtime_data_claims', 'tee-pubkey'] as const;

/** Prefix of a sealed-tensors broker's default `iss`: "sealed-tensors-broker:<RFC 7638 thumbprint of its token key>". */
export const DEFAULT_ISSUER_PREFIX = 'sealed-tensors-broker';

/** The default `iss` of a broker whose token key has this RFC 7638 SHA-256 thumbprint. */
export function defaultIssuer(tokenKeyThumbprint: string): string {
  return `${DEFAULT_ISSUER_PREFIX}:${tokenKeyThumbprint}`;
}

/** The `aud` of a broker's tokens: its own resource endpoint, named by its issuer. */
export function tokenAudience(issuer: string): string {
  return `${issuer}#kbs-resource`;
}

/** The response header carrying the broker's signed receipt for a release (a compact JWS; our extension, Trustee sends none). */
export const RECEIPT_HEADER = 'sealed-tensors-receipt';
/** The `typ` of a receipt's protected header. */
export const RECEIPT_TYP = 'sealed-tensors-receipt+jws';
/** A receipt lists a key's models; thousands of them still fit. */
export const MAX_RECEIPT_LENGTH = 192 * 1024;

export type EarStatus = 'affirming' | 'warning' | 'contraindicated' | 'none';

export interface EarSubmod {
  'ear.status': EarStatus;
  'ear.veraison.annotated-evidence': {
    tee: string;
    /** Our claims (src/attestation/types.ts Claims), as verified. */
    claims: Record<string, unknown>;
    runtime_data_claims: { nonce: string; 'tee-pubkey': object };
    /** SHA-256 of the evidence as received, hex. */
    evidence_digest: string;
    /** Device submods only (`gpu0`, ...): which additional evidence it was (`nvidia[0]`) and the device's id. */
    device?: { label: string; uuid: string };
  };
}

/**
 * Device submods are named as Trustee's attestation service names them: the device class and its
 * count, `gpu0`, `gpu1`, ... in the order the devices were attested.
 */
export const DEVICE_SUBMOD = /^gpu(?:0|[1-9][0-9]?)$/;
export function deviceSubmodName(index: number): string {
  return `gpu${index}`;
}

export interface EarToken {
  iss: string;
  /** The broker's own resource endpoint (tokenAudience below). */
  aud?: string;
  iat: number;
  exp: number;
  jti: string;
  eat_profile: typeof EAR_PROFILE;
  'ear.verifier-id': { developer: string; build: string };
  submods: { cpu0: EarSubmod } & Record<string, EarSubmod>;
}

/** The tee-pubkey a token names, or a ProtocolError. */
export function teePubkeyOfToken(payload: unknown): object {
  let at: unknown = payload;
  for (const key of TEE_PUBKEY_CLAIM_PATH) {
    if (typeof at !== 'object' || at === null) throw new ProtocolError(`the token lacks ${TEE_PUBKEY_CLAIM_PATH.join('.')}`);
    at = (at as Record<string, unknown>)[key];
  }
  if (typeof at !== 'object' || at === null || Array.isArray(at)) throw new ProtocolError(`the token lacks ${TEE_PUBKEY_CLAIM_PATH.join('.')}`);
  return at;
}
