/**
 * The public header of a sealed file: parsed and checked against the file's length without any
 * key and without crypto, so `inspect` and the native reader need not load the reference reader.
 */
import { FormatError, TruncatedError } from '../errors.js';
import { FIXED_HEADER_LENGTH } from '../format/constants.js';
import { headerLengthFromPrefix, parseHeader, type PublicHeader } from '../format/header.js';
import { expectedFileLength, type Layout } from '../format/layout.js';
import type { ByteSource } from './source.js';

/** The public header of a sealed file, parsed without any key (what `inspect` shows). */
export async function readPublicHeader(source: ByteSource): Promise<{ header: PublicHeader; headerBytes: Uint8Array; layout: Layout }> {
  const prefix = await source.read(0, Math.min(source.size, FIXED_HEADER_LENGTH)).catch(rethrowAsFormat);
  const length = headerLengthFromPrefix(prefix);
  const headerBytes = await source.read(0, Math.min(source.size, length)).catch(rethrowAsFormat);
  const { header } = parseHeader(headerBytes);
  const layout: Layout = { headerLength: length, tableLength: header.tableLength, chunkSize: header.chunkSize, payloadLength: header.payloadLength };
  const expected = expectedFileLength(layout);
  if (source.size < expected) {
    throw new TruncatedError(
      `${source.description} is ${source.size} bytes but its header says ${expected}: the file is truncated (copy it again)`,
    );
  }
  if (source.size > expected) {
    throw new FormatError(`${source.description} is ${source.size} bytes but its header says ${expected}: it has trailing data`);
  }
  return { header, headerBytes, layout };
}

function rethrowAsFormat(err: unknown): never {
  if (err instanceof TruncatedError) throw new FormatError(`too short to be a sealed-tensors file: ${err.message}`);
  throw err;
}
