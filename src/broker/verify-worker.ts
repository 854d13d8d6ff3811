/**
 * One thread of the verifier pool (verify-pool.ts): verifies evidence and answers with the
 * verifier's claims and checks, or its typed error's code and message. Holds no broker state.
 */
import { X509Certificate } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { verifyEvidence, type VerifyEvidenceOptions } from '../attestation/verify.js';
import type { TdxCollateral } from '../attestation/verifiers/tdx-collateral.js';
import { SealedTensorsError } from '../errors.js';
import { CertificateCache } from './cert-cache.js';
import type { PoolJob, PoolStatics } from './verify-pool.js';

const statics = workerData as PoolStatics;
const der = (d: Uint8Array): X509Certificate => new X509Certificate(Buffer.from(d.buffer, d.byteOffset, d.byteLength));
const issuers = statics.issuers.map(der);
const collateral: TdxCollateral | undefined = statics.collateral && ({ ...statics.collateral, certificates: statics.collateral.certificates.map(der) } as TdxCollateral);
const sent = new CertificateCache();

parentPort!.on('message', (job: PoolJob & { id: number }) => {
  void (async () => {
    try {
      const opts: VerifyEvidenceOptions = {
        now: new Date(job.nowMs),
        certificates: [...issuers, ...job.certificates.map((d) => sent.get(d))],
        ...(job.trustedRoots !== undefined ? { trustedRoots: job.trustedRoots } : {}),
        ...(statics.crls !== undefined ? { crls: statics.crls } : {}),
        ...(collateral !== undefined ? { collateral } : {}),
      };
      const v = await verifyEvidence(job.type, job.evidence, opts);
      parentPort!.postMessage({ id: job.id, ok: true, result: { tee: v.tee, claims: v.claims, checks: v.checks } });
    } catch (err) {
      const error = err instanceof SealedTensorsError ? { code: err.code, message: err.message } : { message: err instanceof Error ? err.message : String(err) };
      parentPort!.postMessage({ id: job.id, ok: false, error });
    }
  })();
});
