/**
 * The attestation token /attest answers with (an EAR-style JWT, ES256, as Trustee issues it) and
 * its check when a client presents it as `Authorization: Bearer`. A token is what our own key
 * signed after the evidence verified and bound this tee-pubkey: the claims inside are trusted
 * because the signature is ours, nothing else.
 */
import { randomUUID } from 'node:crypto';
import { jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { Claims } from '../attestation/types.js';
import { parsePublicJwk, type PublicJwk } from '../protocol/jwk.js';
import { EAR_PROFILE, teePubkeyOfToken, type EarToken } from '../protocol/token.js';
import { HttpProblem } from './http.js';
import { tokenAudience } from './options.js';
import { SIGNING_ALG, type Signer } from './signer.js';
import type { AttestedSession } from './sessions.js';

export const VERIFIER_ID = Object.freeze({ developer: 'https://sealed-tensors.dev', build: 'sealed-tensors-broker' });
const MAX_TOKEN_CHARS = 64 * 1024;

/**
 * EAR status of verified evidence: `affirming` only for hardware evidence not in debug mode;
 * debug (or debug state unknown) or simulated evidence verified but vouches for less: `warning`.
 */
export function earStatusOf(claims: Claims): 'affirming' | 'warning' {
  return claims.simulated === false && claims.debug === false ? 'affirming' : 'warning';
}

export async function issueToken(signer: Signer, issuer: string, s: AttestedSession, nonce: string, nowMs: number, audience = tokenAudience(issuer)): Promise<string> {
  const iat = Math.floor(nowMs / 1000);
  const payload: EarToken = {
    iss: issuer,
    aud: audience,
    iat,
    exp: Math.floor(s.expiresAt / 1000),
    jti: randomUUID(),
    eat_profile: EAR_PROFILE,
    'ear.verifier-id': { ...VERIFIER_ID },
    submods: {
      cpu0: {
        // The evidence verified and binds this key; whether a key may go to it is each key's policy, at /resource.
        'ear.status': earStatusOf(s.claims),
        'ear.veraison.annotated-evidence': {
          tee: s.tee,
          claims: s.claims as unknown as Record<string, unknown>,
          runtime_data_claims: { nonce, 'tee-pubkey': s.teePubkeyRaw },
          evidence_digest: s.evidenceDigest,
        },
      },
    },
  };
  return new SignJWT(payload as unknown as JWTPayload)
    .setProtectedHeader({ alg: SIGNING_ALG, typ: 'JWT', kid: signer.kid, jwk: signer.publicJwk })
    .sign(signer.privateKey);
}

/** What a valid token stands for at /resource. */
export interface TokenSession {
  tee: string;
  claims: Claims;
  teePubkey: PublicJwk;
  binding: Uint8Array;
  evidenceDigest: string;
  expiresAt: number;
}

function unauthorized(detail: string, cause?: unknown): HttpProblem {
  return new HttpProblem(401, 'ERR_DENIED', detail, { reasons: [`token: ${detail}`], headers: { 'www-authenticate': 'Bearer' }, cause });
}

/** Verifies a bearer token: ES256 by our key only, our issuer, for our audience (exactly), not expired, and the shape we issue. */
export async function verifyToken(signer: Signer, issuer: string, token: string, nowMs: number, audience = tokenAudience(issuer)): Promise<TokenSession> {
  if (token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw unauthorized('not a compact JWS');
  let payload: JWTPayload;
  try {
    const r = await jwtVerify(token, signer.publicKey, {
      algorithms: [SIGNING_ALG],
      issuer,
      audience,
      currentDate: new Date(nowMs),
      requiredClaims: ['exp', 'iat', 'jti', 'aud'],
      typ: 'JWT',
    });
    if (r.protectedHeader.kid !== signer.kid) throw new Error(`kid ${JSON.stringify(r.protectedHeader.kid)} is not this broker's`);
    // jose accepts an aud array that merely contains ours; we issue a single audience and take only that.
    if (r.payload.aud !== audience) throw new Error('the audience is not exactly this broker');
    payload = r.payload;
  } catch (cause) {
    const code = (cause as { code?: unknown }).code;
    const why = code === 'ERR_JWT_EXPIRED' ? 'expired (attest again)' : code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' ? 'not signed by this broker' : 'not a valid token of this broker';
    throw unauthorized(why, cause);
  }
  try {
    const sub = (payload as unknown as EarToken).submods?.cpu0;
    const ae = sub?.['ear.veraison.annotated-evidence'];
    const status = sub?.['ear.status'];
    if ((status !== 'affirming' && status !== 'warning') || typeof ae !== 'object' || ae === null) throw new Error('no affirming or warning cpu0 submod');
    const claims = ae.claims as unknown as Claims;
    if (typeof claims !== 'object' || claims === null || typeof claims.reportData !== 'string' || !/^[0-9a-f]{128}$/.test(claims.reportData)) throw new Error('claims without report data');
    const teePubkey = parsePublicJwk(teePubkeyOfToken(payload));
    return {
      tee: String(ae.tee),
      claims,
      teePubkey,
      // The token was signed only after the evidence's report data matched the binding: it is the binding.
      binding: new Uint8Array(Buffer.from(claims.reportData, 'hex')),
      evidenceDigest: String(ae.evidence_digest),
      expiresAt: (payload.exp as number) * 1000,
    };
  } catch (cause) {
    throw unauthorized('not a token this broker issues (shape)', cause);
  }
}
