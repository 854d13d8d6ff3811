import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { detectTee } from '../../src/attestation/providers/detect.js';
import { VECTORS, flip, vec } from './helpers.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('st-attest-cli-');
const V = (p: string) => join(VECTORS, p);
const GENOA_MEASUREMENT = 'f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae';
/** The Genoa report's report data (SHA-256 of Azure's runtime data), standing in for the nonce a broker sent. */
const GENOA_NONCE = 'b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f';

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

  it('simulated evidence round-trips: report --simulated, then verify with its root; a policy must allow simulated evidence', async () => {
    const key = join(tmp, 'sim-root.pem');
    const out = join(tmp, 'sim.bin');
    const nonce = 'c0ffee'.repeat(6);
    const r = await run('attest', 'report', '--simulated', '--simulated-key', key, '--report-data', nonce, '-o', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote SIMULATED simulated evidence/);
    const fp = /--simulated-root ([0-9a-f]{64})/.exec(r.stderr)![1]!;
    // The key file is reused: a second report has the same root.
    const again = await run('attest', 'report', '--simulated', '--simulated-key', key, '--report-data', nonce);
    expect(again.json()).toMatchObject({ tee: 'simulated', simulated: true, simulatedRoot: fp });
    const v = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--json', '--crypto-only', '--report-data', nonce);
    expect(v.code).toBe(0);
    const j = v.json();
    expect(Object.keys(j)).toEqual(['tee', 'verified', 'claims', 'policy', 'reportData']);
    expect(j).toMatchObject({ tee: 'simulated', verified: true, claims: { simulated: true, reportData: `${nonce}${'00'.repeat(46)}` }, policy: expect.stringMatching(/^not evaluated \(--crypto-only\)/) });
    const measurement = (j.claims as { measurement: string }).measurement;
    const noSim = join(tmp, 'no-sim.json');
    writeFileSync(noSim, JSON.stringify({ version: 1, tees: { snp: { measurements: { measurement: [measurement] } } } }));
    const refused = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--policy', noSim, '--report-data', nonce, '--json');
    expect(refused.code).toBe(1);
    expect(refused.json().verdict).toMatchObject({ allowed: false, reasons: [expect.stringMatching(/^policy\.simulated: /), expect.stringMatching(/^policy\.tee: /)] });
    const policy = join(tmp, 'allow-sim.json');
    writeFileSync(policy, JSON.stringify({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [measurement] } } } }));
    const p = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--policy', policy, '--report-data', nonce, '--json');
    expect(p.code).toBe(0);
    expect(p.json().verdict).toEqual({ allowed: true, reasons: [] });
    const wrongNonce = await run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--policy', policy, '--report-data', `${nonce.slice(0, -1)}f`);
    expect(wrongNonce.code).toBe(1);
    expect(wrongNonce.stdout).toMatch(/FAIL policy\.expectedReportData/);
    const untrusted = await run('attest', 'verify', out, '--type', 'simulated', '--crypto-only', '--json');
    expect(untrusted.code).toBe(1);
    expect(untrusted.json()).toMatchObject({ verified: false, claims: null, policy: expect.stringMatching(/^not evaluated/) });
  });

  it('usage errors exit 2; missing files exit 3', async () => {
    expect((await run('attest', 'verify', 'x', '--type', 'sgx')).code).toBe(2);
    expect((await run('attest', 'verify', 'x')).code).toBe(2);
    expect((await run('attest', 'verify', 'x', '--type', 'snp', '--at', 'yesterday')).code).toBe(2);
    expect((await run('attest', 'verify', 'x', '--type', 'snp', '--collateral', 'c.json')).code).toBe(2);
    expect((await run('attest', 'report', '--report-data', 'xyz')).code).toBe(2);
    expect((await run('attest', 'report', '--report-data', 'aa'.repeat(65))).code).toBe(2);
    const missing = await run('attest', 'verify', join(tmp, 'nope.bin'), '--type', 'snp', '--crypto-only');
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/^error ERR_NOT_FOUND: evidence .*nope\.bin does not exist/);
  });
});

