/**
 * The attestation token /attest answers with (an EAR-style JWT, ES256, as Trustee issues it) and
 * its check when a client presents it as `Authorization: Bearer`. A token is what our own key
 * signed after the evidence verified and bound this tee-pubkey: the claims inside are trusted
 * because the signature is ours, nothing else.
 */
import { randomUUID } from 'node:crypto';
import { jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { Claims, TeeType } from '../attestation/types.js';
import { DEVICE_NONCE_BYTES, REPORT_DATA_BYTES } from '../protocol/binding.js';
import { DEVICE_LIMITS } from '../protocol/device-evidence.js';
import { parsePublicJwk, type PublicJwk } from '../protocol/jwk.js';
import { MAX_TOKEN_CHARS } from '../protocol/messages.js';
import { DEVICE_SUBMOD, deviceSubmodName, EAR_PROFILE, teePubkeyOfToken, type EarSubmod, type EarToken } from '../protocol/token.js';
import type { AttestedDevice } from './devices.js';
import { HttpProblem } from './http.js';
import { tokenAudience } from './options.js';
import { SIGNING_ALG, type Signer } from './signer.js';
import type { AttestedSession } from './sessions.js';

export const VERIFIER_ID = Object.freeze({ developer: 'https://sealed-tensors.dev', build: 'sealed-tensors-broker' });

/**
 * EAR status of verified evidence: `affirming` only for hardware evidence not in debug mode;
 * debug (or debug state unknown) or simulated evidence verified but vouches for less: `warning`.
 */
export function earStatusOf(claims: Claims): 'affirming' | 'warning' {
  return claims.simulated === false && claims.debug === false ? 'affirming' : 'warning';
}

/**
 * Bytes of report data the token's claims hold once bound, per kind of evidence: the binding itself
 * (evidence-binding.ts). Azure's vTPM quote nonce is the 48-byte SHA-384 digest, not padded.
 */
const BOUND_REPORT_DATA_BYTES: Readonly<Partial<Record<TeeType, number>>> = { 'azure-snp': 48 };
/** Devices carry the 32-byte SPDM requester nonce (kbsDeviceNonce). */
const DEVICE_TEES: readonly TeeType[] = ['nvidia'];

function deviceSubmod(d: AttestedDevice, nonce: string, teePubkeyRaw: object): EarSubmod {
  return {
    'ear.status': earStatusOf(d.claims),
    'ear.veraison.annotated-evidence': {
      tee: d.tee,
      claims: d.claims as unknown as Record<string, unknown>,
      runtime_data_claims: { nonce, 'tee-pubkey': teePubkeyRaw },
      evidence_digest: d.evidenceDigest,
      device: { label: d.label, uuid: d.uuid },
    },
  };
}

export async function issueToken(signer: Signer, issuer: string, s: AttestedSession, nonce: string, nowMs: number, audience = tokenAudience(issuer)): Promise<string> {
  const iat = Math.floor(nowMs / 1000);
  // Every device that verified and binds this session, so a Bearer request is judged as the cookie is.
  const devices = Object.fromEntries((s.devices ?? []).map((d, i) => [deviceSubmodName(i), deviceSubmod(d, nonce, s.teePubkeyRaw)]));
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
      ...devices,
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
  /** The devices the token's `gpu<i>` submods name (absent: none attested). */
  devices?: AttestedDevice[];
}

function hexOf(v: unknown, bytes: number, what: string): Uint8Array {
  if (typeof v !== 'string' || v.length !== bytes * 2 || !/^[0-9a-f]*$/.test(v)) throw new Error(`${what} is not ${bytes} bytes of hex`);
  return new Uint8Array(Buffer.from(v, 'hex'));
}

/** The device submods (gpu0, gpu1, ... in order), as /attest verified and bound them. */
function devicesOf(submods: Record<string, EarSubmod>): AttestedDevice[] | undefined {
  const names = Object.keys(submods).filter((k) => k !== 'cpu0');
  if (names.length === 0) return undefined;
  if (names.length > DEVICE_LIMITS.devices) throw new Error('too many device submods');
  return names.map((name, i) => {
    if (!DEVICE_SUBMOD.test(name) || name !== deviceSubmodName(i)) throw new Error(`submod ${name} is not gpu${i}`);
    const sub = submods[name]!;
    const ae = sub['ear.veraison.annotated-evidence'];
    if ((sub['ear.status'] !== 'affirming' && sub['ear.status'] !== 'warning') || typeof ae !== 'object' || ae === null) throw new Error(`${name}: no affirming or warning status`);
    const claims = ae.claims as unknown as Claims;
    if (typeof claims !== 'object' || claims === null || !DEVICE_TEES.includes(claims.tee) || ae.tee !== claims.tee) throw new Error(`${name}: not device claims`);
    const device = ae.device;
    if (typeof device !== 'object' || device === null || typeof device.label !== 'string' || typeof device.uuid !== 'string') throw new Error(`${name}: no device label`);
    return {
      label: device.label,
      tee: claims.tee,
      uuid: device.uuid,
      claims,
      // Signed only after the device's requester nonce matched kbsDeviceNonce: it is the binding.
      binding: hexOf(claims.reportData, DEVICE_NONCE_BYTES, `${name} report data`),
      evidenceDigest: String(ae.evidence_digest),
    } satisfies AttestedDevice;
  });
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
    if (typeof claims !== 'object' || claims === null || typeof claims.tee !== 'string') throw new Error('no claims');
    // The token was signed only after the evidence's report data matched the binding: it is the binding.
    const binding = hexOf(claims.reportData, BOUND_REPORT_DATA_BYTES[claims.tee] ?? REPORT_DATA_BYTES, 'report data');
    const teePubkey = parsePublicJwk(teePubkeyOfToken(payload));
    const devices = devicesOf((payload as unknown as EarToken).submods);
    return {
      tee: String(ae.tee),
      claims,
      teePubkey,
      binding,
      evidenceDigest: String(ae.evidence_digest),
      expiresAt: (payload.exp as number) * 1000,
      ...(devices !== undefined ? { devices } : {}),
    };
  } catch (cause) {
    throw unauthorized('not a token this broker issues (shape)', cause);
  }
}
