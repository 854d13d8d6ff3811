// Runs test/native/memcheck.mjs under valgrind's memcheck, or says plainly that it skipped: a
// machine without valgrind still runs the rest of `npm test` green.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const probe = spawnSync('valgrind', ['--version'], { encoding: 'utf8' });
if (probe.error || probe.status !== 0) {
  console.warn('SKIPPED native memcheck: valgrind is not installed (apt-get install valgrind; .ci/run does)');
  process.exit(0);
}
const script = fileURLToPath(new URL('./memcheck.mjs', import.meta.url));
const supp = fileURLToPath(new URL('./valgrind.supp', import.meta.url));
const r = spawnSync(
  'valgrind',
  ['--error-exitcode=1', '--leak-check=no', '-q', `--suppressions=${supp}`, process.execPath, '--expose-gc', script],
  { stdio: 'inherit' },
);
if (r.error) throw r.error;
process.exit(r.status ?? 1);
