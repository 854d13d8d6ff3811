import { open, readFile, stat } from 'node:fs/promises';
import { randomBytes, randomUUID } from 'node:crypto';
import { wipe } from '../bytes.js';
import { KeyFileError } from '../errors.js';
import { DATA_KEY_LENGTH, KEY_ID_PATTERN } from '../format/constants.js';

/**
 * A data key on the model owner's disk: small JSON, mode 0600. This is owner tooling; inside a
 * TEE keys arrive from the key broker and live in native secure memory instead.
 */
export interface DataKey {
  id: string;
  /** 32 bytes. Wipe it (`key.fill(0)`) when done. */
  key: Uint8Array;
}

const KIND = 'sealed-tensors-data-key';

export async function writeNewKeyFile(path: string, id?: string): Promise<DataKey> {
  const keyId = id ?? `key-${randomUUID()}`;
  if (!KEY_ID_PATTERN.test(keyId)) {
    throw new KeyFileError('key id must be 1 to 255 characters from A-Z a-z 0-9 . _ : / -');
  }
  const key = new Uint8Array(randomBytes(DATA_KEY_LENGTH));
  const text = `${JSON.stringify({ kind: KIND, version: 1, id: keyId, key: Buffer.from(key).toString('base64'), created: new Date().toISOString() }, null, 2)}\n`;
  let fh;
  try {
    // 'wx': never overwrite; the mode applies at creation, so the key is never world-readable.
    fh = await open(path, 'wx', 0o600);
  } catch (cause) {
    const e = cause as NodeJS.ErrnoException;
    throw new KeyFileError(
      e.code === 'EEXIST' ? `${path} already exists: a key file is never overwritten; choose another path` : `cannot create ${path} (${e.code ?? e.message})`,
      { cause },
    );
  }
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { id: keyId, key };
}

export async function readKeyFile(path: string): Promise<DataKey> {
  let mode: number;
  let raw: Buffer;
  try {
    mode = (await stat(path)).mode;
    raw = await readFile(path);
  } catch (cause) {
    const e = cause as NodeJS.ErrnoException;
    throw new KeyFileError(`cannot read key file ${path} (${e.code ?? e.message})`, { cause });
  }
  try {
    if ((mode & 0o077) !== 0) {
      throw new KeyFileError(`key file ${path} is readable by others (mode ${(mode & 0o777).toString(8)}): run chmod 600 ${path}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch (cause) {
      throw new KeyFileError(`key file ${path} is not JSON: was it made by "sealed-tensors keygen"?`, { cause });
    }
    const o = json as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || o['kind'] !== KIND || o['version'] !== 1) {
      throw new KeyFileError(`key file ${path} is not a sealed-tensors data key (kind/version): make one with "sealed-tensors keygen"`);
    }
    const id = o['id'];
    if (typeof id !== 'string' || !KEY_ID_PATTERN.test(id)) throw new KeyFileError(`key file ${path} has an invalid id`);
    const b64 = o['key'];
    const key = typeof b64 === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(b64) ? new Uint8Array(Buffer.from(b64, 'base64')) : null;
    if (!key || key.length !== DATA_KEY_LENGTH) {
      wipe(key);
      throw new KeyFileError(`key file ${path} must hold a base64 ${DATA_KEY_LENGTH}-byte key`);
    }
    return { id, key };
  } finally {
    raw.fill(0);
  }
}
