import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode as cborDecode, encode as cborEncode } from 'cborg';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultProvider, detectTee, providerFor } from '../../src/attestation/providers/detect.js';
import { ConfigfsTsmProvider, tsmReport, type TsmFs } from '../../src/attestation/providers/configfs-tsm.js';
import { verifySnpReport } from '../../src/attestation/verifiers/snp.js';
import { SevGuestIoctlProvider, TdxGuestIoctlProvider } from '../../src/attestation/providers/ioctl.js';
import { NitroNsmProvider, nsmAttestationDocument, nsmAttestationRequest } from '../../src/attestation/providers/nsm.js';
import { parseSnpCertTable } from '../../src/attestation/providers/snp-certs.js';
import { parseCertificates } from '../../src/attestation/certs.js';
import { typedError, vec } from './helpers.js';
import { NativeUnavailableError } from '../../src/errors.js';
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
  it('asks for an attestation with the report data as the nonce, and reads the document or the error', async () => {
    const req = cborDecode(nsmAttestationRequest(new Uint8Array(64).fill(5))) as { Attestation: Record<string, unknown> };
    expect(req.Attestation.nonce).toEqual(new Uint8Array(64).fill(5));
    expect(req.Attestation.user_data).toBeNull();
    expect(req.Attestation.public_key).toBeNull();
    expect(nsmAttestationDocument(cborEncode({ Attestation: { document: new Uint8Array([1, 2, 3]) } }))).toEqual(new Uint8Array([1, 2, 3]));
    await typedError(() => nsmAttestationDocument(cborEncode({ Error: 'InvalidArgument' })), ['ERR_IO']);
    await typedError(() => nsmAttestationDocument(cborEncode({ Attestation: {} })), ['ERR_EVIDENCE_FORMAT']);
  });
});

