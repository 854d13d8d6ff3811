import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/** A temp folder removed after the test file. */
export function tempDir(prefix = 'st-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const TEST_KEY = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
export const OTHER_KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
