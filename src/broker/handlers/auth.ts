/**
 * POST /kbs/v0/auth: a fresh challenge (32-byte nonce) and the session cookie that names it.
 * Refused (429 with Retry-After) only when the pending-challenge cap is full and this address holds
 * the most of it (challenges.ts; docs/PROTOCOL.md).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { KBS_TEES } from '../../protocol/evidence.js';
import { parseAuthRequest } from '../../protocol/messages.js';
import { HttpProblem, readJsonBody, sendJson } from '../http.js';
import { sessionCookie, type BrokerState, type RequestContext } from './context.js';

export async function handleAuth(state: BrokerState, req: IncomingMessage, res: ServerResponse, ctx: RequestContext): Promise<void> {
  const body = await readJsonBody(req, state.opts.maxRequestBytes);
  let request;
  try {
    request = parseAuthRequest(body);
  } catch (err) {
    throw new HttpProblem(400, 'ERR_PROTOCOL', (err as Error).message, { reasons: [(err as Error).message], cause: err });
  }
  ctx.audit.tee = request.tee;
  // Refused here, before a challenge slot is spent on evidence this broker cannot read.
  if (!(KBS_TEES as readonly string[]).includes(request.tee)) {
    const why = `tee "${request.tee}" is not supported; supported: ${KBS_TEES.join(', ')}`;
    throw new HttpProblem(400, 'ERR_PROTOCOL', why, { reasons: [why] });
  }
  const issued = state.challenges.issue(request.tee, state.opts.nowMs(), ctx.client.ip);
  if (issued === undefined) {
    const why = `${state.challenges.max} challenges are pending, the most this broker keeps, and this address holds the most of them; retry after ${state.opts.challengeTtlSeconds} s`;
    throw new HttpProblem(429, 'ERR_RESOURCE_LIMIT', why, { reasons: [`challenges: ${why}`], headers: { 'retry-after': String(state.opts.challengeTtlSeconds) } });
  }
  sendJson(res, 200, { nonce: issued.challenge.nonce, 'extra-params': '' }, { 'set-cookie': sessionCookie(state, issued.sessionId, state.opts.challengeTtlSeconds) });
}
