import { NoTeeError } from '../../errors.js';
import { assertBytes } from '../../bytes.js';
import type { EvidenceProvider } from './types.js';
import { callIoctl, loadTeeIoctls, type IoctlLoader } from './native-ioctl.js';

/** SNP evidence through /dev/sev-guest SNP_GET_REPORT, for kernels without configfs-tsm. */
export class SevGuestIoctlProvider implements EvidenceProvider {
  readonly tee = 'snp' as const;
  constructor(
    private readonly vmpl = 0,
    private readonly load: IoctlLoader = loadTeeIoctls,
  ) {}

  async getEvidence(reportData: Uint8Array): Promise<Uint8Array> {
    assertBytes(reportData, 'reportData', 64);
    return callIoctl('/dev/sev-guest', this.load, (io) => io.teeSnpGetReport(reportData, this.vmpl));
  }
}

/**
 * /dev/tdx_guest TDX_CMD_GET_REPORT0 gives a TDREPORT, which only this machine's quoting enclave
 * can check. Returned for local use; it is not remote evidence, so getEvidence refuses.
 */
export async function tdxGetTdReport(reportData: Uint8Array, load: IoctlLoader = loadTeeIoctls): Promise<Uint8Array> {
  assertBytes(reportData, 'reportData', 64);
  return callIoctl('/dev/tdx_guest', load, (io) => io.teeTdxGetReport0(reportData));
}

export class TdxGuestIoctlProvider implements EvidenceProvider {
  readonly tee = 'tdx' as const;
  constructor(private readonly load: IoctlLoader = loadTeeIoctls) {}

  async getEvidence(reportData: Uint8Array): Promise<Uint8Array> {
    // Prove the device answers, so the error below is about quoting, not about the TEE.
    await tdxGetTdReport(reportData, this.load);
    // An environment problem (exit 3 in the CLI), not a rejection: the TEE is there, its quoting path is not.
    throw new NoTeeError(
      'this TDX guest has /dev/tdx_guest but no configfs-tsm: the kernel gives a TDREPORT, and turning it into a verifiable quote needs configfs-tsm (Linux 6.7+) or the host quote service; upgrade the guest kernel',
    );
  }
}