describe(`attest verify on real vectors`, () => {
  it('SNP Genoa --json: the issue\'s shape, exit 0 when the policy allows it', async () => {
    const policy = join(tmp, 'genoa-policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, tees: { snp: { measurements: { measurement: [GENOA_MEASUREMENT] } } } }));
    const r = await run('attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), '--at', '2026-01-01T00:00:00Z', '--json', '--policy', policy, '--report-data', GENOA_NONCE);
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

  it('--certs takes a folder and concatenated PEM; Milan debug report: exit 0 with --crypto-only, 1 with a policy', async () => {
    const dir = join(tmp, 'milan-certs');
    mkdirSync(dir, { recursive: true });
    copyFileSync(V('sev-snp/gsg_milan_vcek.der'), join(dir, 'vcek.der'));
    copyFileSync(V('sev-snp/ask_ark_milan.pem'), join(dir, 'cert_chain.pem'));
    writeFileSync(join(dir, 'README.txt'), 'not a certificate');
    const args = ['attest', 'verify', V('sev-snp/gsg_milan_report.bin'), '--type', 'snp', '--certs', dir, '--at', '2022-09-24T01:00:00Z', '--json'];
    const r = await run(...args, '--crypto-only');
    expect(r.code).toBe(0);
    expect(r.json()).toMatchObject({ verified: true, claims: { debug: true }, policy: expect.stringMatching(/^not evaluated/) });
    const policy = join(tmp, 'snp-policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, tees: { snp: { minTcb: { snp: 5 }, platform: { product: ['Milan'] } } } }));
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
    const r = await run('attest', 'verify', bad, '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), '--json', '--crypto-only');
    expect(r.code).toBe(1);
    expect(r.json()).toEqual({ tee: 'snp', verified: false, claims: null, policy: expect.stringMatching(/^not evaluated/), error: expect.stringMatching(/^ERR_EVIDENCE_SIGNATURE: /) });
    expect(r.stderr).toMatch(/^error ERR_EVIDENCE_SIGNATURE/);
    const expired = await run('attest', 'verify', V('sev-snp/trustee_milan_vlek_report.bin'), '--type', 'snp', '--certs', V('sev-snp/trustee_milan_vlek.der'), '--certs', V('sev-snp/asvk_ark_milan_vlek.pem'), '--crypto-only');
    expect(expired.code).toBe(1);
    expect(expired.stderr).toMatch(/ERR_EVIDENCE_CHAIN: .*not valid at/);
  });

  it('with --policy too: a tampered report exits 1, verified: false and a denying verdict', async () => {
    const bad = join(tmp, 'bad-policy.bin');
    writeFileSync(bad, flip(vec('sev-snp/azure_genoa_report.bin'), 0x90, 0));
    const certsArgs = ['--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), '--at', '2026-01-01T00:00:00Z'];
    const policy = join(VECTORS, '../../../docs/policies/snp.json');
    const good = await run('attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', ...certsArgs, '--policy', policy, '--report-data', GENOA_NONCE);
    expect(good.code).toBe(0);
    for (const json of [[], ['--json']]) {
      const r = await run('attest', 'verify', bad, '--type', 'snp', ...certsArgs, '--policy', policy, '--report-data', GENOA_NONCE, ...json);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error ERR_EVIDENCE_SIGNATURE/);
      if (json.length) expect(r.json()).toMatchObject({ tee: 'snp', verified: false, claims: null, verdict: { allowed: false } });
    }
  });

  it('--crypto-only: TDX with collateral (both forms), Nitro at its time, Azure and NVIDIA', async () => {
    const t1 = await run('attest', 'verify', V('tdx/dcapqvl_quote_v4.bin'), '--type', 'tdx', '--collateral', V('tdx/dcapqvl_quote_v4_collateral.json'), '--at', '2025-07-19T10:00:34Z', '--json', '--crypto-only');
    expect(t1.code).toBe(0);
    expect(t1.json()).toMatchObject({ tee: 'tdx', verified: true, claims: { tcb: { tcbStatus: 'UpToDate' } } });
    const gtg = ['gtg_tcbinfo_fmspc50806f000000.json', 'gtg_qe_identity_td_qe.json', 'gtg_pck_platform_crl.der', 'gtg_root_ca_crl.der', 'gtg_tcb_signing_issuer_chain.pem', 'gtg_pck_crl_issuer_chain.pem'];
    const t2 = await run('attest', 'verify', V('tdx/trustee_quote4_v4.bin'), '--type', 'tdx', ...gtg.flatMap((f) => ['--collateral', V(`tdx/${f}`)]), '--at', '2023-07-01T01:00:00Z', '--json', '--crypto-only');
    expect(t2.code).toBe(0);
    expect(t2.json()).toMatchObject({ claims: { debug: true, tcb: { tcbStatus: 'UpToDate' } } });
    const n = await run('attest', 'verify', V('nitro/evervault_doc_20221013.cose.bin'), '--type', 'nitro', '--at', '2022-10-13T08:58:02.136Z', '--json', '--crypto-only');
    expect(n.code).toBe(0);
    expect(n.json()).toMatchObject({ tee: 'nitro', claims: { measurements: { pcr0: expect.stringMatching(/^f4d48b81/) }, issuedAt: '2022-10-13T08:58:02.136Z' } });
    const nOld = await run('attest', 'verify', V('nitro/evervault_doc_20221013.cose.bin'), '--type', 'nitro', '--crypto-only');
    expect(nOld.code).toBe(1);
    const a = await run('attest', 'verify', V('azure-vtpm/az_snp_genoa_evidence.json'), '--type', 'azure-snp', '--certs', V('azure-vtpm/ask_ark_genoa.pem'), '--at', '2026-01-01T00:00:00Z', '--json', '--crypto-only');
    expect(a.code).toBe(0);
    expect(a.json()).toMatchObject({ tee: 'azure-snp', claims: { reportData: expect.stringMatching(/^0218488b/) } });
    const g = await run('attest', 'verify', V('nvidia/hopper_report_1.bin'), '--type', 'nvidia', '--certs', V('nvidia/hopper_cert_chain_1.pem'), '--json', '--crypto-only');
    expect(g.code).toBe(0);
    expect(g.json()).toMatchObject({ tee: 'nvidia', claims: { reportData: '931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb', debug: true, debugAttested: false } });
    const gHuman = await run('attest', 'verify', V('nvidia/hopper_report_1.bin'), '--type', 'nvidia', '--certs', V('nvidia/hopper_cert_chain_1.pem'), '--crypto-only');
    expect(gHuman.stdout).toMatch(/^debug not attested by the evidence \(assumed true\)$/m);
  });

  it('an invalid policy file is refused with every problem named', async () => {
    const policy = join(tmp, 'bad-policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, tees: { snp: { allowDebug: 'yes' } } }));
    const r = await run('attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--policy', policy);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error ERR_POLICY: invalid policy: tees\.snp\.allowDebug: must be true or false/);
  });

  it('a policy file that does not parse or validate is a usage error (exit 2), with or without --json; a denial stays exit 1', async () => {
    const files: [string, string, RegExp][] = [
      ['unparseable.json', '{ "version": 1, tees', /is not valid JSON/],
      ['duplicate.json', '{ "version": 1, "version": 1, "tees": {} }', /duplicate key "version"/],
      ['invalid.json', JSON.stringify({ version: 2, tees: {} }), /invalid policy/],
    ];
    const args = [V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), '--at', '2026-01-01T00:00:00Z', '--report-data', GENOA_NONCE];
    for (const [name, text, why] of files) {
      const policy = join(tmp, name);
      writeFileSync(policy, text);
      for (const json of [[], ['--json']]) {
        const r = await run('attest', 'verify', ...args, '--policy', policy, ...json);
        expect(r.code, name).toBe(2);
        expect(r.stderr, name).toMatch(/^error ERR_POLICY: /);
        expect(r.stderr, name).toMatch(why);
      }
    }
    const strict = join(tmp, 'other-measurement.json');
    writeFileSync(strict, JSON.stringify({ version: 1, tees: { snp: { measurements: { measurement: ['11'.repeat(48)] } } } }));
    expect((await run('attest', 'verify', ...args, '--policy', strict)).code).toBe(1);
  });
});

describe('attest verify: no implicit policy, every denial exits 1, --report-data always enforced', () => {
  it('--crypto-only --report-data: shorter than 16 bytes or all zero is a usage error (exit 2), as in policy mode', async () => {
    // Evidence whose report data is all zeros: "00" used to "match" it.
    const key = join(tmp, 'sim-zero-root.pem');
    const out = join(tmp, 'sim-zero.bin');
    const r = await run('attest', 'report', '--simulated', '--simulated-key', key, '--report-data', '00', '-o', out);
    expect(r.code).toBe(0);
    const fp = /--simulated-root ([0-9a-f]{64})/.exec(r.stderr)![1]!;
    const verify = (rd: string) => run('attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp, '--crypto-only', '--report-data', rd, '--json');
    for (const [rd, why] of [['00', /got 1 byte\(s\), all zero/], ['00'.repeat(64), /got 64 byte\(s\), all zero/], ['ab'.repeat(15), /got 15 byte\(s\)\)/]] as const) {
      const v = await verify(rd);
      expect(v.code, rd).toBe(2);
      expect(v.stdout, rd).toBe('');
      expect(v.stderr, rd).toMatch(/^error ERR_INVALID_ARGUMENT: --report-data must be the fresh nonce you sent, at least 16 bytes and not all zero/);
      expect(v.stderr, rd).toMatch(why);
    }
    // 16 bytes, not all zero: checked, and this evidence does not hold them.
    const other = await verify(`01${'00'.repeat(15)}`);
    expect(other.code).toBe(1);
    expect(other.json()).toMatchObject({ verified: true, reportData: 'does NOT match --report-data' });
  });

  it('needs --policy or --crypto-only, not both (usage, exit 2)', async () => {
    const none = await run('attest', 'verify', 'x.bin', '--type', 'snp');
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^error ERR_INVALID_ARGUMENT: attest verify needs --policy FILE .* or --crypto-only/);
    const both = await run('attest', 'verify', 'x.bin', '--type', 'snp', '--crypto-only', '--policy', 'p.json');
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--crypto-only and --policy exclude each other/);
  });

  it('a folder or a FIFO as evidence or policy is a typed error (exit 2), and a FIFO is not waited on', async () => {
    const dir = join(tmp, 'a-folder');
    mkdirSync(dir, { recursive: true });
    const folder = await run('attest', 'verify', dir, '--type', 'snp', '--crypto-only');
    expect(folder.code).toBe(2);
    expect(folder.stderr).toMatch(/^error ERR_INVALID_ARGUMENT: evidence .*a-folder is a folder; pass a regular file/);
    const policyFolder = await run('attest', 'verify', dir, '--type', 'snp', '--policy', dir);
    expect(policyFolder.stderr).toMatch(/^error ERR_INVALID_ARGUMENT: policy .*a-folder is a folder/);
    const fifo = join(tmp, 'a-fifo');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      return void console.warn('mkfifo is not available here; the FIFO case is not tested');
    }
    const f = await run('attest', 'verify', fifo, '--type', 'snp', '--crypto-only');
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(/^error ERR_INVALID_ARGUMENT: evidence .*a-fifo is a FIFO/);
  });

  it('simulated evidence: a policy denial exits 1, also without --report-data; --crypto-only compares --report-data and says no policy was evaluated', async () => {
    const key = join(tmp, 'deny-root.pem');
    const out = join(tmp, 'deny.bin');
    const nonce = '5a'.repeat(32);
    const r = await run('attest', 'report', '--simulated', '--simulated-key', key, '--report-data', nonce, '-o', out);
    const fp = /--simulated-root ([0-9a-f]{64})/.exec(r.stderr)![1]!;
    const base = ['attest', 'verify', out, '--type', 'simulated', '--simulated-root', fp];
    const policy = join(tmp, 'deny-policy.json');
    writeFileSync(policy, JSON.stringify({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: ['00'.repeat(48)] } } } }));
    // The measurement is not allowed: denied, exit 1 (the old CLI exited 0 whenever the verdict was not enforced).
    const denied = await run(...base, '--policy', policy, '--report-data', nonce);
    expect(denied.code).toBe(1);
    expect(denied.stdout).toMatch(/DENIED/);
    const c = (await run(...base, '--crypto-only', '--json')).json().claims as { measurement: string };
    writeFileSync(policy, JSON.stringify({ version: 1, allowSimulated: true, tees: { simulated: { measurements: { measurement: [c.measurement] } } } }));
    expect((await run(...base, '--policy', policy, '--report-data', nonce)).code).toBe(0);
    const noNonce = await run(...base, '--policy', policy, '--json');
    expect(noNonce.code).toBe(1);
    expect(noNonce.json().verdict).toMatchObject({ allowed: false, reasons: [expect.stringMatching(/^policy\.expectedReportData: no expected report data/)] });
    // --crypto-only: exit 0 when signatures verify and --report-data (if any) matches; 1 when it does not.
    const ok = await run(...base, '--crypto-only', '--report-data', nonce);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/ok   reportData: equals --report-data/);
    expect(ok.stdout).toMatch(/^policy: not evaluated \(--crypto-only\)/m);
    const wrong = await run(...base, '--crypto-only', '--report-data', '5b'.repeat(32), '--json');
    expect(wrong.code).toBe(1);
    expect(wrong.json()).toMatchObject({ verified: true, policy: expect.stringMatching(/^not evaluated \(--crypto-only\)/), reportData: 'does NOT match --report-data' });
  });

  it('real SNP: a wrong --report-data exits 1 with a policy that otherwise allows, and with --crypto-only', async () => {
    const policy = join(tmp, 'genoa-rd.json');
    writeFileSync(policy, JSON.stringify({ version: 1, tees: { snp: { measurements: { measurement: [GENOA_MEASUREMENT] } } } }));
    const base = ['attest', 'verify', V('sev-snp/azure_genoa_report.bin'), '--type', 'snp', '--certs', V('sev-snp/azure_genoa_vcek.pem'), '--certs', V('sev-snp/ask_ark_genoa.pem'), '--at', '2026-01-01T00:00:00Z'];
    const wrong = `${GENOA_NONCE.slice(0, -2)}00`;
    const p = await run(...base, '--policy', policy, '--report-data', wrong);
    expect(p.code).toBe(1);
    expect(p.stdout).toMatch(/FAIL policy\.expectedReportData: .*stale or replayed/);
    expect((await run(...base, '--crypto-only', '--report-data', wrong)).code).toBe(1);
    expect((await run(...base, '--crypto-only', '--report-data', GENOA_NONCE)).code).toBe(0);
  });
});
