/**
 * GET /kbs/v0/resource/<repository>/<type>/<tag>: a data key, to an attested session whose claims
 * the key's policy accepts (the CPU evidence, the devices it requires and every device the session
 * presented), encrypted to the session's tee-pubkey. Refusals: 401 without a live
 * session or valid token, 404 for what is not a known key, 403 for a revoked key, a missing policy
 * or a policy that denies (every failed check named). A release is audited before it is answered,
 * and the answer carries a receipt signed over that audit entry.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { wipe } from '../../bytes.js';
import { SealedTensorsError } from '../../errors.js';
import { evaluateDevices, evaluatePolicy } from '../../attestation/policy/evaluate.js';
import { DATA_KEY_REPOSITORY, DATA_KEY_TYPE, KBS_PATH_PREFIX, parseResourcePath, SESSION_COOKIE, type FlattenedJwe } from '../../protocol/messages.js';
import { encodeDataKeyResource } from '../../protocol/resource.js';
import { calculateJwkThumbprint } from 'jose';
import { cookieValues, HttpProblem, sendJson } from '../http.js';
import { RECEIPT_HEADER, recordRelease } from '../receipt.js';
import { verifyToken, type TokenSession } from '../tokens.js';
import { encryptToTeePubkey } from '../wrap.js';
import type { BrokerState, RequestContext } from './context.js';
import { claimsSummary } from './attest.js';

export const RESOURCE_PREFIX = `${KBS_PATH_PREFIX}/resource/`;

const unauthorized = (reason: string): HttpProblem =>
  new HttpProblem(401, 'ERR_DENIED', 'no attested session: attest first, then send its cookie or token', { reasons: [reason], headers: { 'www-authenticate': 'Bearer' } });
const forbidden = (reasons: string[]): HttpProblem => new HttpProblem(403, 'ERR_DENIED', 'the release was denied', { reasons });
const notFound = (detail: string): HttpProblem => new HttpProblem(404, 'ERR_NOT_FOUND', detail, { reasons: [`resource: ${detail}`] });

/** The session this request speaks for: a bearer token if one is sent (and then only it), else the cookie. */
async function authenticate(state: BrokerState, req: IncomingMessage, nowMs: number): Promise<TokenSession & { thumbprint?: string; sessionRef?: string }> {
  const authz = req.headers.authorization;
  if (authz !== undefined) {
    const m = /^Bearer ([^\s]+)$/i.exec(authz.trim());
    if (!m) throw unauthorized('token: the Authorization header must be "Bearer <token>"');
    return verifyToken(state.signer, state.opts.issuer, m[1]!, nowMs);
  }
  const ids = cookieValues(req, SESSION_COOKIE);
  if (ids.length === 0) throw unauthorized(`session: neither a ${SESSION_COOKIE} cookie nor a bearer token`);
  if (ids.length > 1) throw unauthorized(`session: ${ids.length} ${SESSION_COOKIE} cookies sent; send exactly one`);
  const s = state.sessions.get(ids[0]!, nowMs);
  if (s === undefined) throw unauthorized('session: no attested session for this cookie (unknown, not attested, or expired)');
  return { ...s, thumbprint: s.teePubkeyThumbprint, sessionRef: s.sessionRef };
}

