// Outside review (issue 8) of the range source's option checks.
import { describe, expect, it } from 'vitest';
import { HttpRangeSource } from '../../src/sources/http.js';
import { InvalidArgumentError } from '../../src/errors.js';

describe('review: range source timeouts', () => {
  // Careless caller: timeoutMs: 2 ** 31 (meant as "very long") passes the positive-integer check,
  // and Node's setTimeout turns it into 1 ms: every request then fails at once with "no answer
  // within 2147483648 ms". Refuse it where it is given.
  it('a timeout past 2^31 - 1 ms is InvalidArgumentError at construction', () => {
    expect(() => new HttpRangeSource('http://127.0.0.1:9/m.sealed', { allowHttp: true, timeoutMs: 2 ** 31 })).toThrow(InvalidArgumentError);
    expect(() => new HttpRangeSource('http://127.0.0.1:9/m.sealed', { allowHttp: true, timeoutMs: 2 ** 31 - 1 })).not.toThrow();
  });
});
