import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// One temp root per run: every test, worker and child process (they inherit TMPDIR) writes below
// it, so what a run leaves behind can be found, reported and removed. A test run that leaves a
// plaintext model or a key file behind fails.
export default function setup(): () => void {
  const root = mkdtempSync(join(tmpdir(), 'sealed-tensors-tests-'));
  // Search but not list for others: tests that run a child as an unprivileged user open a folder
  // they made for it; every other folder below stays 0700 (mkdtemp).
  chmodSync(root, 0o711);
  process.env.TMPDIR = root;
  process.env.SEALED_TENSORS_TEST_TMP = root;
  return () => {
    const left = readdirSync(root);
    rmSync(root, { recursive: true, force: true });
    if (left.length > 0) {
      process.exitCode = 1; // vitest reports a teardown error but would still exit 0
      throw new Error(`tests left ${left.length} item(s) in their temp root (${left.slice(0, 10).join(', ')}): remove them in the test's own cleanup`);
    }
  };
}
