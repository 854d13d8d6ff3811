// nginx (Debian's nginx-light or nginx) as a test fixture: a static file server with range requests,
// started in the foreground with everything (config, pid, logs, temp paths) in a temp folder, on a
// free loopback port, logging for every request the Range asked for and the bytes it sent.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';

/** The nginx binary, or null (the tests that need it skip, saying so). */
export function nginxBinary(): string | null {
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) {
    if (existsSync(candidate)) return candidate;
  }
  const r = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() !== '' ? r.stdout.trim() : null;
}

export interface LogEntry {
  uri: string;
  status: number;
  /** Bytes of the body sent ($body_bytes_sent). */
  body: number;
  /** Bytes sent in all, headers included ($bytes_sent). */
  sent: number;
  /** The request's Range header, or '' without one. */
  range: string;
}

export interface Nginx {
  /** http(s)://127.0.0.1:PORT/ */
  url: string;
  /** The access log's entries so far, in the order nginx wrote them. */
  log(): LogEntry[];
  /** Waits (without a time limit of its own: the test's applies) until the log holds `n` entries. */
  waitForLog(n: number): Promise<LogEntry[]>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The group the nginx workers run as when the tests run as root: Debian's nogroup, else nobody. */
function workerGroup(): string {
  const groups = readFileSync('/etc/group', 'utf8');
  return /^nogroup:/m.test(groups) ? 'nogroup' : 'nobody';
}

/**
 * Serves `root` (made world-readable here: it holds sealed files only, which are ciphertext) with
 * nginx; its config, pid, logs and temp paths live in `state`. As root, the workers run as nobody:
 * they reach `root` through the tests' temp root (mode 0711) and read it (0755/0644); as another
 * user the `user` directive is ignored and the workers run as that user.
 */
export async function startNginx(binary: string, root: string, state: string, tls?: { certPem: string; keyPem: string }): Promise<Nginx> {
  chmodSync(root, 0o755);
  for (const f of readdirRecursive(root)) chmodSync(f.path, f.dir ? 0o755 : 0o644);
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const conf = join(state, 'nginx.conf');
    const logPath = join(state, 'access.log');
    for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(state, d), { recursive: true });
    const asRoot = process.getuid?.() === 0;
    if (tls) {
      writeFileSync(join(state, 'server.pem'), tls.certPem);
      writeFileSync(join(state, 'server.key'), tls.keyPem, { mode: 0o600 }); // read by the master before it drops privileges
    }
    const ssl = tls ? ` ssl;\n    ssl_certificate ${join(state, 'server.pem')};\n    ssl_certificate_key ${join(state, 'server.key')}` : '';
    writeFileSync(
      conf,
      `${asRoot ? `user nobody ${workerGroup()};\n` : ''}daemon off;
master_process on;
worker_processes 1;
pid ${join(state, 'nginx.pid')};
error_log ${join(state, 'error.log')} warn;
events { worker_connections 64; }
http {
  default_type application/octet-stream;
  log_format ranges '$request_uri|$status|$body_bytes_sent|$bytes_sent|$http_range';
  access_log ${logPath} ranges;
  client_body_temp_path ${join(state, 'client_body')};
  proxy_temp_path ${join(state, 'proxy')};
  fastcgi_temp_path ${join(state, 'fastcgi')};
  uwsgi_temp_path ${join(state, 'uwsgi')};
  scgi_temp_path ${join(state, 'scgi')};
  sendfile on;
  keepalive_timeout 30s;
  server {
    listen 127.0.0.1:${port}${ssl};
    root ${root};
    location / { }
  }
}
`,
    );
    const child = spawn(binary, ['-p', state, '-e', join(state, 'error.log'), '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const up = await waitUntilListening(port, exited);
    if (up) return fixture(child, exited, port, logPath, tls ? 'https' : 'http');
    const errors = existsSync(join(state, 'error.log')) ? readFileSync(join(state, 'error.log'), 'utf8') : '';
    if (attempt < 2 && /Address already in use/.test(errors + stderr)) continue; // the free port was taken meanwhile
    throw new Error(`nginx did not start: ${stderr}${errors}`);
  }
}

function fixture(child: ChildProcess, exited: Promise<number | null>, port: number, logPath: string, scheme: string): Nginx {
  const log = (): LogEntry[] => {
    if (!existsSync(logPath)) return [];
    return readFileSync(logPath, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => {
        const [uri, status, body, sent, range] = l.split('|');
        return { uri: uri!, status: Number(status), body: Number(body), sent: Number(sent), range: range === '-' ? '' : range! };
      });
  };
  return {
    url: `${scheme}://127.0.0.1:${port}/`,
    log,
    async waitForLog(n: number): Promise<LogEntry[]> {
      // nginx writes a request's line once it has sent the answer, which may be just after the client read it.
      for (;;) {
        const entries = log();
        if (entries.length >= n) return entries;
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop(): Promise<void> {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGQUIT'); // graceful: finishes logging
      await exited;
    },
  };
}

/** True once the port accepts connections; false if nginx exited first. */
async function waitUntilListening(port: number, exited: Promise<number | null>): Promise<boolean> {
  let gone = false;
  void exited.then(() => (gone = true));
  while (!gone) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

function readdirRecursive(dir: string): { path: string; dir: boolean }[] {
  const out: { path: string; dir: boolean }[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    out.push({ path, dir: e.isDirectory() });
    if (e.isDirectory()) out.push(...readdirRecursive(path));
  }
  return out;
}
