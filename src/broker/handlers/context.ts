/**
 * What every handler shares: the resolved options and the broker's tables (state), and per request
 * the audit record being filled in as the request goes, so a refusal at any step is logged with
 * everything known by then.
 */
import { SESSION_COOKIE } from '../../protocol/messages.js';
import type { AuditEntryInput } from '../types.js';
import type { CertificateCache } from '../cert-cache.js';
import type { ChallengeTable } from '../challenges.js';
import type { ResolvedOptions } from '../options.js';
import type { SessionTable } from '../sessions.js';
import type { Signer } from '../signer.js';
import type { VerifyPool } from '../verify-pool.js';

export interface BrokerState {
  opts: ResolvedOptions;
  signer: Signer;
  challenges: ChallengeTable;
  sessions: SessionTable;
  /** Certificates sent with evidence, parsed once per distinct DER. */
  certificates: CertificateCache;
  /** Worker threads for primary evidence, when the broker was started with verifyThreads. */
  pool?: VerifyPool;
  /** True on HTTPS: cookies get Secure. */
  secure: boolean;
}

export interface RequestContext {
  client: { ip: string; bucket: string; label: string };
  /** The audit entry this request will produce; handlers add to it as they learn. */
  audit: AuditEntryInput;
}

/** `kbs-session-id` cookie attributes: never sent to other paths or sites, never readable by scripts. */
export function sessionCookie(state: BrokerState, value: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${value}; Path=/kbs; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Strict${state.secure ? '; Secure' : ''}`;
}
