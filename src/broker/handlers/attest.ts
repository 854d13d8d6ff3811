/**
 * POST /kbs/v0/attest: the session's evidence for its challenge. The challenge is taken out of the
 * table first (single use, whatever follows); the evidence must verify (signature, chain, pinned
 * roots) and carry the binding of this challenge's nonce and this tee-pubkey where its kind carries
 * it (evidence-binding.ts). Additional (device) evidence is verified and bound the same way, device
 * by device (devices.ts). No key policy is evaluated here: that is per key, at /resource. Success
 * makes the cookie an attested session and answers with a token for the same.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { calculateJwkThumbprint } from 'jose';
import { constantTimeEqual } from '../../bytes.js';
import { SealedTensorsError } from '../../errors.js';
import type { Check, Claims, VerifiedEvidence } from '../../attestation/types.js';
import type { VerifyEvidenceOptions } from '../../attestation/verify.js';
import { kbsReportData } from '../../protocol/binding.js';
import { parseAttestRequest, SESSION_COOKIE, type AttestRequest } from '../../protocol/messages.js';
import { cookieValues, HttpProblem, readJsonBody, sendJson } from '../http.js';
import { decodePrimaryEvidence, type DecodedEvidence } from '../../protocol/evidence.js';
import { decodeAdditionalEvidence, type DecodedDeviceEvidence } from '../../protocol/device-evidence.js';
import { EVIDENCE_CODES, verifyDevices } from '../devices.js';
import { checkPrimaryBinding } from '../evidence-binding.js';
import { VerifierUnavailableError } from '../verify-pool.js';
import { issueToken } from '../tokens.js';
import type { AttestedSession } from '../sessions.js';
import { sessionCookie, type BrokerState, type RequestContext } from './context.js';

// The verifiers pull in X.509 and ASN.1 parsing: loaded on the first /attest, not at start.
let verifier: Promise<typeof import('../../attestation/verify.js')> | undefined;
function loadVerifier(): Promise<typeof import('../../attestation/verify.js')> {
  return (verifier ??= import('../../attestation/verify.js'));
}

function denied(status: 401 | 403, reasons: string[], detail?: string): HttpProblem {
  return new HttpProblem(status, 'ERR_DENIED', detail ?? (status === 401 ? 'no valid challenge for this session' : 'the evidence was not accepted'), { reasons });
}

/** The one pending challenge this request's cookie names, taken out of the table. */
function takeChallenge(state: BrokerState, req: IncomingMessage, ctx: RequestContext) {
  const ids = cookieValues(req, SESSION_COOKIE);
  if (ids.length === 0) throw denied(401, [`session: no ${SESSION_COOKIE} cookie (request /auth first)`]);
  if (ids.length > 1) throw denied(401, [`session: ${ids.length} ${SESSION_COOKIE} cookies sent; send exactly one`]);
  const taken = state.challenges.take(ids[0]!, state.opts.nowMs());
  if (!taken.ok) throw denied(401, [`session: ${taken.reason}`]);
  ctx.audit.tee = taken.challenge.tee;
  ctx.audit.detail = { ...ctx.audit.detail, session: taken.challenge.sessionRef };
  return { sessionId: ids[0]!, challenge: taken.challenge };
}

/** Short, secret-free summary of the claims for the audit log. */
export function claimsSummary(c: Claims): Record<string, unknown> {
  return {
    tee: c.tee,
    simulated: c.simulated,
    measurement: c.measurement,
    debug: c.debug,
    tcb: c.tcb,
    ...(c.vmpl !== undefined ? { vmpl: c.vmpl } : {}),
    platform: c.platform,
    ...(c.issuedAt !== undefined ? { issuedAt: c.issuedAt } : {}),
  };
}

