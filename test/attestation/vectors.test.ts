import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VECTORS } from './helpers.js';

const KINDS = ['sev-snp', 'tdx', 'nitro', 'azure-vtpm', 'nvidia'];

describe('committed attestation vectors', () => {
  it('every file is listed in its folder README with its SHA-256, and nothing listed is missing', () => {
    for (const kind of KINDS) {
      const dir = join(VECTORS, kind);
      const files = readdirSync(dir).filter((f) => f !== 'README.md').sort();
      const readme = readFileSync(join(dir, 'README.md'), 'utf8');
      // Table rows: | `file` | source | `sha256` |
      const rows = new Map([...readme.matchAll(/^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$/gm)].map((m) => [m[1]!, m[2]!]));
      expect([...rows.keys()].sort(), kind).toEqual(files);
      for (const f of files) expect(createHash('sha256').update(readFileSync(join(dir, f))).digest('hex'), `${kind}/${f}`).toBe(rows.get(f));
    }
  });

  it('they stay small (under 300 KiB in all)', () => {
    let total = 0;
    for (const kind of KINDS) for (const f of readdirSync(join(VECTORS, kind))) total += statSync(join(VECTORS, kind, f)).size;
    expect(total).toBeLessThan(300 * 1024);
  });
});
