import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { verifyTdxQuote } from '../../src/attestation/verifiers/tdx.js';
import { parseTdxCollateral, type TdxCollateral } from '../../src/attestation/verifiers/tdx-collateral.js';
import { vec } from './helpers.js';
import { fuzzRuns } from '../helpers/fuzz.js';

vi.setConfig({ testTimeout: 300_000 });

// Each case is a full quote verification; FUZZ_RUNS raises the count for a long run.
const RUNS = fuzzRuns(60);
const TYPED = ['ERR_EVIDENCE_FORMAT', 'ERR_EVIDENCE_SIGNATURE', 'ERR_EVIDENCE_CHAIN'];

/** Single bit flips, byte overwrites and truncations of a DER CRL. */
function mutations(base: Uint8Array) {
  return fc.oneof(
    fc.tuple(fc.nat({ max: base.length - 1 }), fc.nat({ max: 7 })).map(([at, bit]) => {
      const c = base.slice();
      c[at]! ^= 1 << bit;
      return c;
    }),
    fc.tuple(fc.nat({ max: base.length - 1 }), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, patch]) => {
      const c = base.slice();
      c.set(patch.subarray(0, base.length - at), at);
      return c;
    }),
    fc.nat({ max: base.length - 1 }).map((n) => base.slice(0, n)),
  );
}

async function outcome(quote: Uint8Array, now: Date, collateral: TdxCollateral): Promise<string> {
  try {
    await verifyTdxQuote(quote, { now, collateral });
    return 'accepted';
  } catch (err) {
    if (err instanceof SealedTensorsError) return err.code;
    return `untyped ${(err as Error)?.constructor?.name}: ${String(err)}`;
  }
}

const SETS = {
  'dcap-qvl': {
    quote: 'tdx/dcapqvl_quote_v4.bin',
    now: new Date(1752919234 * 1000),
    collateral: () => parseTdxCollateral([{ name: 'dcapqvl', bytes: vec('tdx/dcapqvl_quote_v4_collateral.json') }]),
  },
  'go-tdx-guest': {
    quote: 'tdx/trustee_quote4_v4.bin',
    now: new Date('2023-07-01T01:00:00Z'),
    collateral: () =>
      parseTdxCollateral(
        ['gtg_tcbinfo_fmspc50806f000000.json', 'gtg_qe_identity_td_qe.json', 'gtg_pck_platform_crl.der', 'gtg_root_ca_crl.der', 'gtg_tcb_signing_issuer_chain.pem', 'gtg_pck_crl_issuer_chain.pem'].map(
          (f) => ({ name: f, bytes: vec(`tdx/${f}`) }),
        ),
      ),
  },
};

describe('mutated CRLs in TDX collateral give typed errors only (fast-check)', () => {
  for (const [name, set] of Object.entries(SETS)) {
    for (const which of [0, 1]) {
      it(`${name}: CRL #${which + 1}, ${RUNS} bit flips, overwrites and truncations are each refused with a typed error`, async () => {
        const quote = vec(set.quote);
        const base = set.collateral();
        expect(await outcome(quote, set.now, base)).toBe('accepted');
        const crl = base.crls[which]!;
        await fc.assert(
          fc.asyncProperty(mutations(crl), async (m) => {
            // An overwrite can put back the bytes that were there: that is the original CRL.
            if (Buffer.from(m).equals(Buffer.from(crl))) return;
            const c = set.collateral();
            c.crls[which] = m;
            const o = await outcome(quote, set.now, c);
            // A changed CRL is never accepted: every byte is signed or structural.
            if (!TYPED.includes(o)) throw new Error(o);
          }),
          { numRuns: RUNS },
        );
      });
    }
  }
});
