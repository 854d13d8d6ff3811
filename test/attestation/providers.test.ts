import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as cborDecode, encode as cborEncode } from 'cborg';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultProvider, detectTee, providerFor } from '../../src/attestation/providers/detect.js';
import { ConfigfsTsmProvider, tsmReport } from '../../src/attestation/providers/configfs-tsm.js';
import { SevGuestIoctlProvider, TdxGuestIoctlProvider } from '../../src/attestation/providers/ioctl.js';
import { NitroNsmProvider, nsmAttestationDocument, nsmAttestationRequest } from '../../src/attestation/providers/nsm.js';
import { parseSnpCertTable } from '../../src/attestation/providers/snp-certs.js';
import { parseCertificates } from '../../src/attestation/certs.js';
import { HAVE_VECTORS, typedError, vec } from './helpers.js';
import { loadTeeIoctls, type TeeIoctls } from '../../src/attestation/providers/native-ioctl.js';

let ioctls: TeeIoctls | undefined;
let ioctlsMissing = '';
try {
  ioctls = loadTeeIoctls();
} catch (err) {
  ioctlsMissing = (err as Error).message;
  console.warn(`native TEE ioctl tests skipped: ${ioctlsMissing}`);
}
const onTee = ['/dev/sev-guest', '/dev/tdx_guest', '/dev/nsm'].some((d) => existsSync(d));

const made: string[] = [];
afterAll(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));

function fakeRoot(files: string[]): string {
  const root = mkdtempSync(join(tmpdir(), 'st-tee-'));
  made.push(root);
  for (const f of files) {
    const p = join(root, f);
    mkdirSync(join(p, '..'), { recursive: true });
    if (f.endsWith('/')) mkdirSync(p, { recursive: true });
    else writeFileSync(p, '');
  }
  return root;
}

describe('detectTee', () => {
  it('finds nothing on a machine without TEE interfaces, and defaultProvider says what to do', async () => {
    const root = fakeRoot([]);
    expect(await detectTee({ root })).toBeNull();
    const e = await typedError(() => defaultProvider({ root }), ['ERR_NO_TEE']);
    expect(e.message).toMatch(/\/dev\/sev-guest.*simulated/);
  });

  it('tells Nitro, SNP and TDX apart by their kernel interfaces, preferring configfs-tsm', async () => {
    expect(await detectTee({ root: fakeRoot(['dev/nsm']) })).toMatchObject({ tee: 'nitro', via: 'nsm' });
    expect(await detectTee({ root: fakeRoot(['dev/sev-guest']) })).toMatchObject({ tee: 'snp', via: 'ioctl' });
    expect(await detectTee({ root: fakeRoot(['dev/tdx_guest']) })).toMatchObject({ tee: 'tdx', via: 'ioctl' });
    expect(await detectTee({ root: fakeRoot(['dev/sev-guest', 'sys/kernel/config/tsm/report/']) })).toMatchObject({ tee: 'snp', via: 'configfs-tsm' });
    expect(await detectTee({ root: fakeRoot(['dev/tdx_guest', 'sys/kernel/config/tsm/report/']) })).toMatchObject({ tee: 'tdx', via: 'configfs-tsm' });
    const d = (await detectTee({ root: fakeRoot(['dev/tdx_guest', 'sys/kernel/config/tsm/report/']) }))!;
    expect(providerFor(d)).toBeInstanceOf(ConfigfsTsmProvider);
    expect(providerFor({ tee: 'snp', via: 'ioctl', device: '/dev/sev-guest' })).toBeInstanceOf(SevGuestIoctlProvider);
    expect(providerFor({ tee: 'nitro', via: 'nsm', device: '/dev/nsm' })).toBeInstanceOf(NitroNsmProvider);
  });
});

