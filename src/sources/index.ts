/** Where sealed bytes come from: a local file (pread by the addon) or an HTTP(S) URL (range requests). */
import { InvalidArgumentError } from '../errors.js';
import { FileSealedSource } from './file.js';
import { HttpRangeSource, type HttpSourceOptions } from './http.js';
import type { SealedSource } from './types.js';

export { FileSealedSource } from './file.js';
export { HttpRangeSource, type HttpSourceOptions } from './http.js';
export type { OpenedSource, SealedSource } from './types.js';

/**
 * A source from what a user typed: an http(s):// URL becomes an HttpRangeSource (with `http`'s
 * options), anything else a path; a SealedSource is returned as it is.
 */
export function sealedSource(spec: string | URL | SealedSource, http: HttpSourceOptions = {}): SealedSource {
  if (spec instanceof URL) return new HttpRangeSource(spec, http);
  if (typeof spec === 'string') return /^https?:\/\//i.test(spec) ? new HttpRangeSource(spec, http) : new FileSealedSource(spec);
  if (spec !== null && typeof spec === 'object' && typeof spec.open === 'function' && typeof spec.sibling === 'function') return spec;
  throw new InvalidArgumentError('a source must be a path, an http(s) URL or a SealedSource');
}
