import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PolicyError } from '../../src/errors.js';
import { parsePolicy, validatePolicy, type Policy } from '../../src/attestation/policy/policy.js';
import { evaluatePolicy } from '../../src/attestation/policy/evaluate.js';
import type { Claims } from '../../src/attestation/types.js';

const RUNS = 500;
const NONCE = new Uint8Array(32).fill(0x42);
const REPORT_DATA = `${'42'.repeat(32)}${'00'.repeat(32)}`;
/** Names an object literal or a prototype lookup would treat specially. */
const SPECIAL = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'prototype'];
const keyName = fc.oneof(fc.constantFrom(...SPECIAL), fc.string({ minLength: 1, maxLength: 12 }));
const hexValue = fc.uint8Array({ minLength: 1, maxLength: 8 }).map((b) => Buffer.from(b).toString('hex'));

/** Builds a plain object whose own keys are exactly these, "__proto__" included (as JSON.parse would). */
const own = <T>(entries: [string, T][]): Record<string, T> => Object.fromEntries(entries);

const claims = (measurements: Record<string, string>, over: Partial<Claims> = {}): Claims => ({
  tee: 'nvidia',
  simulated: false,
  measurement: 'aa',
  measurements,
  reportData: REPORT_DATA,
  debug: false,
  tcb: {},
  platform: {},
  ...over,
});

function policyError(fn: () => unknown): PolicyError | 'accepted' {
  try {
    fn();
    return 'accepted';
  } catch (err) {
    if (err instanceof PolicyError) return err;
    throw err;
  }
}

describe('policy parser: keys that name prototype members', () => {
  it('"__proto__" and "constructor" are ordinary entries: an allow-list under them is kept, and evaluation neither throws nor passes', () => {
    const text = '{"version":1,"tees":{"nvidia":{"measurements":{"__proto__":["aa"],"constructor":["bb"],"m1":["cc"]},"platform":{"__proto__":["x"]},"minTcb":{"constructor":1}}}}';
    const p = parsePolicy(text);
    const m = p.tees.nvidia!.measurements!;
    expect(Object.getPrototypeOf(m)).toBeNull();
    expect(Object.keys(m)).toEqual(['__proto__', 'constructor', 'm1']);
    expect(m.__proto__).toEqual(['aa']);
    expect(Object.keys(p.tees.nvidia!.platform!)).toEqual(['__proto__']);
    // Claims without those names: every pinned one fails, none throws.
    const v = evaluatePolicy(p, claims({ m1: 'cc' }), { expectedReportData: NONCE });
    expect(v.allowed).toBe(false);
    expect(v.reasons).toEqual([
      expect.stringMatching(/^policy\.measurements\.__proto__: evidence has no measurement "__proto__"/),
      expect.stringMatching(/^policy\.measurements\.constructor: evidence has no measurement "constructor"/),
      'policy.minTcb.constructor: evidence has no numeric TCB component "constructor"',
      'policy.platform.__proto__: evidence has no platform field "__proto__"',
    ]);
    // Claims that carry them as their own values pass.
    const ok = claims(own([['__proto__', 'aa'], ['constructor', 'BB'], ['m1', 'cc']]), { tcb: own([['constructor', 1]]), platform: own([['__proto__', 'x']]) });
    expect(evaluatePolicy(p, ok, { expectedReportData: NONCE })).toMatchObject({ allowed: true, reasons: [] });
  });

  it('the same keys at the top level and under tees are reported as unknown, not followed', () => {
    const top = policyError(() => parsePolicy('{"version":1,"tees":{},"__proto__":{"allowSimulated":true}}'));
    expect(String(top)).toMatch(/__proto__: unknown key/);
    const tee = policyError(() => parsePolicy('{"version":1,"tees":{"constructor":{},"__proto__":{}}}'));
    expect(String(tee)).toMatch(/tees\.constructor: unknown TEE type.*tees\.__proto__: unknown TEE type/);
    // A prototype is never read: allowSimulated inherited from it does not count.
    const inherited = Object.create({ allowSimulated: true, tees: { simulated: {} } }) as Record<string, unknown>;
    inherited.version = 1;
    inherited.tees = {};
    expect(validatePolicy(inherited).allowSimulated).toBe(false);
  });
});

