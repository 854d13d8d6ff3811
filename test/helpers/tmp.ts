import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, onTestFinished } from 'vitest';

/**
 * A temp folder, removed when the test that made it finishes (or, made at file level, after the
 * file). Test folders hold plaintext models and keys: none may outlive its test run, and
 * test/global-setup.ts fails the run if anything is left in the run's temp root.
 */
export function tempDir(prefix = 'st-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const remove = () => rmSync(dir, { recursive: true, force: true });
  try {
    onTestFinished(remove); // throws outside a test: then the folder belongs to the file
  } catch {
    afterAll(remove);
  }
  return dir;
}

export const TEST_KEY = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
export const OTHER_KEY = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
