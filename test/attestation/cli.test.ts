import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { detectTee } from '../../src/attestation/providers/detect.js';
import { VECTORS, flip, vec } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'st-attest-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const V = (p: string) => join(VECTORS, p);

async function run(...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { code, stdout, stderr, json: () => JSON.parse(stdout) as Record<string, unknown> };
}

describe('attest CLI without vectors', () => {
  it('attest report fails with exit 3 and advice where no TEE is found', async () => {
    if (await detectTee()) return void console.warn('this machine has a TEE interface; the no-TEE case is not tested here');
    const r = await run('attest', 'report');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^error ERR_NO_TEE: no TEE found.*--simulated/);
  });

  it('simulated evidence round-trips: report --simulated, then verify with its root; refused by the default policy', async () => {
    const key = join(tmp, 'sim-root.pem');
    const out = join(tmp, 'sim.bin');
    const r = await run('attest', 'report', '--simulated', '--simulated-key', key, '--report-data', 'c0ffee', '-o', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote SIMULATED simulated evidence/);
    const fp = /--simulated-root ([0-9a-f]{64})/.exec(r.stderr)![1]!;
    // The key file is reused: a second report has the same root.
    const again = await run('attest', 'report', '--simulated', '--simulated-key', key, '--report-data', 'c0ffee');
    expect(again.json()).toMatchObject({ tee: 'simulated', simulated: true, simulatedRoot: fp });
    const v = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--json', '--report-data', 'c0ffee');
    expect(v.code).toBe(0);
    const j = v.json();
    expect(Object.keys(j)).toEqual(['tee', 'verified', 'claims', 'verdict']);
    expect(j).toMatchObject({ tee: 'simulated', verified: true, claims: { simulated: true, reportData: `c0ffee${'00'.repeat(61)}` }, verdict: { allowed: false } });
    const policy = join(tmp, 'allow-sim.json');
    writeFileSync(policy, JSON.stringify({ version: 1, allowSimulated: true, tees: { simulated: { requireReportData: true } } }));
    const p = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--policy', policy, '--report-data', 'c0ffee', '--json');
    expect(p.code).toBe(0);
    expect(p.json().verdict).toEqual({ allowed: true, reasons: [] });
    const wrongNonce = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--policy', policy, '--report-data', 'c0ffef');
    expect(wrongNonce.code).toBe(1);
    expect(wrongNonce.stdout).toMatch(/FAIL policy\.expectedReportData/);
    const untrusted = await run('attest', 'verify', out, '--type', 'simulated', '--json');
    expect(untrusted.code).toBe(1);
    expect(untrusted.json()).toMatchObject({ verified: false, claims: null, verdict: { allowed: false } });
  });

  it('usage errors exit 2; missing files exit 3', async () => {
    expect((await run('attest', 'verify', 'x', '--type', 'sgx')).code).toBe(2);
    expect((await run('attest', 'verify', 'x')).code).toBe(2);
    expect((await run('attest', 'verify', 'x', '--type', 'snp', '--at', 'yesterday')).code).toBe(2);
    expect((await run('attest', 'verify', 'x', '--type', 'snp', '--collateral', 'c.json')).code).toBe(2);
    expect((await run('attest', 'report', '--report-data', 'xyz')).code).toBe(2);
    expect((await run('attest', 'report', '--report-data', 'aa'.repeat(65))).code).toBe(2);
    const missing = await run('attest', 'verify', join(tmp, 'nope.bin'), '--type', 'snp');
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/^error ERR_NOT_FOUND: evidence .*nope\.bin does not exist/);
  });
});

