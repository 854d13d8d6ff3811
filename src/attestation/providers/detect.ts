import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { NoTeeError } from '../../errors.js';
import type { TeeType } from '../types.js';
import { CONFIGFS_TSM_REPORT, ConfigfsTsmProvider, tsmReport } from './configfs-tsm.js';
import { SevGuestIoctlProvider, TdxGuestIoctlProvider } from './ioctl.js';
import { NitroNsmProvider } from './nsm.js';
import type { EvidenceProvider } from './types.js';

export interface DetectedTee {
  tee: Extract<TeeType, 'snp' | 'tdx' | 'nitro'>;
  /** How evidence will be gathered. */
  via: 'configfs-tsm' | 'ioctl' | 'nsm';
  device: string;
}

export interface DetectOptions {
  /** Filesystem prefix, for tests; default "/". */
  root?: string;
}

/**
 * Tells which TEE this machine is a guest of, by its kernel interfaces: /dev/nsm (Nitro),
 * configfs-tsm (SNP/TDX on Linux 6.7+, asked for its provider), /dev/sev-guest, /dev/tdx_guest.
 * Returns null when none is present.
 */
export async function detectTee(opts: DetectOptions = {}): Promise<DetectedTee | null> {
  const root = opts.root ?? '/';
  const p = (x: string): string => join(root, x);
  if (existsSync(p('/dev/nsm'))) return { tee: 'nitro', via: 'nsm', device: p('/dev/nsm') };
  const sev = existsSync(p('/dev/sev-guest'));
  const tdx = existsSync(p('/dev/tdx_guest'));
  const tsm = p(CONFIGFS_TSM_REPORT);
  if (existsSync(tsm)) {
    if (sev) return { tee: 'snp', via: 'configfs-tsm', device: tsm };
    if (tdx) return { tee: 'tdx', via: 'configfs-tsm', device: tsm };
    // No device node visible (e.g. a container): ask configfs which provider answers.
    try {
      const r = await tsmReport(new Uint8Array(64), { root: tsm });
      if (r.provider === 'sev_guest') return { tee: 'snp', via: 'configfs-tsm', device: tsm };
      if (r.provider === 'tdx_guest') return { tee: 'tdx', via: 'configfs-tsm', device: tsm };
    } catch {
      // configfs-tsm without a provider: fall through
    }
  }
  if (sev) return { tee: 'snp', via: 'ioctl', device: p('/dev/sev-guest') };
  if (tdx) return { tee: 'tdx', via: 'ioctl', device: p('/dev/tdx_guest') };
  return null;
}

/** The provider for what detectTee found. */
export function providerFor(d: DetectedTee): EvidenceProvider {
  if (d.tee === 'nitro') return new NitroNsmProvider();
  if (d.via === 'configfs-tsm') return new ConfigfsTsmProvider(d.tee, { root: d.device });
  return d.tee === 'snp' ? new SevGuestIoctlProvider() : new TdxGuestIoctlProvider();
}

/** detectTee + providerFor, or NoTeeError with advice. */
export async function defaultProvider(opts: DetectOptions = {}): Promise<EvidenceProvider> {
  const d = await detectTee(opts);
  if (!d) {
    throw new NoTeeError(
      'no TEE found on this machine (looked for /dev/nsm, /sys/kernel/config/tsm/report, /dev/sev-guest, /dev/tdx_guest); run inside an SEV-SNP, TDX or Nitro guest, or use the simulated TEE for development',
    );
  }
  return providerFor(d);
}
