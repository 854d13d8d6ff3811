import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { encodeTeeEvidence } from '../../src/protocol/evidence.js';
import { VECTORS, certs, vec } from './helpers.js';
import { tempDir } from '../helpers/tmp.js';

vi.setConfig({ testTimeout: 60_000 });

const tmp = tempDir('st-attest-kbs-');
const V = (p: string) => join(VECTORS, p);
const GENOA_NONCE = 'b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f';

async function run(...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { code, stdout, stderr, json: () => JSON.parse(stdout) as Record<string, unknown> };
}

function file(name: string, content: unknown): string {
  const p = join(tmp, name);
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}

describe('attest verify --format kbs: Trustee tee-evidence JSON, the same output as our binary forms', () => {
  it('SNP: wrapped tee-evidence with the VCEK in cert_chain prints exactly what the raw report prints (crypto-only and policy)', async () => {
    const [ask, ark] = certs('sev-snp/ask_ark_genoa.pem');
    const te = encodeTeeEvidence('snp', vec('sev-snp/azure_genoa_report.bin'), {
      snpCertificates: [
        { type: 'VCEK', der: new Uint8Array(certs('sev-snp/azure_genoa_vcek.pem')[0]!.raw) },
        { type: 'ASK', der: new Uint8Array(ask!.raw) },
        { type: 'ARK', der: new Uint8Array(ark!.raw) },
      ],
    });
    const kbs = file('genoa-te.json', te);
    const at = ['--at', '2026-01-01T00:00:00Z', '--json'];
    const raw = await run('attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), ...at, '--crypto-only');
    const viaKbs = await run('attest', 'verify', kbs, '--type', 'snp', '--format', 'kbs', ...at, '--crypto-only');
    expect(viaKbs.code).toBe(0);
    expect(viaKbs.stdout).toBe(raw.stdout);
    expect(viaKbs.json()).toMatchObject({ tee: 'snp', verified: true, claims: { reportData: `${GENOA_NONCE}${'00'.repeat(32)}` } });
    const policy = join(VECTORS, '../../../docs/policies/snp.json');
    const rawP = await run('attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), ...at, '--policy', policy, '--report-data', GENOA_NONCE);
    const kbsP = await run('attest', 'verify', kbs, '--type', 'snp', '--format', 'kbs', ...at, '--policy', policy, '--report-data', GENOA_NONCE);
    expect(kbsP.code).toBe(rawP.code);
    expect(kbsP.stdout).toBe(rawP.stdout);
    expect(kbsP.json()).toMatchObject({ verified: true, verdict: { allowed: true } });
  });

  it("Trustee's own files: the SNP e2e primary evidence (ASK/ARK from --certs) and az-snp-vtpm v2 with its nonce", async () => {
    const snp = await run('attest', 'verify', V('trustee/snp_e2e_evidence.json'), '--type', 'snp', '--format', 'kbs', '--certs', V('sev-snp/ask_ark_genoa.pem'), '--at', '2025-06-01T00:00:00Z', '--json', '--crypto-only');
    expect(snp.code).toBe(0);
    expect(snp.json()).toMatchObject({ tee: 'snp', verified: true, claims: { reportData: expect.stringMatching(/^7e732088/), platform: { product: 'Genoa' } } });
    // Without the ASK/ARK the chain cannot be built: the same failure as for the raw form.
    const noCa = await run('attest', 'verify', V('trustee/snp_e2e_evidence.json'), '--type', 'snp', '--format', 'kbs', '--at', '2025-06-01T00:00:00Z', '--json', '--crypto-only');
    expect(noCa.code).toBe(1);
    expect(noCa.json()).toMatchObject({ verified: false, error: expect.stringMatching(/^ERR_EVIDENCE_CHAIN: /) });
    const nonce = '982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef';
    const az = await run('attest', 'verify', V('trustee/az_snp_vtpm_evidence_v2.json'), '--type', 'az-snp-vtpm', '--format', 'kbs', '--certs', V('sev-snp/ask_ark_milan.pem'), '--at', '2026-07-16T00:00:00Z', '--report-data', nonce, '--json', '--crypto-only');
    expect(az.code).toBe(0);
    expect(az.json()).toMatchObject({ tee: 'azure-snp', verified: true, claims: { reportData: nonce }, reportData: 'matches --report-data' });
    const wrong = await run('attest', 'verify', V('trustee/az_snp_vtpm_evidence_v2.json'), '--type', 'az-snp-vtpm', '--format', 'kbs', '--certs', V('sev-snp/ask_ark_milan.pem'), '--at', '2026-07-16T00:00:00Z', '--report-data', `${nonce.slice(0, -2)}00`, '--json', '--crypto-only');
    expect(wrong.code).toBe(1);
  });

  it('TDX {cc_eventlog, quote} with collateral, and simulated {evidence}: the raw outputs', async () => {
    const q = vec('tdx/dcapqvl_quote_v4.bin');
    const kbs = file('tdx-te.json', encodeTeeEvidence('tdx', q, { eventLog: new Uint8Array([1, 2, 3]) }));
    const args = ['--collateral', V('tdx/dcapqvl_quote_v4_collateral.json'), '--at', '2025-07-19T10:00:34Z', '--json', '--crypto-only'];
    const raw = await run('attest', 'verify', V('tdx/dcapqvl_quote_v4.bin'), '--type', 'tdx', ...args);
    const viaKbs = await run('attest', 'verify', kbs, '--type', 'tdx', '--format', 'kbs', ...args);
    expect(viaKbs.code).toBe(0);
    expect(viaKbs.stdout).toBe(raw.stdout);

    const key = join(tmp, 'sim.pem');
    const out = join(tmp, 'sim.bin');
    const nonce = 'ab'.repeat(32);
    const rep = await run('attest', 'report', '--simulated', '--simulated-key', key, '--report-data', nonce, '-o', out);
    const fp = /--simulated-root ([0-9a-f]{64})/.exec(rep.stderr)![1]!;
    const simKbs = file('sim-te.json', encodeTeeEvidence('simulated', new Uint8Array(readFileSync(out))));
    const a = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--report-data', nonce, '--json', '--crypto-only');
    const b = await run('attest', 'verify', simKbs, '--type', 'simulated', '--format', 'kbs', '--simulated-root', fp, '--report-data', nonce, '--json', '--crypto-only');
    expect(b.code).toBe(0);
    expect(b.stdout).toBe(a.stdout);
  });

  it('JSON that does not decode: exit 1 with verified: false and the member named, in both modes', async () => {
    const policy = join(VECTORS, '../../../docs/policies/snp.json');
    const cases: [string, RegExp][] = [
      [file('not-json.json', '{"attestation_report":'), /ERR_EVIDENCE_FORMAT: .*not-json\.json is not UTF-8 JSON/],
      [file('bad-member.json', { attestation_report: {}, cert_chain: null, extra: 1 }), /ERR_EVIDENCE_FORMAT: primary_evidence\.extra is not a member/],
      [file('bad-wrap.json', { primary_evidence: {}, additional_evidence: 5 }), /ERR_EVIDENCE_FORMAT: tee-evidence\.additional_evidence must be a string/],
    ];
    for (const [f, msg] of cases) {
      const c = await run('attest', 'verify', f, '--type', 'snp', '--format', 'kbs', '--json', '--crypto-only');
      expect(c.code).toBe(1);
      expect(c.json()).toEqual({ tee: 'snp', verified: false, claims: null, policy: expect.stringMatching(/^not evaluated/), error: expect.stringMatching(msg) });
      expect(c.stderr).toMatch(/^error ERR_EVIDENCE_FORMAT: /);
      const p = await run('attest', 'verify', f, '--type', 'snp', '--format', 'kbs', '--json', '--policy', policy, '--report-data', GENOA_NONCE);
      expect(p.code).toBe(1);
      expect(p.json()).toEqual({ tee: 'snp', verified: false, claims: null, verdict: { allowed: false, reasons: [expect.stringMatching(msg)] } });
    }
  });

  it('usage: --format is raw or kbs; with kbs, --type takes the KBS tee names (az-snp-vtpm, not azure-snp)', async () => {
    const f = V('trustee/az_snp_vtpm_evidence_v1.json');
    expect((await run('attest', 'verify', f, '--type', 'azure-snp', '--format', 'kbs', '--crypto-only')).code).toBe(2);
    expect((await run('attest', 'verify', f, '--type', 'az-snp-vtpm', '--crypto-only')).code).toBe(2);
    const r = await run('attest', 'verify', f, '--type', 'snp', '--format', 'xml', '--crypto-only');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--format must be raw or kbs/);
    expect((await run('attest', 'verify', f, '--type', 'az-snp-vtpm', '--format', 'kbs', '--collateral', f, '--crypto-only')).code).toBe(2);
  });
});
