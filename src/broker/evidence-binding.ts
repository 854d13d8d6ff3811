/**
 * Where each kind of evidence carries the KBS binding, and the check that it is this run's. The
 * binding value is Trustee's (src/protocol/binding.ts); the field that must hold it differs:
 * - snp, tdx, simulated: the 64-byte report data, SHA-384(JCS(runtime data)) zero-padded, as
 *   Trustee pads for SEV-SNP and TDX;
 * - az-snp-vtpm: the vTPM quote's nonce (TPMS_ATTEST.extraData) is exactly the 48-byte SHA-384
 *   digest, not padded (Trustee's az_snp_vtpm verify_tpm_nonce); for evidence version 2 the HCL
 *   runtime data's `user-data` must start with the same digest (Trustee's verify_user_data);
 * - nitro (our extension): the attestation document's `nonce` is exactly the 64-byte value
 *   (docs/PROTOCOL.md); `user_data` and `public_key` are not read.
 * The value returned as `expected` is what the claims' reportData equals when the check passes: it
 * is kept in the session so a key's policy judges the same value at /resource.
 */
import { constantTimeEqual } from '../bytes.js';
import { reportDataMatches } from '../attestation/policy/evaluate.js';
import type { Check, Claims } from '../attestation/types.js';
import type { DecodedEvidence } from '../protocol/evidence.js';

/** SHA-384 output: the unpadded binding the vTPM quote's nonce holds. */
const SHA384_BYTES = 48;
const RUNTIME = 'SHA-384(JCS({additional-evidence, nonce, tee-pubkey}))';
const UNBOUND = 'the evidence is not bound to this session (stale, replayed, or for another key)';

function hexBytes(h: string | undefined): Uint8Array | undefined {
  if (typeof h !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(h)) return undefined;
  return new Uint8Array(Buffer.from(h, 'hex'));
}

/** Exact equality, in constant time for equal lengths (the lengths are public). */
function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && constantTimeEqual(a, b);
}

export interface BindingCheck {
  checks: Check[];
  /** What the claims' reportData is when bound: the value a key's policy is evaluated against. */
  expected: Uint8Array;
}

/** The binding checks for primary evidence of `decoded.type`; `binding` is kbsReportData(...) (64 bytes). */
export function checkPrimaryBinding(decoded: Pick<DecodedEvidence, 'type' | 'form'>, claims: Claims, binding: Uint8Array): BindingCheck {
  switch (decoded.type) {
    case 'azure-snp': {
      const expected = binding.subarray(0, SHA384_BYTES);
      const ok = sameBytes(hexBytes(claims.reportData), expected);
      const checks: Check[] = [
        {
          check: 'broker.reportData',
          ok,
          detail: ok ? `vTPM quote nonce is ${RUNTIME} of this challenge and key (48 bytes, as Trustee)` : `vTPM quote nonce is not ${RUNTIME} of this challenge and key (48 bytes): ${UNBOUND}`,
        },
      ];
      if (/\bv2$/.test(decoded.form)) {
        // Version 2 also carries the binding in the HCL runtime data, under the SNP report's signature.
        const user = hexBytes(claims.platform.userData?.toLowerCase());
        const okUser = user !== undefined && user.length >= SHA384_BYTES && sameBytes(user.subarray(0, SHA384_BYTES), expected) && user.subarray(SHA384_BYTES).every((b) => b === 0);
        checks.push({
          check: 'broker.userData',
          ok: okUser,
          detail: okUser ? `HCL runtime data user-data is ${RUNTIME}, zero-padded` : `HCL runtime data user-data is not ${RUNTIME} (zero-padded) of this challenge and key: ${UNBOUND}`,
        });
      }
      return { checks, expected: new Uint8Array(expected) };
    }
    case 'nitro': {
      const ok = sameBytes(hexBytes(claims.platform.nonce), binding);
      return {
        checks: [
          {
            check: 'broker.reportData',
            ok,
            detail: ok ? `attestation document nonce is ${RUNTIME} of this challenge and key` : `attestation document nonce is not ${RUNTIME} of this challenge and key (64 bytes): ${UNBOUND}`,
          },
        ],
        expected: binding,
      };
    }
    default: {
      const ok = reportDataMatches(claims.reportData, binding);
      return {
        checks: [
          {
            check: 'broker.reportData',
            ok,
            detail: ok ? `report data is ${RUNTIME} of this challenge and key` : `report data is not ${RUNTIME} of this challenge and key: ${UNBOUND}`,
          },
        ],
        expected: binding,
      };
    }
  }
}

/** A device's binding: its SPDM requester nonce is kbsDeviceNonce(nonce, tee-pubkey), exactly. */
export function checkDeviceBinding(claims: Claims, deviceNonce: Uint8Array, label: string): Check {
  const ok = sameBytes(hexBytes(claims.reportData), deviceNonce);
  return {
    check: `broker.${label}.nonce`,
    ok,
    detail: ok
      ? `${label} SPDM requester nonce is SHA-384(JCS({nonce, tee-pubkey})) of this challenge and key, truncated to 32 bytes`
      : `${label} SPDM requester nonce is not SHA-384(JCS({nonce, tee-pubkey})) of this challenge and key, truncated to 32 bytes: the device evidence is not bound to this session (stale, replayed, or for another key)`,
  };
}
