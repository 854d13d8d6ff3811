import { constants as fsc } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { FormatError, NotFoundError } from '../errors.js';

/** Does this file start like a plaintext safetensors file (length prefix, then a JSON object)? */
async function looksLikeSafetensors(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_NOCTTY);
  } catch {
    return false;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size < 10) return false;
    const b = Buffer.alloc(9);
    await fh.read(b, 0, 9, 0);
    const n = b.readBigUInt64LE(0);
    return n >= 2n && n <= BigInt(st.size - 8) && b[8] === 0x7b; // '{'
  } catch {
    return false;
  } finally {
    await fh.close();
  }
}

/**
 * `verify` and `inspect` failed to find a sealed file at `path`: if it holds a plaintext model,
 * say so and how to seal it, instead of "bad magic". Returns the error to report.
 */
export async function explainNotSealed(path: string, err: unknown): Promise<unknown> {
  if (!(err instanceof FormatError || err instanceof NotFoundError)) return err;
  const seal = `seal it first (sealed-tensors seal ${path} -o OUT --key KEY)`;
  const info = await stat(path).catch(() => null);
  if (info?.isDirectory()) {
    const names = await readdir(path).catch(() => [] as string[]);
    if (names.some((n) => n.endsWith('.safetensors.index.json'))) {
      return new NotFoundError(`${path} holds a plaintext sharded model, not a sealed one: ${seal}`, { cause: err });
    }
    return err;
  }
  if (info?.isFile() && (await looksLikeSafetensors(path))) {
    return new FormatError(`${path} is a plaintext safetensors file, not a sealed one: ${seal}`, { cause: err });
  }
  return err;
}