describe('attest verify on real vectors', () => {
  it('SNP Genoa --json: the issue\'s shape, exit 0', async () => {
    const r = await run('attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), '--at', '2026-01-01T00:00:00Z', '--json');
    expect(r.code).toBe(0);
    const j = r.json();
    expect(Object.keys(j)).toEqual(['tee', 'verified', 'claims', 'verdict']);
    expect(Object.keys(j.verdict as object)).toEqual(['allowed', 'reasons']);
    expect(j).toMatchObject({
      tee: 'snp',
      verified: true,
      claims: { measurement: 'f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae', debug: false, tcb: { snp: 23, microcode: 84 } },
      verdict: { allowed: true, reasons: [] },
    });
  });

  it('--certs takes a folder and concatenated PEM; Milan debug report: exit 0 without --policy, 1 with one', async () => {
    const dir = join(tmp, 'milan-certs');
    mkdirSync(dir, { recursive: true });
    copyFileSync(V('sev-snp/gsg_milan_vcek.der'), join(dir, 'vcek.der'));
    copyFileSync(V('sev-snp/ask_ark_milan.pem'), join(dir, 'cert_chain.pem'));
    writeFileSync(join(dir, 'README.txt'), 'not a certificate');
    const args = ['attest', 'verify', V('sev-snp/gsg_milan_report.bin'), '--type', 'snp', '--certs', dir, '--at', '2022-09-24T01:00:00Z', '--json'];
    const r = await run(...args);
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ verified: true, claims: { debug: true }, verdict: { allowed: false, reasons: [expect.stringMatching(/^policy\.debug/)] } });
    const policy = join(tmp, 'snp-policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, tees: { snp: { minTcb: { snp: 5 } } } }));
    const denied = await run(...args, '--policy', policy);
    expect(denied.code).toBe(1);
    const human = await run('attest', 'verify', V('sev-snp/gsg_milan_report.bin'), '--type', 'snp', '--certs', dir, '--at', '2022-09-24T01:00:00Z', '--policy', policy);
    expect(human.stdout).toMatch(/ok   snp\.signature/);
    expect(human.stdout).toMatch(/FAIL policy\.debug/);
    expect(human.stdout).toMatch(/ok   policy\.minTcb\.snp: snp 5 >= 5/);
  });

  it('a tampered report exits 1 with verified: false; an expired chain exits 1', async () => {
    const bad = join(tmp, 'bad.bin');
    writeFileSync(bad, flip(vec('sev-snp/azure_genoa_report.bin'), 0x90, 0));
    const r = await run('attest', 'verify', bad, '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), '--json');
    expect(r.code).toBe(1);
    expect(r.json()).toEqual({ tee: 'snp', verified: false, claims: null, verdict: { allowed: false, reasons: [expect.stringMatching(/^ERR_EVIDENCE_SIGNATURE: /)] } });
    expect(r.stderr).toMatch(/^error ERR_EVIDENCE_SIGNATURE/);
    const expired = await run('attest', 'verify', V('sev-snp/trustee_milan_vlek_report.bin'), '--type', 'snp', '--certs', V('sev-snp/trustee_milan_vlek.der'), '--certs', V('sev-snp/asvk_ark_milan_vlek.pem'));
    expect(expired.code).toBe(1);
    expect(expired.stderr).toMatch(/ERR_EVIDENCE_CHAIN: .*not valid at/);
  });

  it('TDX with collateral (both forms), Nitro at its time, Azure and NVIDIA', async () => {
    const t1 = await run('attest', 'verify', V('tdx/dcapqvl_quote_v4.bin'), '--type', 'tdx', '--collateral', V('tdx/dcapqvl_quote_v4_collateral.json'), '--at', '2025-07-19T10:00:34Z', '--json');
    expect(t1.code).toBe(0);
    expect(t1.json()).toMatchObject({ tee: 'tdx', verified: true, claims: { tcb: { tcbStatus: 'UpToDate' } }, verdict: { allowed: true } });
    const gtg = ['gtg_tcbinfo_fmspc50806f000000.json', 'gtg_qe_identity_td_qe.json', 'gtg_pck_platform_crl.der', 'gtg_root_ca_crl.der', 'gtg_tcb_signing_issuer_chain.pem', 'gtg_pck_crl_issuer_chain.pem'];
    const t2 = await run('attest', 'verify', V('tdx/trustee_quote4_v4.bin'), '--type', 'tdx', ...gtg.flatMap((f) => ['--collateral', V(`tdx/${f}`)]), '--at', '2023-07-01T01:00:00Z', '--json');
    expect(t2.code).toBe(0);
    expect(t2.json()).toMatchObject({ claims: { debug: true, tcb: { tcbStatus: 'UpToDate' } }, verdict: { allowed: false } });
    const n = await run('attest', 'verify', V('nitro/evervault_doc_20221013.cose.bin'), '--type', 'nitro', '--at', '2022-10-13T08:58:02.136Z', '--json');
    expect(n.code).toBe(0);
    expect(n.json()).toMatchObject({ tee: 'nitro', claims: { measurements: { pcr0: expect.stringMatching(/^f4d48b81/) }, issuedAt: '2022-10-13T08:58:02.136Z' } });
    const nOld = await run('attest', 'verify', V('nitro/evervault_doc_20221013.cose.bin'), '--type', 'nitro');
    expect(nOld.code).toBe(1);
    const a = await run('attest', 'verify', V('azure-vtpm/az_snp_genoa_evidence.json'), '--type', 'azure-snp', '--certs', V('azure-vtpm/ask_ark_genoa.pem'), '--at', '2026-01-01T00:00:00Z', '--json');
    expect(a.code).toBe(0);
    expect(a.json()).toMatchObject({ tee: 'azure-snp', claims: { reportData: expect.stringMatching(/^0218488b/) } });
    const g = await run('attest', 'verify', V('nvidia/hopper_report_1.bin'), '--type', 'nvidia', '--certs', V('nvidia/hopper_cert_chain_1.pem'), '--json');
    expect(g.code).toBe(0);
    expect(g.json()).toMatchObject({ tee: 'nvidia', claims: { reportData: '931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb' } });
  });

  it('an invalid policy file is refused with every problem named', async () => {
    const policy = join(tmp, 'bad-policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, tees: { snp: { allowDebug: 'yes' } } }));
    const r = await run('attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--policy', policy);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error ERR_POLICY: invalid policy: tees\.snp\.allowDebug: must be true or false/);
  });
});
