// Start-up stays cheap: importing the library, `--help`, `inspect` and `verify` do not load the
// attestation verifiers' X.509/ASN.1 code (@peculiar/x509, reflect-metadata), the @noble
// cross-check backend or the Nitro CBOR codec. Observed in a fresh process through a module
// resolve hook (ES modules) and the require cache (CommonJS), not by timing.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { nativeStatus } from '../../src/native/addon.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const hasBuild = existsSync(join(ROOT, 'dist/index.js')) && existsSync(join(ROOT, 'dist/cli/main.js'));
if (!hasBuild) console.warn('SKIPPED startup: dist/ is not built (npm test builds it first)');

const HEAVY = /node_modules\/(@peculiar\/|reflect-metadata\/|@noble\/|cborg\/)/;

const dir = tempDir();
const hooks = join(dir, 'hooks.mjs');
writeFileSync(
  hooks,
  `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.LOAD_LOG, r.url + '\\n');
  return r;
}
`,
);

/**
 * Every module a fresh process loads while running `body` (an ES module snippet), as paths; Node's
 * own modules as `builtin:NAME` (from process.moduleLoadList).
 */
function modulesLoadedBy(name: string, body: string, env: Record<string, string> = {}): string[] {
  const log = join(dir, `${name}.log`);
  writeFileSync(log, '');
  const register = `import { register } from 'node:module'; register(${JSON.stringify(pathToFileURL(hooks).href)});`;
  const script = `import { createRequire } from 'node:module';
${body}
const { appendFileSync } = await import('node:fs');
appendFileSync(process.env.LOAD_LOG, Object.keys(createRequire(import.meta.url).cache).join('\\n') + '\\n');
appendFileSync(process.env.LOAD_LOG, process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => 'builtin:' + m.slice(13)).join('\\n') + '\\n');`;
  const r = spawnSync(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(register)}`, '--input-type=module', '-e', script], {
    cwd: ROOT,
    env: { ...process.env, ...env, LOAD_LOG: log },
    encoding: 'utf8',
  });
  expect(r.status, r.stderr).toBe(0);
  return readFileSync(log, 'utf8').split('\n').filter(Boolean).map((u) => (u.startsWith('file:') ? new URL(u).pathname : u));
}

const INDEX = JSON.stringify(pathToFileURL(join(ROOT, 'dist/index.js')).href);
const MAIN = JSON.stringify(pathToFileURL(join(ROOT, 'dist/cli/main.js')).href);
const quiet = '{ stdout: () => {}, stderr: () => {} }';

describe('the top-level help, written without loading the commands', () => {
  it('lists each command as its own module defines it', async () => {
    const run = async (...argv: string[]): Promise<string> => {
      let out = '';
      expect(await main(argv, { stdout: (s) => void (out += s), stderr: () => {} })).toBe(0);
      return out;
    };
    const top = (await run('--help')).replace(/\s+/g, ' ');
    for (const name of ['keygen', 'seal', 'inspect', 'verify', 'load', 'demo', 'attest', 'broker']) {
      const own = await run(name, '--help');
      // "seal [options] <IN>"; a command with subcommands and no options of its own is listed bare.
      const term = /^Usage: sealed-tensors (.*)$/m.exec(own)![1]!.replace(/ \[options\] \[command\]$/, '');
      const description = own.split('\n\n')[1]!.replace(/\s+/g, ' ').trim();
      expect(top, name).toContain(` ${term} ${description}`);
    }
  });
});

describe.runIf(hasBuild)('start-up loads only what the command needs', () => {
  it('importing the library does not load the verifiers, @noble or cborg; calling a verifier does', () => {
    const loaded = modulesLoadedBy('index', `await import(${INDEX});`);
    expect(loaded.some((p) => p.endsWith('/dist/index.js'))).toBe(true); // the hook sees our modules
    expect(loaded.filter((p) => HEAVY.test(p))).toEqual([]);
    expect(loaded.filter((p) => /\/dist\/attestation\/(certs|verify|verifiers\/(snp|tdx|nitro|azure|nvidia))/.test(p))).toEqual([]);
    // Nor node:crypto (used on first call only) nor the sealer (loaded by sealFile's first call).
    expect(loaded.filter((p) => p === 'builtin:crypto' || /\/dist\/(seal\/|crypto\/(backend|noble-backend|file-keys|stream)\.js)/.test(p))).toEqual([]);

    // The control: the lazy wrapper really loads the X.509 code when used.
    const used = modulesLoadedBy(
      'index-verify',
      `const m = await import(${INDEX}); await m.parseCertificates(new Uint8Array(0), 'none').catch(() => {});`,
    );
    expect(used.some((p) => /node_modules\/@peculiar\/x509\//.test(p))).toBe(true);
  });

  it('--help and inspect load no attestation, seal or native code; verify no attestation', async () => {
    const help = modulesLoadedBy('help', `const { main } = await import(${MAIN}); if (await main(['--help'], ${quiet}) !== 0) process.exit(9);`);
    expect(help.filter((p) => HEAVY.test(p) || /\/dist\/(attestation|seal|reader|native|crypto)\//.test(p))).toEqual([]);

    const key = join(dir, 'k.key');
    const sealed = join(dir, 'm.sealed');
    writeSafetensors(join(dir, 'm.safetensors'), [{ name: 'w', dtype: 'F32', shape: [64] }]);
    expect(await main(['keygen', '-o', key], { stdout: () => {}, stderr: () => {} })).toBe(0);
    expect(await main(['seal', join(dir, 'm.safetensors'), '-o', sealed, '--key', key], { stdout: () => {}, stderr: () => {} })).toBe(0);

    const inspect = modulesLoadedBy('inspect', `const { main } = await import(${MAIN}); if (await main(['inspect', ${JSON.stringify(sealed)}], ${quiet}) !== 0) process.exit(9);`);
    expect(inspect.some((p) => p.endsWith('/dist/cli/inspect.js'))).toBe(true);
    expect(inspect.filter((p) => HEAVY.test(p) || /\/dist\/(attestation|seal|native)\//.test(p))).toEqual([]);

    const verify = modulesLoadedBy(
      'verify',
      `const { main } = await import(${MAIN}); if (await main(['verify', ${JSON.stringify(sealed)}, '--key', ${JSON.stringify(key)}], ${quiet}) !== 0) process.exit(9);`,
    );
    expect(verify.some((p) => p.endsWith('/dist/cli/verify.js'))).toBe(true);
    expect(verify.filter((p) => HEAVY.test(p) || /\/dist\/(attestation|seal)\//.test(p))).toEqual([]);
  });

  // The reference reader and node:crypto (about twenty internal modules) cost a native verify
  // ~10-20 ms of a whole process; the addon does its digests and compares with its own OpenSSL.
  it.runIf(nativeStatus().available)('a native verify loads neither node:crypto nor the reference reader; without the addon it uses both', async () => {
    const key = join(dir, 'n.key');
    const sealed = join(dir, 'n.sealed');
    // Several chunks and payload padding: the zero-padding digest is on this path too.
    writeSafetensors(join(dir, 'n.safetensors'), [
      { name: 'a', dtype: 'F32', shape: [300, 1000] },
      { name: 'b', dtype: 'U8', shape: [77] },
    ]);
    expect(await main(['keygen', '-o', key], { stdout: () => {}, stderr: () => {} })).toBe(0);
    expect(await main(['seal', join(dir, 'n.safetensors'), '-o', sealed, '--key', key, '--chunk-size', '64KiB', '--pad-payload'], { stdout: () => {}, stderr: () => {} })).toBe(0);
    const run = `const { main } = await import(${MAIN}); if (await main(['verify', ${JSON.stringify(sealed)}, '--key', ${JSON.stringify(key)}, '--json'], ${quiet}) !== 0) process.exit(9);`;
    const REFERENCE = /\/dist\/(reader\/sealed-(file|model)|crypto\/(backend|file-keys|stream|noble-backend))\.js$/;

    const native = modulesLoadedBy('verify-native', run);
    expect(native.some((p) => p.endsWith('/dist/reader/native-model.js'))).toBe(true);
    expect(native.some((p) => p.startsWith('builtin:fs'))).toBe(true); // the list holds Node's own modules
    expect(native.filter((p) => p === 'builtin:crypto' || p.startsWith('builtin:internal/crypto/'))).toEqual([]);
    expect(native.filter((p) => REFERENCE.test(p))).toEqual([]);

    // The control: with the addon switched off, the same command takes the reference path.
    const reference = modulesLoadedBy('verify-reference', run, { SEALED_TENSORS_NATIVE: '0' });
    expect(reference.some((p) => p.endsWith('/dist/reader/sealed-model.js'))).toBe(true);
    expect(reference).toContain('builtin:crypto');
    expect(reference.some((p) => p.endsWith('/dist/reader/native-model.js'))).toBe(true); // imported, not used
  });
});
