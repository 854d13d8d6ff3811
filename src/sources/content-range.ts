/**
 * The HTTP range headers a range source sends and checks (RFC 9110 section 14): pure functions, so
 * the parser can be fuzzed on its own.
 */

/** What a 206 answer says it holds: bytes [first, last] (inclusive) of a representation of `complete` bytes. */
export interface ContentRange {
  first: number;
  last: number;
  complete: number;
}

// RFC 9110 14.4: range-unit SP first-pos "-" last-pos "/" complete-length. Digits only, no spaces inside;
// "bytes" is the only unit (compared case-insensitively, as tokens are). 15 digits keep every value
// below 2^53; an unknown complete length ("*") is refused: a sealed file's size must be known.
const CONTENT_RANGE = /^bytes ([0-9]{1,15})-([0-9]{1,15})\/([0-9]{1,15})$/i;

/**
 * Parses a Content-Range header value of a 206 answer. Null when it is absent, malformed, an
 * unsatisfied-range form (`bytes *\/n`), an unknown length, or inconsistent (first > last, last >= complete).
 */
export function parseContentRange(value: string | undefined): ContentRange | null {
  if (typeof value !== 'string') return null;
  const m = CONTENT_RANGE.exec(value);
  if (!m) return null;
  const first = Number(m[1]);
  const last = Number(m[2]);
  const complete = Number(m[3]);
  if (first > last || last >= complete) return null;
  return { first, last, complete };
}

/** The Range header value for bytes [offset, offset + length); length >= 1. */
export function rangeHeader(offset: number, length: number): string {
  return `bytes=${offset}-${offset + length - 1}`;
}

/** True when a 206 answer's Content-Range holds exactly the bytes asked for (and, once known, the same complete length). */
export function rangeMatches(range: ContentRange, offset: number, length: number): boolean {
  return range.first === offset && range.last === offset + length - 1;
}
