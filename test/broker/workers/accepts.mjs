// A verifier thread that answers every job with the claims it is told, after a crash on the job marked "crash":
// shows that a crash fails only that thread's jobs and the next job gets a fresh thread.
import { parentPort } from 'node:worker_threads';
parentPort.on('message', (job) => {
  if (Buffer.from(job.evidence).toString() === 'crash') process.exit(1);
  parentPort.postMessage({ id: job.id, ok: true, result: { tee: job.type, claims: { tee: job.type }, checks: [] } });
});