describe('providers outside a TEE fail with typed errors', () => {
  it('configfs-tsm without the interface is ERR_NO_TEE; report data must be 64 bytes', async () => {
    const root = join(fakeRoot([]), 'sys/kernel/config/tsm/report');
    await typedError(() => tsmReport(new Uint8Array(64), { root }), ['ERR_NO_TEE']);
    await typedError(() => new ConfigfsTsmProvider('snp', { root }).getEvidence(new Uint8Array(64)), ['ERR_NO_TEE']);
    await typedError(() => tsmReport(new Uint8Array(32), { root }), ['ERR_INVALID_ARGUMENT']);
  });

  it('the ioctl and NSM providers report a missing device (or a missing addon), never crash', async () => {
    // This test machine is no TEE guest; on one that is, the device would answer instead.
    const codes = ['ERR_NO_TEE', 'ERR_NATIVE_UNAVAILABLE', 'ERR_IO'] as const;
    await typedError(() => new SevGuestIoctlProvider().getEvidence(new Uint8Array(64)), codes);
    await typedError(() => new TdxGuestIoctlProvider().getEvidence(new Uint8Array(64)), codes);
    await typedError(() => new NitroNsmProvider().getEvidence(new Uint8Array(64)), codes);
    await typedError(() => new NitroNsmProvider().getEvidence(new Uint8Array(65)), ['ERR_INVALID_ARGUMENT']);
  });
});

describe('NSM messages', () => {
  it('asks for an attestation with the report data as user_data, and reads the document or the error', async () => {
    const req = cborDecode(nsmAttestationRequest(new Uint8Array(64).fill(5))) as { Attestation: Record<string, unknown> };
    expect(req.Attestation.user_data).toEqual(new Uint8Array(64).fill(5));
    expect(req.Attestation.nonce).toBeNull();
    expect(req.Attestation.public_key).toBeNull();
    expect(nsmAttestationDocument(cborEncode({ Attestation: { document: new Uint8Array([1, 2, 3]) } }))).toEqual(new Uint8Array([1, 2, 3]));
    await typedError(() => nsmAttestationDocument(cborEncode({ Error: 'InvalidArgument' })), ['ERR_IO']);
    await typedError(() => nsmAttestationDocument(cborEncode({ Attestation: {} })), ['ERR_EVIDENCE_FORMAT']);
  });
});

describe.skipIf(!HAVE_VECTORS)('SNP certificate table (configfs-tsm auxblob)', () => {
  it('splits a GUID table into named DER certificates', () => {
    const vcek = vec('sev-snp/gsg_milan_vcek.der');
    const guid = Buffer.from('8d75da6364e66445adc5f4b93be8accd', 'hex'); // 63da758d-e664-4564-adc5-f4b93be8accd, mixed-endian
    const table = new Uint8Array(48 + vcek.length);
    table.set(guid, 0);
    new DataView(table.buffer).setUint32(16, 48, true);
    new DataView(table.buffer).setUint32(20, vcek.length, true);
    table.set(vcek, 48);
    const entries = parseSnpCertTable(table);
    expect(entries.map((e) => [e.name, e.guid])).toEqual([['VCEK', '63da758d-e664-4564-adc5-f4b93be8accd']]);
    expect(parseCertificates(entries[0]!.der, 'auxblob')[0]!.serialNumber).toBe('0');
    const bad = table.slice();
    new DataView(bad.buffer).setUint32(20, vcek.length + 1, true);
    expect(() => parseSnpCertTable(bad)).toThrow(/runs past/);
  });
});

describe.skipIf(!ioctls || onTee)(`native TEE ioctls (addon built, no TEE device here)${ioctls ? '' : ` (skipped: ${ioctlsMissing})`}`, () => {
  it('open the devices for real and report their absence by errno; validate arguments before any I/O', async () => {
    await expect(ioctls!.teeSnpGetReport(new Uint8Array(64), 0)).rejects.toThrow(/^ENOENT: open \/dev\/sev-guest failed/);
    await expect(ioctls!.teeTdxGetReport0(new Uint8Array(64))).rejects.toThrow(/^ENOENT: open \/dev\/tdx_guest failed/);
    await expect(ioctls!.teeNsmRequest(nsmAttestationRequest(new Uint8Array(64)))).rejects.toThrow(/^ENOENT: open \/dev\/nsm failed/);
    expect(() => ioctls!.teeSnpGetReport(new Uint8Array(63))).toThrow(/reportData must be 64 bytes, got 63/);
    expect(() => ioctls!.teeSnpGetReport(new Uint8Array(64), 4)).toThrow(/vmpl must be 0 to 3/);
    expect(() => ioctls!.teeNsmRequest(new Uint8Array(4097))).toThrow(/request must be 1 to 4096 bytes/);
    // Through the providers, the errno becomes a typed error.
    await typedError(() => new SevGuestIoctlProvider().getEvidence(new Uint8Array(64)), ['ERR_NO_TEE']);
    await typedError(() => new NitroNsmProvider().getEvidence(new Uint8Array(64)), ['ERR_NO_TEE']);
  });
});
