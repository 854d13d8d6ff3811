/**
 * A small HTTP(S) client for the broker tests (node:http/https, so a test CA can be passed and
 * raw bodies and headers sent exactly as written).
 */
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: unknown;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  ca?: string;
  /** false: a fresh connection for this request alone. */
  agent?: HttpAgent | HttpsAgent | false;
  localAddress?: string;
}

export function send(url: string, opts: SendOptions = {}): Promise<Reply> {
  const u = new URL(url);
  const isHttps = u.protocol === 'https:';
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (body !== undefined && headers['content-length'] === undefined) headers['content-length'] = String(body.length);
  return new Promise((resolve, reject) => {
    const req = (isHttps ? httpsRequest : httpRequest)(
      u,
      { method: opts.method ?? (body !== undefined ? 'POST' : 'GET'), headers, ...(opts.ca ? { ca: opts.ca } : {}), ...(opts.agent !== undefined ? { agent: opts.agent } : {}), ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

/** The kbs-session-id value from a Set-Cookie answer. */
export function sessionCookieOf(reply: Reply): string {
  const sc = reply.headers['set-cookie'];
  const line = (Array.isArray(sc) ? sc : [sc ?? '']).find((l) => l.startsWith('kbs-session-id='));
  if (!line) throw new Error(`no kbs-session-id cookie in ${JSON.stringify(sc)}`);
  return line.slice('kbs-session-id='.length).split(';')[0]!;
}

export const json = (value: unknown): { headers: Record<string, string>; body: string } => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) });

/** POST /kbs/v0/auth for the simulated TEE on a connection of its own (optionally from `localAddress`). */
export function authOnce(target: { url: string; ca?: string }, localAddress?: string): Promise<Reply> {
  const j = json({ version: '0.4.0', tee: 'simulated', 'extra-params': '' });
  return send(`${target.url}/kbs/v0/auth`, { method: 'POST', headers: j.headers, body: j.body, agent: false, ...(target.ca ? { ca: target.ca } : {}), ...(localAddress ? { localAddress } : {}) });
}

/** The server's open connections right now. */
export function openConnections(server: { getConnections(cb: (err: Error | null, n: number) => void): void }): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}
