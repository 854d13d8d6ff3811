import { nodeCrypto } from '../../crypto-builtin.js';
import * as nodeFs from 'node:fs/promises';
import { join } from 'node:path';
import { IoError, NoTeeError } from '../../errors.js';
import { assertBytes } from '../../bytes.js';
import type { TeeType } from '../types.js';
import { parseSnpCertTable } from './snp-certs.js';
import type { EvidenceProvider } from './types.js';

export const CONFIGFS_TSM_REPORT = '/sys/kernel/config/tsm/report';

/** What configfs-tsm returned for one request. */
export interface TsmReport {
  /** "sev_guest" or "tdx_guest". */
  provider: string;
  /** SNP: the ATTESTATION_REPORT; TDX: the quote. */
  outblob: Uint8Array;
  /** SNP only: the certificate table the host supplied (may be empty). */
  auxblob: Uint8Array | undefined;
}

/** The file operations configfs-tsm needs; tests pass an in-memory configfs. */
export interface TsmFs {
  mkdir(path: string): Promise<unknown>;
  rmdir(path: string): Promise<unknown>;
  readFile(path: string): Promise<Uint8Array>;
  writeFile(path: string, data: Uint8Array | string): Promise<unknown>;
}

export interface TsmOptions {
  /** Default /sys/kernel/config/tsm/report. */
  root?: string;
  /** SNP VMPL to request (written to `privlevel`); default: the kernel's. */
  privlevel?: number;
  fs?: TsmFs;
}

const realFs: TsmFs = {
  mkdir: (p) => nodeFs.mkdir(p),
  rmdir: (p) => nodeFs.rmdir(p),
  readFile: async (p) => new Uint8Array(await nodeFs.readFile(p)),
  writeFile: (p, d) => nodeFs.writeFile(p, d),
};

function fsError(err: unknown, what: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new NoTeeError(`${what}: configfs-tsm is not available (${code}); needs Linux 6.7+ inside an SNP or TDX guest`, { cause: err });
  if (code === 'EACCES' || code === 'EPERM') return new IoError(`${what}: permission denied; run as root or grant access to ${CONFIGFS_TSM_REPORT}`, { cause: err });
  return new IoError(`${what}: ${(err as Error).message}`, { cause: err });
}

const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8').trim();

/**
 * One report request through the kernel's configfs-tsm interface: make an entry, write inblob,
 * read outblob, check the generation counter (another writer would have changed it), remove it.
 */
export async function tsmReport(reportData: Uint8Array, opts: TsmOptions = {}): Promise<TsmReport> {
  assertBytes(reportData, 'reportData', 64);
  const fs = opts.fs ?? realFs;
  const root = opts.root ?? CONFIGFS_TSM_REPORT;
  const entry = join(root, `sealed-tensors-${process.pid}-${nodeCrypto().randomBytes(6).toString('hex')}`);
  try {
    await fs.mkdir(entry);
  } catch (err) {
    throw fsError(err, `creating ${entry}`);
  }
  try {
    if (opts.privlevel !== undefined) await fs.writeFile(join(entry, 'privlevel'), String(opts.privlevel));
    await fs.writeFile(join(entry, 'inblob'), reportData);
    const provider = text(await fs.readFile(join(entry, 'provider')));
    const outblob = await fs.readFile(join(entry, 'outblob'));
    let auxblob: Uint8Array | undefined;
    try {
      auxblob = await fs.readFile(join(entry, 'auxblob'));
    } catch {
      auxblob = undefined; // only SNP hosts that supply certificates have it
    }
    // Every write bumps the generation; more than ours means another process used the entry.
    const generation = Number(text(await fs.readFile(join(entry, 'generation'))));
    const expected = opts.privlevel !== undefined ? 2 : 1;
    if (generation !== expected) {
      throw new IoError(`configfs-tsm entry ${entry} was written by someone else (generation ${generation}, expected ${expected}); retry`);
    }
    if (outblob.length === 0) throw new IoError(`configfs-tsm returned an empty report from provider "${provider}"`);
    return { provider, outblob, auxblob };
  } catch (err) {
    if (err instanceof IoError || err instanceof NoTeeError) throw err;
    throw fsError(err, `requesting a report through ${entry}`);
  } finally {
    await fs.rmdir(entry).catch(() => undefined);
  }
}

/** SNP or TDX evidence through configfs-tsm. */
export class ConfigfsTsmProvider implements EvidenceProvider {
  constructor(
    readonly tee: Extract<TeeType, 'snp' | 'tdx'>,
    private readonly opts: TsmOptions = {},
  ) {}

  async getEvidence(reportData: Uint8Array): Promise<Uint8Array> {
    return (await this.getEvidenceWithCertificates(reportData)).evidence;
  }

  /**
   * Evidence plus the certificates the SNP host supplied in auxblob (VCEK or VLEK, ASK, ARK), as DER;
   * empty when the host supplies none (then fetch them from AMD KDS).
   */
  async getEvidenceWithCertificates(reportData: Uint8Array): Promise<{ evidence: Uint8Array; certificates: { name: string; der: Uint8Array }[] }> {
    const r = await tsmReport(reportData, this.opts);
    const want = this.tee === 'snp' ? 'sev_guest' : 'tdx_guest';
    if (r.provider !== want) throw new NoTeeError(`configfs-tsm provider is "${r.provider}", not ${want}; this is not a ${this.tee} guest`);
    const certificates = this.tee === 'snp' && r.auxblob && r.auxblob.length > 0 ? parseSnpCertTable(r.auxblob).map(({ name, der }) => ({ name, der })) : [];
    return { evidence: r.outblob, certificates };
  }
}
