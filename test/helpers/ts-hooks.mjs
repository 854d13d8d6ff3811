// Module hooks that let a child node process run the project's TypeScript sources as they are
// (Node 20 cannot strip types; dist/ may be stale): `./x.js` imported from a .ts file resolves to
// `./x.ts` when that exists, and .ts files are stripped of their types by vite's Oxc transform
// (native, a millisecond a file; the typescript package's transpiler takes a hundred times that).
// Registered by the arguments test/helpers/ts-child.ts `tsNodeArgs()` returns.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { transformWithOxc } from 'vite';

export async function resolve(specifier, context, next) {
  const parent = context.parentURL;
  if (parent !== undefined && parent.endsWith('.ts') && specifier.startsWith('.') && specifier.endsWith('.js')) {
    const url = new URL(`${specifier.slice(0, -3)}.ts`, parent);
    if (existsSync(fileURLToPath(url))) return { url: url.href, shortCircuit: true };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const fileName = fileURLToPath(url);
  // No source map: Oxc keeps line numbers close enough, and --enable-source-maps would slow every
  // Error the code under test creates.
  const { code } = await transformWithOxc(await readFile(fileName, 'utf8'), fileName, { lang: 'ts', sourcemap: false });
  return { format: 'module', source: code, shortCircuit: true };
}