describe('policy parser: properties', () => {
  const entries = fc.uniqueArray(fc.tuple(keyName, fc.array(hexValue, { minLength: 1, maxLength: 3 })), { minLength: 1, maxLength: 6, selector: ([k]) => k });

  it(`${RUNS} random allow-lists under any names survive parsing exactly and are enforced`, () => {
    fc.assert(
      fc.property(entries, fc.nat(), (random, pick) => {
        // A section must also pin one identifying measurement (for NVIDIA a non-zero block).
        fc.pre(!random.some(([k]) => k === 'm1'));
        const list: [string, string[]][] = [...random, ['m1', ['ab']]];
        const text = JSON.stringify({ version: 1, tees: { nvidia: { measurements: own(list) } } });
        const p = parsePolicy(text);
        const m = p.tees.nvidia!.measurements!;
        // Integer-like keys sort first in any object; compare the key sets.
        expect(Object.keys(m).sort()).toEqual(list.map(([k]) => k).sort());
        for (const [k, values] of list) expect(Object.getOwnPropertyDescriptor(m, k)?.value).toEqual(values.map((h) => h.toLowerCase()));
        // Evidence with one allowed value per name passes; without one of the names it fails, naming it.
        const all = own(list.map(([k, values]) => [k, values[pick % values.length]!]));
        expect(evaluatePolicy(p, claims(all), { expectedReportData: NONCE }).allowed).toBe(true);
        const [dropped] = random[pick % random.length]!;
        const fewer = own(list.filter(([k]) => k !== dropped).map(([k, values]) => [k, values[0]!]));
        const v = evaluatePolicy(p, claims(fewer), { expectedReportData: NONCE });
        expect(v.allowed).toBe(false);
        expect(v.reasons).toEqual([expect.stringContaining(`policy.measurements.${dropped}: evidence has no measurement`)]);
      }),
      { numRuns: RUNS },
    );
  });

  const section = fc.record(
    {
      measurements: entries.map(own),
      minTcb: fc.uniqueArray(fc.tuple(keyName, fc.nat(300)), { minLength: 1, maxLength: 3, selector: ([k]) => k }).map(own),
      platform: fc.uniqueArray(fc.tuple(keyName, fc.array(fc.string(), { minLength: 1, maxLength: 2 })), { minLength: 1, maxLength: 3, selector: ([k]) => k }).map(own),
      tcbStatus: fc.constantFrom(['UpToDate'], ['UpToDate', 'OutOfDate']),
      allowDebug: fc.boolean(),
      requireReportData: fc.constant(true),
      maxAgeSeconds: fc.integer({ min: 1, max: 86_400 }),
      clockSkewSeconds: fc.nat(600),
    },
    { requiredKeys: [] },
  );
  const validInput = fc
    .record({ allowSimulated: fc.boolean(), tees: fc.dictionary(fc.constantFrom('snp', 'tdx', 'nitro', 'azure-snp', 'nvidia'), section) })
    .map((p) => ({ version: 1, ...p }));

  it(`${RUNS} valid policies: validation is idempotent, JSON round-trips, and the result is frozen with no prototypes`, () => {
    fc.assert(
      fc.property(validInput, (input) => {
        const p = validatePolicy(input);
        expect(validatePolicy(p)).toEqual(p);
        expect(parsePolicy(JSON.stringify(input))).toEqual(p);
        expect(parsePolicy(JSON.stringify(p))).toEqual(p);
        expect(Object.isFrozen(p) && Object.isFrozen(p.tees)).toBe(true);
        for (const s of Object.values(p.tees)) {
          expect(Object.isFrozen(s)).toBe(true);
          for (const k of ['measurements', 'minTcb', 'platform'] as const) if (s[k]) expect(Object.getPrototypeOf(s[k])).toBeNull();
        }
      }),
      { numRuns: RUNS },
    );
  });

  it(`${RUNS} policies built in code are judged exactly like the same policy read from a file`, () => {
    const anyPolicy = fc.record({
      version: fc.oneof(fc.constant(1), fc.jsonValue()),
      allowSimulated: fc.oneof(fc.boolean(), fc.jsonValue()),
      tees: fc.oneof(fc.dictionary(fc.oneof(fc.constantFrom('snp', 'nvidia', 'simulated'), keyName), fc.oneof(section, fc.jsonValue())), fc.jsonValue()),
    });
    fc.assert(
      fc.property(anyPolicy, (input) => {
        // JSON-safe input only: what a file could hold.
        const text = JSON.stringify(input);
        const json = JSON.parse(text) as unknown;
        const fromCode = policyError(() => validatePolicy(json));
        const fromFile = policyError(() => parsePolicy(text));
        expect(String(fromCode)).toBe(String(fromFile));
        if (fromCode === 'accepted') expect(validatePolicy(json)).toEqual(parsePolicy(text));
        // The evaluator validates too: an invalid policy is never judged with.
        const c = claims({ m1: 'aa' });
        const ev = policyError(() => evaluatePolicy(json as Policy, c, { expectedReportData: NONCE }));
        expect(ev === 'accepted').toBe(fromCode === 'accepted');
      }),
      { numRuns: RUNS },
    );
  });

  it(`${RUNS} non-boolean allowSimulated values and unknown keys are errors, from code and from files`, () => {
    const notBool = fc.anything().filter((v) => typeof v !== 'boolean' && v !== undefined);
    fc.assert(
      fc.property(notBool, (v) => {
        const p = { version: 1, allowSimulated: v, tees: {} };
        expect(String(policyError(() => validatePolicy(p)))).toMatch(/allowSimulated: must be true or false/);
        expect(policyError(() => evaluatePolicy(p as never, claims({}), { expectedReportData: NONCE }))).toBeInstanceOf(PolicyError);
      }),
      { numRuns: RUNS },
    );
    const known = new Set(['version', 'allowSimulated', 'tees', 'measurements', 'minTcb', 'tcbStatus', 'platform', 'allowDebug', 'requireReportData', 'maxAgeSeconds', 'clockSkewSeconds', 'reportData']);
    fc.assert(
      fc.property(keyName.filter((k) => !known.has(k)), fc.jsonValue(), fc.boolean(), (k, v, atTop) => {
        const text = atTop ? JSON.stringify(own([['version', 1], ['tees', {}], [k, v]])) : JSON.stringify({ version: 1, tees: { snp: own([[k, v]]) } });
        expect(String(policyError(() => parsePolicy(text)))).toContain(`${atTop ? '' : 'tees.snp.'}${k}: unknown key`);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('policy parser: freshness bounds have a ceiling', () => {
  const withSection = (extra: Record<string, unknown>) => ({ version: 1, tees: { nitro: { measurements: { pcr0: ['aa'.repeat(48)] }, ...extra } } });

  it('clockSkewSeconds up to 600 and maxAgeSeconds up to 86400 are accepted, in code and in files', () => {
    const edge = withSection({ clockSkewSeconds: 600, maxAgeSeconds: 86_400 });
    expect(validatePolicy(edge).tees.nitro).toMatchObject({ clockSkewSeconds: 600, maxAgeSeconds: 86_400 });
    expect(parsePolicy(JSON.stringify(edge)).tees.nitro).toMatchObject({ clockSkewSeconds: 600, maxAgeSeconds: 86_400 });
  });

  it('larger values are PolicyErrors naming the key and the bound', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ clockSkewSeconds: 601 }, /tees\.nitro\.clockSkewSeconds: must be an integer from 0 to 600/],
      [{ clockSkewSeconds: Number.MAX_SAFE_INTEGER }, /tees\.nitro\.clockSkewSeconds: must be an integer from 0 to 600/],
      [{ maxAgeSeconds: 86_401 }, /tees\.nitro\.maxAgeSeconds: must be an integer from 1 to 86400/],
      [{ maxAgeSeconds: 10 ** 9 }, /tees\.nitro\.maxAgeSeconds: must be an integer from 1 to 86400/],
    ];
    for (const [extra, why] of cases) {
      for (const parse of [() => validatePolicy(withSection(extra)), () => parsePolicy(JSON.stringify(withSection(extra)))]) {
        expect(parse).toThrow(PolicyError);
        expect(parse).toThrow(why);
      }
    }
  });
});
