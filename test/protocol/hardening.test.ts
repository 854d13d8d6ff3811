/**
 * Review findings on the pure protocol parsers: init-data is refused (not silently dropped), only
 * the request's own members count, duplicate member names in a body are refused, and base64url
 * in a tee-pubkey must be canonical (one encoding per key, as hashed into the binding).
 */
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePublicJwk } from '../../src/protocol/jwk.js';
import { parseAttestRequest, parseJsonBody } from '../../src/protocol/messages.js';
import { fuzzRuns } from '../helpers/fuzz.js';

const ecJwk = () => {
  const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
  return { kty: 'EC', crv: 'P-256', alg: 'ECDH-ES+A256KW', x: jwk.x!, y: jwk.y! };
};
const nonce = Buffer.alloc(32, 7).toString('base64');
const PROTOCOL = expect.objectContaining({ code: 'ERR_PROTOCOL' });

describe('attestation request', () => {
  it('init-data is refused as not supported yet, not accepted and dropped', () => {
    const req = { 'runtime-data': { nonce, 'tee-pubkey': ecJwk() }, 'tee-evidence': { evidence: 'AA==' } };
    expect(() => parseAttestRequest({ ...req, 'init-data': { format: 'toml', body: 'x' } })).toThrow(PROTOCOL);
    expect(() => parseAttestRequest({ ...req, 'init-data': { format: 'toml', body: 'x' } })).toThrow(/init-data is not supported/);
    // Absent (or null, as Trustee's clients send when they have none) is fine.
    expect(parseAttestRequest({ ...req, 'init-data': null }).primaryEvidence).toEqual({ evidence: 'AA==' });
    expect(parseAttestRequest(req).primaryEvidence).toEqual({ evidence: 'AA==' });
  });

  it('an inherited primary_evidence is not the request\'s (own members only)', () => {
    const te = Object.create({ primary_evidence: { evidence: 'BB==' } }) as Record<string, unknown>;
    te['evidence'] = 'AA==';
    const r = parseAttestRequest({ 'runtime-data': { nonce, 'tee-pubkey': ecJwk() }, 'tee-evidence': te });
    expect(r.primaryEvidence).toBe(te);
  });
});

describe('JSON bodies: duplicate member names', () => {
  it('are refused at any depth, with the name', () => {
    for (const text of ['{"a":1,"a":2}', '{"x":{"b":[{"c":1,"c":1}]}}', '{"a\\u0062":1,"ab":2}', '[{"k":1},{"k":1,"k":2}]']) {
      expect(() => parseJsonBody(text, 1 << 20, 'the request body'), text).toThrow(/duplicate member/);
    }
  });

  it('objects that merely share names across levels or siblings pass, strings with braces too', () => {
    for (const text of ['{"a":{"a":1},"b":[{"a":1},{"a":2}]}', '{"s":"{\\"a\\":1,\\"a\\":2}","t":"\\\\"}', '[]', '"x"', '{}', '{"":1,"\\"":2}']) {
      expect(parseJsonBody(text, 1 << 20, 'the request body')).toEqual(JSON.parse(text));
    }
  });

  it('agrees with a reference check on generated JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.boolean(), (v, dup) => {
        let text = JSON.stringify(v);
        if (dup && text.startsWith('{') && text.length > 2) text = `{"dup":0,"dup":1,${text.slice(1)}`;
        const hasDup = dup && text.startsWith('{"dup":0,"dup":1');
        if (hasDup) expect(() => parseJsonBody(text, 1 << 24, 'x')).toThrow(/duplicate member/);
        else expect(parseJsonBody(text, 1 << 24, 'x')).toEqual(JSON.parse(text));
      }),
      { numRuns: fuzzRuns(300) },
    );
  });
});

describe('tee-pubkey base64url', () => {
  it('non-canonical encodings of x, y, n, e (nonzero padding bits) are refused', () => {
    const k = ecJwk();
    // The last of 43 characters carries 4 padding bits: flip one and the bytes stay the same.
    const alias = (s: string): string => {
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const last = alphabet.indexOf(s.at(-1)!);
      return s.slice(0, -1) + alphabet[last ^ 1];
    };
    expect(Buffer.from(alias(k.x), 'base64url')).toEqual(Buffer.from(k.x, 'base64url'));
    expect(() => parsePublicJwk({ ...k, x: alias(k.x) })).toThrow(/canonical/);
    expect(() => parsePublicJwk({ ...k, y: alias(k.y) })).toThrow(/canonical/);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    // 256 bytes: 342 characters, the last with 4 padding bits.
    expect(() => parsePublicJwk({ kty: 'RSA', n: alias(rsa.n!), e: rsa.e })).toThrow(/canonical/);
    expect(parsePublicJwk(k)).toMatchObject({ x: k.x });
  });
});