describe('SNP certificate table (configfs-tsm auxblob)', () => {
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

/** An in-memory configfs-tsm: writing inblob bumps generation, reading outblob makes the "report". */
class FakeTsm implements TsmFs {
  entries = new Map<string, { inblob?: Uint8Array; privlevel?: string; generation: number }>();
  extraWrites = 0;
  constructor(
    private readonly provider: string,
    private readonly report: (inblob: Uint8Array) => Uint8Array,
    private readonly auxblob?: Uint8Array,
    private readonly mkdirError?: string,
  ) {}
  private enoent(p: string): never {
    throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
  }
  private split(p: string): [string, string] {
    const i = p.lastIndexOf('/');
    return [p.slice(0, i), p.slice(i + 1)];
  }
  async mkdir(p: string) {
    if (this.mkdirError) throw Object.assign(new Error(this.mkdirError), { code: this.mkdirError });
    this.entries.set(p, { generation: 0 });
  }
  async rmdir(p: string) {
    if (!this.entries.delete(p)) this.enoent(p);
  }
  async writeFile(p: string, d: Uint8Array | string) {
    const [dir, name] = this.split(p);
    const e = this.entries.get(dir) ?? this.enoent(p);
    if (name === 'inblob') e.inblob = new Uint8Array(Buffer.from(d));
    else if (name === 'privlevel') e.privlevel = String(d);
    else this.enoent(p);
    e.generation += 1 + this.extraWrites;
  }
  async readFile(p: string): Promise<Uint8Array> {
    const [dir, name] = this.split(p);
    const e = this.entries.get(dir) ?? this.enoent(p);
    if (name === 'provider') return new Uint8Array(Buffer.from(`${this.provider}\n`));
    if (name === 'generation') return new Uint8Array(Buffer.from(`${e.generation}\n`));
    if (name === 'outblob') return this.report(e.inblob ?? new Uint8Array(64));
    if (name === 'auxblob' && this.auxblob) return this.auxblob;
    return this.enoent(p);
  }
}

function certTable(certs: { guid: string; der: Uint8Array }[]): Uint8Array {
  const header = (certs.length + 1) * 24;
  const out = new Uint8Array(header + certs.reduce((n, c) => n + c.der.length, 0));
  const view = new DataView(out.buffer);
  let at = header;
  certs.forEach((c, i) => {
    out.set(Buffer.from(c.guid, 'hex'), i * 24);
    view.setUint32(i * 24 + 16, at, true);
    view.setUint32(i * 24 + 20, c.der.length, true);
    out.set(c.der, at);
    at += c.der.length;
  });
  return out;
}

describe('configfs-tsm protocol (in-memory configfs)', () => {
  it('writes inblob (and privlevel), reads provider/outblob/generation, removes its entry', async () => {
    const seen: Uint8Array[] = [];
    const fs = new FakeTsm('tdx_guest', (inblob) => (seen.push(inblob), new Uint8Array([4, 0, ...inblob.subarray(0, 4)])));
    const rd = new Uint8Array(64).map((_, i) => i);
    const ev = await new ConfigfsTsmProvider('tdx', { fs, root: '/cfg' }).getEvidence(rd);
    expect(ev).toEqual(new Uint8Array([4, 0, 0, 1, 2, 3]));
    expect(seen[0]).toEqual(rd);
    expect(fs.entries.size).toBe(0);
    const r = await tsmReport(rd, { fs, root: '/cfg', privlevel: 2 });
    expect(r.provider).toBe('tdx_guest');
    expect(fs.entries.size).toBe(0);
  });

  it('refuses a report when another writer bumped the generation, or the provider is another TEE; maps errno', async () => {
    const busy = new FakeTsm('sev_guest', () => new Uint8Array(1184));
    busy.extraWrites = 1;
    const e = await typedError(() => tsmReport(new Uint8Array(64), { fs: busy, root: '/cfg' }), ['ERR_IO']);
    expect(e.message).toMatch(/written by someone else \(generation 2, expected 1\)/);
    expect(busy.entries.size).toBe(0);
    await typedError(() => new ConfigfsTsmProvider('snp', { fs: new FakeTsm('tdx_guest', () => new Uint8Array(8)), root: '/cfg' }).getEvidence(new Uint8Array(64)), ['ERR_NO_TEE']);
    const denied = await typedError(() => tsmReport(new Uint8Array(64), { fs: new FakeTsm('sev_guest', () => new Uint8Array(8), undefined, 'EACCES'), root: '/cfg' }), ['ERR_IO']);
    expect(denied.message).toMatch(/permission denied; run as root/);
    await typedError(() => tsmReport(new Uint8Array(64), { fs: new FakeTsm('sev_guest', () => new Uint8Array(0)), root: '/cfg' }), ['ERR_IO']);
  });

  it('SNP with host certificates in auxblob: the evidence verifies with exactly those certificates', async () => {
    const [ask, ark] = parseCertificates(vec('sev-snp/ask_ark_milan.pem'), 'chain');
    const aux = certTable([
      { guid: '8d75da6364e66445adc5f4b93be8accd', der: vec('sev-snp/gsg_milan_vcek.der') }, // VCEK
      { guid: '79b3b74aacbbe44fa02f05aef327c782', der: new Uint8Array(ask!.raw) }, // ASK
      { guid: 'a406b4c003a8524997433fb6014cd0ae', der: new Uint8Array(ark!.raw) }, // ARK
    ]);
    const fs = new FakeTsm('sev_guest', () => vec('sev-snp/gsg_milan_report.bin'), aux);
    const got = await new ConfigfsTsmProvider('snp', { fs, root: '/cfg' }).getEvidenceWithCertificates(new Uint8Array(64));
    expect(got.certificates.map((c) => c.name)).toEqual(['VCEK', 'ASK', 'ARK']);
    const certificates = got.certificates.flatMap((c) => parseCertificates(c.der, c.name));
    const r = verifySnpReport(got.evidence, { now: new Date('2022-09-24T01:00:00Z'), certificates });
    expect(r.claims.platform.product).toBe('Milan');
  });
});

describe('ioctl providers over fake ioctls', () => {
  const fake = (over: Partial<TeeIoctls>): (() => TeeIoctls) => () => ({
    teeSnpGetReport: async () => new Uint8Array(0),
    teeTdxGetReport0: async () => new Uint8Array(1024),
    teeNsmRequest: async () => new Uint8Array(0),
    ...over,
  });

  it('SNP passes report data and VMPL through and maps errno messages to typed errors', async () => {
    const calls: [Uint8Array, number | undefined][] = [];
    const p = new SevGuestIoctlProvider(2, fake({ teeSnpGetReport: async (rd, vmpl) => (calls.push([rd, vmpl]), new Uint8Array([1, 2, 3])) }));
    expect(await p.getEvidence(new Uint8Array(64).fill(7))).toEqual(new Uint8Array([1, 2, 3]));
    expect(calls).toEqual([[new Uint8Array(64).fill(7), 2]]);
    const perm = new SevGuestIoctlProvider(0, fake({ teeSnpGetReport: async () => Promise.reject(new Error('EACCES: open /dev/sev-guest failed: Permission denied')) }));
    expect((await typedError(() => perm.getEvidence(new Uint8Array(64)), ['ERR_IO'])).message).toMatch(/grant this user access to \/dev\/sev-guest/);
    const fw = new SevGuestIoctlProvider(0, fake({ teeSnpGetReport: async () => Promise.reject(new Error('EIO: SNP firmware returned status 0x16')) }));
    await typedError(() => fw.getEvidence(new Uint8Array(64)), ['ERR_IO']);
  });

  it('Nitro sends an Attestation request with the nonce and returns the document; an NSM error is ERR_IO', async () => {
    let sent: unknown;
    const doc = new Uint8Array([9, 9, 9]);
    const p = new NitroNsmProvider(fake({ teeNsmRequest: async (req) => ((sent = cborDecode(req)), cborEncode({ Attestation: { document: doc } })) }));
    expect(await p.getEvidence(new Uint8Array(64).fill(1))).toEqual(doc);
    expect(sent).toEqual({ Attestation: { user_data: null, nonce: new Uint8Array(64).fill(1), public_key: null } });
    const err = new NitroNsmProvider(fake({ teeNsmRequest: async () => cborEncode({ Error: 'InputTooLarge' }) }));
    expect((await typedError(() => err.getEvidence(new Uint8Array(64)), ['ERR_IO'])).message).toMatch(/InputTooLarge/);
    const gone = new NitroNsmProvider(fake({ teeNsmRequest: async () => Promise.reject(new Error('ENOENT: open /dev/nsm failed')) }));
    await typedError(() => gone.getEvidence(new Uint8Array(64)), ['ERR_NO_TEE']);
  });

  it('TDX over the ioctl gets a TDREPORT but refuses to call it remote evidence', async () => {
    const p = new TdxGuestIoctlProvider(fake({}));
    expect((await typedError(() => p.getEvidence(new Uint8Array(64)), ['ERR_NO_TEE'])).message).toMatch(/needs configfs-tsm/);
    const missing = new TdxGuestIoctlProvider(() => {
      throw new NativeUnavailableError('no addon');
    });
    await typedError(() => missing.getEvidence(new Uint8Array(64)), ['ERR_NATIVE_UNAVAILABLE']);
  });
});
