import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import ts from 'typescript';
import { repoRoot } from '../native/helpers.js';

/**
 * Transpiles `entries` (repo-relative .ts paths) and every module they import relatively into
 * `out`, keeping the layout, for a child process that must run the library's sources as they are
 * (not dist/, which may be stale).
 */
export function transpile(entries: string[], out: string): void {
  const seen = new Set<string>();
  const queue = entries.map((e) => join(repoRoot, e));
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
    const dest = join(out, relative(repoRoot, file)).replace(/\.ts$/, '.js');
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, js);
    for (const m of source.matchAll(/from '(\.\.?\/[^']+)\.js'/g)) queue.push(join(dirname(file), m[1]! + '.ts'));
  }
  writeFileSync(join(out, 'package.json'), '{"type":"module"}');
}
