// A verifier thread whose job handler throws outside any catch (an uncaught exception in the thread).
import { parentPort } from 'node:worker_threads';
parentPort.on('message', () => {
  throw new Error('verifier bug');
});
