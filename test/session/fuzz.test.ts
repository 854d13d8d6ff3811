// What a broker sends the session (challenge, token, released JWE), fuzzed through a real socket:
// every bad answer ends in a typed error, and nothing (ephemeral key, key handle) is kept.
import type { ServerResponse } from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SealedTensorsError } from '../../src/errors.js';
import { SimulatedTee } from '../../src/attestation/providers/simulated.js';
import { EnclaveSession } from '../../src/session/enclave-session.js';
import { FakeKbs, json } from './fake-kbs.js';
import { handles, made } from './ephemeral-double.js';
import { lockedBytes, sealedFile } from './setup.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-double.js'));

const tee = new SimulatedTee();
const dir = tempDir();
let kbs: FakeKbs;
beforeAll(async () => {
  const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
  kbs = await FakeKbs.start({ keys: { k1: { key: TEST_KEY, models: [model.binding] } } });
});
afterAll(async () => {
  await kbs.close();
});

const b64url = fc.stringMatching(/^[A-Za-z0-9_-]{0,80}$/);
const jweLike = fc.record(
  { protected: b64url, encrypted_key: b64url, iv: b64url, ciphertext: b64url, tag: b64url, aad: b64url },
  { requiredKeys: [] },
);
const body = fc.oneof(
  fc.json().map((text) => Buffer.from(text)),
  jweLike.map((o) => Buffer.from(JSON.stringify(o))),
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
);

async function outcome(): Promise<string> {
  try {
    const s = await EnclaveSession.establish({ broker: kbs.url, allowPlainHttpOnLoopback: true, provider: tee, keys: ['k1'], timeoutMs: 5000 });
    s.close();
    return 'granted';
  } catch (err) {
    if (err instanceof SealedTensorsError) return err.code;
    throw err;
  } finally {
    expect(made.every((e) => e.released)).toBe(true);
    expect(handles.every((h) => h.released)).toBe(true);
  }
}

/** Whether two base64url texts (dot-separated segments, as JWS) decode to the same bytes. */
function sameDecoding(a: string, b: string): boolean {
  const sa = a.split('.');
  const sb = b.split('.');
  return sa.length === sb.length && sa.every((x, i) => /^[\w-]*$/.test(sb[i]!) && Buffer.from(x, 'base64url').equals(Buffer.from(sb[i]!, 'base64url')));
}

function answer(res: ServerResponse, bytes: Buffer, cookie = false): void {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length, ...(cookie ? { 'set-cookie': 'kbs-session-id=fuzz' } : {}) });
  res.end(bytes);
}

describe('fuzzed broker answers', () => {
  it('a challenge, token or resource that is not what the protocol says is a typed error, nothing kept', async () => {
    const baseline = lockedBytes();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('auth', 'attest', 'resource') as fc.Arbitrary<'auth' | 'attest' | 'resource'>, body, async (step, bytes) => {
        for (const k of ['auth', 'attest', 'resource'] as const) delete kbs.override[k];
        kbs.override[step] = (_req, res) => answer(res, bytes, step === 'auth');
        expect(await outcome()).toMatch(/^ERR_/);
      }),
      { numRuns: fuzzRuns(60) },
    );
    expect(lockedBytes()).toBe(baseline);
  });

  it('a genuine release or token with one character changed is refused', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('attest', 'resource') as fc.Arbitrary<'attest' | 'resource'>, fc.nat(), fc.constantFrom('A', 'B', '_', '-', 'z'), async (step, at, ch) => {
        delete kbs.override.attest;
        delete kbs.override.resource;
        let changed = true;
        kbs.override[step] = async (req, res, raw) => {
          const captured: { value?: Record<string, string>; headers?: Record<string, string> } = {};
          const fake = {
            writeHead: (_s: number, h: Record<string, string>) => ((captured.headers = h), fake),
            end: (b: Buffer) => (captured.value = JSON.parse(b.toString())),
          };
          await kbs.standard(step, req, fake as never, raw);
          const value = captured.value!;
          const members = Object.keys(value).sort();
          const member = members[at % members.length]!;
          const text = value[member]!;
          const i = at % text.length;
          const mutated = text.slice(0, i) + ch + text.slice(i + 1);
          changed = !sameDecoding(text, mutated);
          value[member] = mutated;
          json(res, 200, value, { ...(captured.headers?.['sealed-tensors-receipt'] ? { 'sealed-tensors-receipt': captured.headers['sealed-tensors-receipt'] } : {}) });
        };
        const result = await outcome();
        // (A change that decodes to the same bytes, in a last character's unused bits, may pass.)
        if (changed) expect(result, `${step} changed at ${at}`).toMatch(/^ERR_(PROTOCOL|INTEGRITY|BROKER|DENIED)$/);
      }),
      { numRuns: fuzzRuns(60) },
    );
    delete kbs.override.attest;
    delete kbs.override.resource;
  });
});
