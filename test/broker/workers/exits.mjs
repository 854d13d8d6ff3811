// A verifier thread that dies on its first job (test/broker/verify-pool.test.ts).
import { parentPort } from 'node:worker_threads';
parentPort.on('message', () => process.exit(7));
