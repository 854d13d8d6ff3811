/**
 * A JSON reader that accepts exactly what serde_json (1.x, the parser of the Rust `safetensors`
 * crate, which Python's safetensors uses) accepts for a safetensors header, and keeps what
 * JSON.parse loses: duplicate keys, and whether a number is an unsigned integer literal (the only
 * form serde accepts for a `usize`) with its exact value.
 *
 * Differences from JSON.parse that matter: a byte-order mark is not whitespace; nesting deeper
 * than serde_json's recursion limit (128) is rejected; a string with a lone UTF-16 surrogate
 * escape is rejected; a number that overflows f64 is rejected (JSON.parse gives Infinity).
 */

export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

export interface JsonNumber {
  readonly kind: 'number';
  /** The exact value when the literal is an unsigned integer within u64 (serde's U64), else null. */
  readonly u64: bigint | null;
}

export interface JsonObject {
  readonly kind: 'object';
  /** In document order, duplicates kept. */
  readonly entries: [string, JsonValue][];
}

export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly position: number,
  ) {
    super(`${message} at character ${position}`);
  }
}

/** serde_json's default recursion limit: an array or object at depth 128 is an error. */
const MAX_DEPTH = 127;
const U64_MAX = (1n << 64n) - 1n;

export function parseStrictJson(text: string): JsonValue {
  let at = 0;
  let depth = 0;

  const fail = (message: string): never => {
    throw new JsonSyntaxError(message, at);
  };
  const skipWhitespace = (): void => {
    while (at < text.length) {
      const c = text.charCodeAt(at);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      at++;
    }
  };
  const expectLiteral = (word: string): void => {
    if (text.startsWith(word, at)) at += word.length;
    else fail('invalid literal');
  };

  const value = (): JsonValue => {
    skipWhitespace();
    const c = text[at];
    switch (c) {
      case '{':
        return object();
      case '[':
        return array();
      case '"':
        return string();
      case 't':
        expectLiteral('true');
        return true;
      case 'f':
        expectLiteral('false');
        return false;
      case 'n':
        expectLiteral('null');
        return null;
      default:
        if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return number();
        return fail(c === undefined ? 'unexpected end of input' : `unexpected character ${JSON.stringify(c)}`);
    }
  };

  const enter = (): void => {
    if (++depth > MAX_DEPTH) fail('nesting deeper than serde_json allows (recursion limit 128)');
    at++;
  };

  const object = (): JsonObject => {
    enter();
    const entries: [string, JsonValue][] = [];
    skipWhitespace();
    if (text[at] === '}') {
      at++;
      depth--;
      return { kind: 'object', entries };
    }
    for (;;) {
      skipWhitespace();
      if (text[at] !== '"') fail('expected a string key');
      const key = string();
      skipWhitespace();
      if (text[at] !== ':') fail("expected ':'");
      at++;
      entries.push([key, value()]);
      skipWhitespace();
      if (text[at] === ',') {
        at++;
        continue;
      }
      if (text[at] === '}') {
        at++;
        depth--;
        return { kind: 'object', entries };
      }
      fail("expected ',' or '}'");
    }
  };

  const array = (): JsonValue[] => {
    enter();
    const items: JsonValue[] = [];
    skipWhitespace();
    if (text[at] === ']') {
      at++;
      depth--;
      return items;
    }
    for (;;) {
      items.push(value());
      skipWhitespace();
      if (text[at] === ',') {
        at++;
        continue;
      }
      if (text[at] === ']') {
        at++;
        depth--;
        return items;
      }
      fail("expected ',' or ']'");
    }
  };

  const hex4 = (): number => {
    const h = text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) fail('invalid \\u escape');
    at += 4;
    return parseInt(h, 16);
  };

  const string = (): string => {
    at++; // opening quote
    let out = '';
    let runStart = at;
    for (;;) {
      if (at >= text.length) fail('unterminated string');
      const c = text.charCodeAt(at);
      if (c === 0x22) {
        out += text.slice(runStart, at);
        at++;
        return out;
      }
      if (c < 0x20) fail('control character in a string');
      if (c !== 0x5c) {
        at++;
        continue;
      }
      out += text.slice(runStart, at);
      at++;
      const e = text[at++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const u = hex4();
          if (u >= 0xdc00 && u <= 0xdfff) fail('lone trailing surrogate in a \\u escape');
          if (u >= 0xd800 && u <= 0xdbff) {
            // serde_json needs the pair's second half right here, as another \u escape.
            if (text[at] !== '\\' || text[at + 1] !== 'u') fail('lone leading surrogate in a \\u escape');
            at += 2;
            const low = hex4();
            if (low < 0xdc00 || low > 0xdfff) fail('lone leading surrogate in a \\u escape');
            out += String.fromCharCode(u, low);
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default:
          fail('invalid escape');
      }
      runStart = at;
    }
  };

  const number = (): JsonNumber => {
    const start = at;
    const negative = text[at] === '-';
    if (negative) at++;
    if (text[at] === '0') {
      at++;
      if (text[at] !== undefined && text[at]! >= '0' && text[at]! <= '9') fail('leading zero in a number');
    } else if (text[at] !== undefined && text[at]! >= '1' && text[at]! <= '9') {
      while (text[at] !== undefined && text[at]! >= '0' && text[at]! <= '9') at++;
    } else {
      fail('invalid number');
    }
    let integer = true;
    if (text[at] === '.') {
      integer = false;
      at++;
      if (!(text[at]! >= '0' && text[at]! <= '9')) fail('invalid number');
      while (text[at]! >= '0' && text[at]! <= '9') at++;
    }
    if (text[at] === 'e' || text[at] === 'E') {
      integer = false;
      at++;
      if (text[at] === '+' || text[at] === '-') at++;
      if (!(text[at]! >= '0' && text[at]! <= '9')) fail('invalid number');
      while (text[at]! >= '0' && text[at]! <= '9') at++;
    }
    const literal = text.slice(start, at);
    if (integer && !negative) {
      const big = BigInt(literal);
      if (big <= U64_MAX) return { kind: 'number', u64: big };
    }
    // serde_json parses everything else as i64 or f64, and refuses an f64 that overflows.
    if (!Number.isFinite(Number(literal))) fail('number out of range');
    return { kind: 'number', u64: null };
  };

  const result = value();
  skipWhitespace();
  if (at !== text.length) fail('trailing characters');
  return result;
}

export function isJsonObject(v: JsonValue): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && v.kind === 'object';
}

export function isJsonNumber(v: JsonValue): v is JsonNumber {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && v.kind === 'number';
}