function verifyOptionsFor(state: BrokerState, decoded: DecodedEvidence, nowMs: number): VerifyEvidenceOptions {
  const v = state.opts.verifyOptions;
  const certificates: X509Certificate[] = [...(v.certificates ?? [])];
  for (const [i, der] of (decoded.certificates ?? []).entries()) {
    try {
      certificates.push(state.certificates.get(der));
    } catch (cause) {
      throw new HttpProblem(403, 'ERR_DENIED', 'the evidence was not accepted', { reasons: [`ERR_EVIDENCE_FORMAT: certificate ${i} sent with the evidence is not X.509 DER`], cause });
    }
  }
  const roots: readonly string[] | undefined = decoded.type === 'simulated' ? [...state.opts.simulatedRoots, ...(v.trustedRoots?.simulated ?? [])] : v.trustedRoots?.[decoded.type];
  return {
    now: new Date(nowMs),
    certificates,
    ...(roots !== undefined ? { trustedRoots: roots } : {}),
    ...(v.crls !== undefined ? { crls: v.crls } : {}),
    ...(v.collateral !== undefined ? { collateral: v.collateral } : {}),
  };
}

export async function handleAttest(state: BrokerState, req: IncomingMessage, res: ServerResponse, ctx: RequestContext): Promise<void> {
  // The challenge is consumed first, so a request that fails later (even for its body) still used it.
  const { sessionId, challenge } = takeChallenge(state, req, ctx);
  const body = await readJsonBody(req, state.opts.maxRequestBytes);

  let request: AttestRequest;
  try {
    request = parseAttestRequest(body);
  } catch (err) {
    throw new HttpProblem(400, 'ERR_PROTOCOL', (err as Error).message, { reasons: [(err as Error).message], cause: err });
  }
  const { nonce, teePubkey, teePubkeyRaw } = request.runtimeData;
  const thumbprint = await calculateJwkThumbprint(teePubkey, 'sha256');
  ctx.audit.teePubkeyThumbprint = thumbprint;
  // Both are canonical base64 of 32 bytes (parseAttestRequest checked), so the lengths match.
  if (!constantTimeEqual(Buffer.from(nonce, 'latin1'), Buffer.from(challenge.nonce, 'latin1'))) {
    throw denied(401, ['session: runtime-data.nonce is not the nonce of this session\'s challenge']);
  }

  // The binding hashes the request as received: what cannot be hashed is the client's error (400),
  // found before any evidence is verified, never a failure of the broker's after it.
  let binding: Uint8Array;
  try {
    binding = kbsReportData(nonce, teePubkeyRaw, request.additionalEvidence);
  } catch (err) {
    if (!(err instanceof SealedTensorsError)) throw err;
    throw new HttpProblem(400, 'ERR_PROTOCOL', `runtime-data cannot be bound: ${err.message}`, { reasons: [`runtime-data.tee-pubkey: ${err.message}`], cause: err });
  }

  let decoded: DecodedEvidence;
  let deviceEvidence: DecodedDeviceEvidence[];
  try {
    // parseAttestRequest has already taken primary_evidence and additional_evidence apart.
    decoded = decodePrimaryEvidence(challenge.tee, request.primaryEvidence, request.additionalEvidence, 'tee-evidence.primary_evidence');
    deviceEvidence = decodeAdditionalEvidence(decoded.additionalEvidence);
  } catch (err) {
    if (!(err instanceof SealedTensorsError)) throw err;
    throw new HttpProblem(400, 'ERR_PROTOCOL', `the evidence does not decode: ${err.message}`, { reasons: [`${err.code}: ${err.message}`], cause: err });
  }
  const evidenceDigest = createHash('sha256').update(decoded.evidence).digest('hex');
  ctx.audit.evidenceDigest = evidenceDigest;
  ctx.audit.detail = { ...ctx.audit.detail, evidenceType: decoded.type, evidenceForm: decoded.form };

  if (decoded.type === 'simulated' && !state.opts.allowSimulated) {
    throw denied(403, ['broker.simulated: evidence is SIMULATED (software only) and this broker does not allow simulated evidence']);
  }
  if (deviceEvidence.length > 0) {
    ctx.audit.detail = { ...ctx.audit.detail, devices: deviceEvidence.map((d) => ({ device: `${d.tee}[${d.index}]`, uuid: d.uuid, evidenceDigest: createHash('sha256').update(d.evidence).digest('hex') })) };
  }

  const nowMs = state.opts.nowMs();
  const { verifyEvidence } = await loadVerifier();
  let verified: Pick<VerifiedEvidence, 'claims' | 'checks'>;
  try {
    const opts = verifyOptionsFor(state, decoded, nowMs); // also refuses sent certificates that are not X.509
    verified = state.pool
      ? await state.pool.verify({ type: decoded.type, evidence: decoded.evidence, certificates: [...(decoded.certificates ?? [])], nowMs, ...(opts.trustedRoots !== undefined ? { trustedRoots: opts.trustedRoots } : {}) })
      : await verifyEvidence(decoded.type, decoded.evidence, opts);
  } catch (err) {
    if (err instanceof HttpProblem) throw err;
    // No answer from the verifier is never an accept.
    if (err instanceof VerifierUnavailableError) throw denied(403, [`verifier: ${err.message}`]);
    if (err instanceof SealedTensorsError && EVIDENCE_CODES.has(err.code)) throw denied(403, [`${err.code}: ${err.message}`]);
    throw err;
  }
  const claims = verified.claims;
  ctx.audit.evidenceSummary = claimsSummary(claims);

  const checks: Check[] = [...verified.checks];
  const sameType = claims.tee === decoded.type;
  checks.push({ check: 'broker.tee', ok: sameType, detail: sameType ? `evidence is "${claims.tee}" as announced` : `evidence is "${claims.tee}", not the announced "${decoded.type}"` });
  if (claims.simulated) {
    checks.push({ check: 'broker.simulated', ok: state.opts.allowSimulated, detail: state.opts.allowSimulated ? 'simulated evidence allowed by this broker (each key\'s policy must allow it too)' : 'evidence is SIMULATED and this broker does not allow it' });
  }
  const bound = checkPrimaryBinding(decoded, claims, binding);
  checks.push(...bound.checks);

  // Devices are verified whatever the primary evidence's verdict, so a refusal names every failure.
  const devices = await verifyDevices(deviceEvidence, {
    allowSimulated: state.opts.allowSimulated,
    simulatedRoots: state.opts.simulatedRoots,
    nonce,
    teePubkeyRaw,
    now: new Date(nowMs),
    verifyOptions: state.opts.verifyOptions,
    certificate: (der) => state.certificates.get(der),
    verify: verifyEvidence,
  });
  checks.push(...devices.checks);
  if (devices.devices.length > 0) {
    ctx.audit.detail = { ...ctx.audit.detail, deviceSummaries: devices.devices.map((d) => ({ device: d.label, ...claimsSummary(d.claims) })) };
  }
  ctx.audit.detail = { ...ctx.audit.detail, checks };
  const failed = [...devices.errors, ...checks.filter((c) => !c.ok).map((c) => `${c.check}: ${c.detail}`)];
  if (failed.length > 0) throw denied(403, failed);

  const session: AttestedSession = {
    tee: challenge.tee,
    claims,
    teePubkey,
    teePubkeyRaw,
    teePubkeyThumbprint: thumbprint,
    binding: bound.expected,
    evidenceDigest,
    ...(devices.devices.length > 0 ? { devices: devices.devices } : {}),
    expiresAt: nowMs + state.opts.tokenTtlSeconds * 1000,
    sessionRef: challenge.sessionRef,
  };
  const token = await issueToken(state.signer, state.opts.issuer, session, nonce, nowMs);
  await state.opts.audit.append({ ...ctx.audit, verdict: 'allow', reasons: [], detail: { ...ctx.audit.detail, expiresAt: new Date(session.expiresAt).toISOString() } });
  state.sessions.put(sessionId, session, nowMs);
  sendJson(res, 200, { token }, { 'set-cookie': sessionCookie(state, sessionId, state.opts.tokenTtlSeconds) });
}