export async function handleResource(state: BrokerState, req: IncomingMessage, res: ServerResponse, ctx: RequestContext, path: string): Promise<void> {
  const nowMs = state.opts.nowMs();
  const session = await authenticate(state, req, nowMs);
  const thumbprint = session.thumbprint ?? (await calculateJwkThumbprint(session.teePubkey, 'sha256'));
  ctx.audit.tee = session.tee;
  ctx.audit.teePubkeyThumbprint = thumbprint;
  ctx.audit.evidenceDigest = session.evidenceDigest;
  ctx.audit.evidenceSummary = claimsSummary(session.claims);
  if (session.sessionRef !== undefined) ctx.audit.detail = { ...ctx.audit.detail, session: session.sessionRef };

  let rp;
  try {
    rp = parseResourcePath(path.slice(RESOURCE_PREFIX.length));
  } catch (err) {
    throw new HttpProblem(400, 'ERR_PROTOCOL', (err as Error).message, { reasons: [(err as Error).message], cause: err });
  }
  ctx.audit.detail = { ...ctx.audit.detail, resource: `${rp.repository}/${rp.type}/${rp.tag}` };
  if (rp.repository !== DATA_KEY_REPOSITORY || rp.type !== DATA_KEY_TYPE) {
    throw notFound(`this broker serves only ${DATA_KEY_REPOSITORY}/${DATA_KEY_TYPE}/<key id>`);
  }
  const keyId = rp.tag;
  ctx.audit.keyIds = [keyId];
  const record = await state.opts.keystore.get(keyId);
  if (record === undefined) throw notFound(`no key "${keyId}"`);
  ctx.audit.models = record.models;
  if (record.state !== 'active') {
    throw forbidden([`key.revoked: key "${keyId}" was revoked${record.revokedAt ? ` at ${record.revokedAt}` : ''}${record.revocationReason ? `: ${record.revocationReason}` : ''}; it is never released again`]);
  }
  // A release names the models it may open; with none, no session could use the key, and sending it anyway would put a key on the wire for nothing.
  if (record.models.length === 0) throw forbidden([`key.models: key "${keyId}" is bound to no sealed model (broker key bind); denied by default`]);
  const policy = await state.opts.policies.get(record.policy);
  if (policy === undefined) throw forbidden([`policy.missing: key "${keyId}" names policy "${record.policy}", which does not exist; denied by default`]);

  const reasons: string[] = [];
  if ((session.claims.simulated || session.claims.tee === 'simulated') && !state.opts.allowSimulated) {
    reasons.push('broker.simulated: evidence is SIMULATED and this broker does not allow simulated evidence');
  }
  const devices = session.devices ?? [];
  // A token outlives a broker restart: one issued while simulated evidence was allowed is judged by today's setting.
  if (!state.opts.allowSimulated) for (const d of devices.filter((x) => x.claims.simulated)) reasons.push(`broker.${d.label}.simulated: ${d.label} is SIMULATED and this broker does not allow simulated evidence`);
  if (devices.length > 0) ctx.audit.detail = { ...ctx.audit.detail, devices: devices.map((d) => ({ device: d.label, uuid: d.uuid, evidenceDigest: d.evidenceDigest })) };
  let verdict;
  let deviceVerdict;
  try {
    verdict = evaluatePolicy(policy, session.claims, { expectedReportData: session.binding, now: new Date(nowMs) });
    deviceVerdict = evaluateDevices(policy, session.claims.tee, devices.map((d) => ({ label: d.label, claims: d.claims, expectedReportData: d.binding })), { now: new Date(nowMs) });
  } catch (err) {
    // A policy store handing out an invalid policy denies; it never releases.
    if (err instanceof SealedTensorsError && err.code === 'ERR_POLICY') throw forbidden([`policy.invalid: policy "${record.policy}" is not valid: ${err.message}`]);
    throw err;
  }
  reasons.push(...verdict.reasons, ...deviceVerdict.reasons);
  ctx.audit.detail = { ...ctx.audit.detail, policy: record.policy, checks: [...verdict.checks, ...deviceVerdict.checks] };
  if (reasons.length > 0) throw forbidden(reasons);

  const notAfter = new Date(session.expiresAt).toISOString();
  let jwe: FlattenedJwe;
  try {
    jwe = await state.opts.keystore.withDataKey(keyId, async (key) => {
      const plaintext = encodeDataKeyResource(key, { v: 1, keyId, models: record.models, notAfter });
      try {
        return await encryptToTeePubkey(session.teePubkey, plaintext);
      } finally {
        wipe(plaintext);
      }
    });
  } catch (err) {
    // Revoked or removed between the lookup and the release? Ask the keystore again rather than
    // trust one backend's error codes; anything else is the broker's failure (500, nothing sent).
    const now = await state.opts.keystore.get(keyId).catch(() => undefined);
    if (now === undefined && err instanceof SealedTensorsError && err.code === 'ERR_NOT_FOUND') throw notFound(`no key "${keyId}"`);
    if (now !== undefined && now.state !== 'active') throw forbidden([`key.revoked: key "${keyId}" was revoked while it was being released${now.revocationReason ? `: ${now.revocationReason}` : ''}; it is never released again`]);
    throw err;
  }

  const recorded = await recordRelease(
    state.opts.audit,
    state.signer,
    { keyId, models: record.models, teePubkey: thumbprint, evidenceDigest: session.evidenceDigest, verdict: { allowed: true, reasons: [] }, tee: session.tee, notAfter },
    { ...ctx.audit, detail: { ...ctx.audit.detail, notAfter } },
    nowMs,
  );
  sendJson(res, 200, jwe, { [RECEIPT_HEADER]: recorded.receipt });
}
