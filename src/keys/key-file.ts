import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { nodeCrypto } from '../crypto-builtin.js';
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
  const keyId = id ?? `key-${nodeCrypto().randomUUID()}`;
  if (!KEY_ID_PATTERN.test(keyId)) {
    throw new KeyFileError('key id must be 1 to 255 characters from A-Z a-z 0-9 . _ : / -');
  }
  // The key, its base64 and the file's bytes each in memory of their own, never a string or Node's
  // shared Buffer pool (randomBytes, Buffer.from and writeFile(string) all use it): wiped after writing.
  const key = nodeCrypto().randomFillSync(new Uint8Array(new ArrayBuffer(DATA_KEY_LENGTH)));
  // '@' cannot occur in a key id, so the placeholder is found exactly once.
  const [before, after] = `${JSON.stringify({ kind: KIND, version: 1, id: keyId, key: '@', created: new Date().toISOString() }, null, 2)}\n`.split('"@"') as [string, string];
  const head = new TextEncoder().encode(`${before}"`);
  const tail = new TextEncoder().encode(`"${after}`);
  const bytes = new Uint8Array(new ArrayBuffer(head.length + 44 + tail.length));
  bytes.set(head);
  encodeKey(key, bytes.subarray(head.length, head.length + 44));
  bytes.set(tail, head.length + 44);
  let fh;
  try {
    // 'wx': never overwrite; the mode applies at creation, so the key is never world-readable.
    fh = await open(path, 'wx', 0o600);
  } catch (cause) {
    key.fill(0);
    bytes.fill(0);
    const e = cause as NodeJS.ErrnoException;
    throw new KeyFileError(
      e.code === 'EEXIST' ? `${path} already exists: a key file is never overwritten; choose another path` : `cannot create ${path} (${e.code ?? e.message})`,
      { cause },
    );
  }
  try {
    for (let done = 0; done < bytes.length; ) done += (await fh.write(bytes, done, bytes.length - done)).bytesWritten;
    await fh.sync();
  } catch (err) {
    key.fill(0);
    throw err;
  } finally {
    bytes.fill(0);
    await fh.close();
  }
  return { id: keyId, key };
}

/** A key file is a few hundred bytes; anything bigger is not one (and is not read whole). */
export const MAX_KEY_FILE_BYTES = 64 * 1024;

const MEMBERS = new Set(['kind', 'version', 'id', 'key', 'created']);

/**
 * Reads a key file written by `writeNewKeyFile`. The checks are made on the opened descriptor, so
 * the file checked is the file read: no symbolic link (O_NOFOLLOW), a regular file (a FIFO or a
 * device would block or never end), owned by this user, not readable by others, at most 64 KiB.
 * The JSON must hold exactly kind, version, id, key (and optionally created), each once, the key as
 * canonical padded base64 of 32 bytes. The returned key is in memory of its own: wipe it when done.
 */
export async function readKeyFile(path: string): Promise<DataKey> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (cause) {
    const e = cause as NodeJS.ErrnoException;
    if (e.code === 'ELOOP') {
      throw new KeyFileError(`key file ${path} is a symbolic link: key files are never read through links; pass the path of the file itself`, { cause });
    }
    throw new KeyFileError(`cannot read key file ${path} (${e.code ?? e.message})`, { cause });
  }
  // Its own memory (not Node's shared Buffer pool), wiped before return.
  const raw = new Uint8Array(new ArrayBuffer(MAX_KEY_FILE_BYTES + 1));
  try {
    let length = 0;
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new KeyFileError(`key file ${path} is not a regular file: pass the path of the key file made by "sealed-tensors keygen"`);
      const uid = process.geteuid?.();
      if (uid !== undefined && st.uid !== uid) {
        throw new KeyFileError(`key file ${path} belongs to uid ${st.uid}, not to this user (uid ${uid}): a key file must be owned by the user that reads it (chown it)`);
      }
      if ((st.mode & 0o077) !== 0) {
        throw new KeyFileError(`key file ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}): run chmod 600 ${path}`);
      }
      if (st.size > MAX_KEY_FILE_BYTES) throw tooBig(path);
      for (;;) {
        const { bytesRead } = await fh.read(raw, length, raw.length - length, length);
        if (bytesRead === 0) break;
        length += bytesRead;
        if (length > MAX_KEY_FILE_BYTES) throw tooBig(path);
      }
    } catch (cause) {
      if (cause instanceof KeyFileError) throw cause;
      const e = cause as NodeJS.ErrnoException;
      throw new KeyFileError(`cannot read key file ${path} (${e.code ?? e.message})`, { cause });
    } finally {
      await fh.close();
    }
    return parseKeyFile(raw.subarray(0, length), path);
  } finally {
    raw.fill(0);
  }
}

function tooBig(path: string): KeyFileError {
  return new KeyFileError(`key file ${path} is larger than ${MAX_KEY_FILE_BYTES} bytes: it is not a sealed-tensors key file`);
}

/**
 * The key file's JSON, read from bytes: a flat object of strings and numbers. JSON.parse would keep
 * the last of duplicate members and make the key a string on the JS heap that cannot be wiped; here
 * the key is decoded from the file's bytes straight into its own buffer.
 */
function parseKeyFile(text: Uint8Array, path: string): DataKey {
  const notJson = (what: string): KeyFileError =>
    new KeyFileError(`key file ${path} is not valid JSON (${what}): was it made by "sealed-tensors keygen"?`);
  const members = new Map<string, { start: number; end: number; kind: 'string' | 'number'; escaped: boolean }>();
  let i = 0;
  const ws = (): void => {
    while (i < text.length && (text[i] === 0x20 || text[i] === 0x09 || text[i] === 0x0a || text[i] === 0x0d)) i++;
  };
  // A JSON string token at i: returns [start, end) of its contents and whether it holds escapes.
  const string = (): { start: number; end: number; escaped: boolean } => {
    if (text[i] !== 0x22) throw notJson(`expected a string at byte ${i}`);
    const start = ++i;
    let escaped = false;
    for (;;) {
      if (i >= text.length) throw notJson('unterminated string');
      const c = text[i]!;
      if (c === 0x22) break;
      if (c < 0x20) throw notJson(`control character in a string at byte ${i}`);
      if (c === 0x5c) {
        escaped = true;
        i++;
        const e = text[i];
        if (e === 0x75) {
          for (let k = 1; k <= 4; k++) if (!isHex(text[i + k])) throw notJson(`bad \\u escape at byte ${i}`);
          i += 4;
        } else if (e === undefined || !'"\\/bfnrt'.includes(String.fromCharCode(e))) {
          throw notJson(`bad escape at byte ${i}`);
        }
      }
      i++;
    }
    return { start, end: i++, escaped };
  };
  ws();
  if (text[i] !== 0x7b) throw notJson('it is not an object');
  i++;
  ws();
  if (text[i] === 0x7d) {
    i++;
  } else {
    for (;;) {
      ws();
      const k = string();
      const name = utf8(text, k, path, notJson);
      ws();
      if (text[i] !== 0x3a) throw notJson(`expected ':' at byte ${i}`);
      i++;
      ws();
      let value: { start: number; end: number; kind: 'string' | 'number'; escaped: boolean };
      if (text[i] === 0x22) {
        value = { ...string(), kind: 'string' };
      } else {
        const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(ascii(text, i, Math.min(text.length, i + 32)));
        if (!m || m[0].length === 0) throw notJson(`member "${name}" holds a value that is neither a string nor a number`);
        value = { start: i, end: i + m[0].length, kind: 'number', escaped: false };
        i += m[0].length;
      }
      if (!MEMBERS.has(name)) {
        throw new KeyFileError(`key file ${path} has an unknown member "${name}": a sealed-tensors data key holds only kind, version, id, key and created`);
      }
      if (members.has(name)) throw new KeyFileError(`key file ${path} has the member "${name}" twice: a key file must say each thing once`);
      members.set(name, value);
      ws();
      if (text[i] === 0x2c) {
        i++;
        continue;
      }
      if (text[i] === 0x7d) {
        i++;
        break;
      }
      throw notJson(`expected ',' or '}' at byte ${i}`);
    }
  }
  ws();
  if (i !== text.length) throw notJson(`unexpected bytes after the object at byte ${i}`);

  const str = (name: string): string | undefined => {
    const v = members.get(name);
    if (!v || v.kind !== 'string') return undefined;
    return JSON.parse(`"${utf8(text, v, path, notJson)}"`) as string;
  };
  const version = members.get('version');
  if (str('kind') !== KIND || !version || version.kind !== 'number' || ascii(text, version.start, version.end) !== '1') {
    throw new KeyFileError(`key file ${path} is not a sealed-tensors data key (kind/version): make one with "sealed-tensors keygen"`);
  }
  const id = str('id');
  if (id === undefined || !KEY_ID_PATTERN.test(id)) throw new KeyFileError(`key file ${path} has an invalid id`);
  if (members.has('created') && str('created') === undefined) throw new KeyFileError(`key file ${path}: "created" must be a string`);
  const k = members.get('key');
  const key = k && k.kind === 'string' && !k.escaped ? decodeKey(text.subarray(k.start, k.end)) : null;
  if (!key) {
    throw new KeyFileError(
      `key file ${path} must hold its key as canonical padded base64 of exactly ${DATA_KEY_LENGTH} bytes (44 characters ending in "="): make one with "sealed-tensors keygen"`,
    );
  }
  return { id, key };
}

function isHex(c: number | undefined): boolean {
  return c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));
}

function ascii(text: Uint8Array, start: number, end: number): string {
  let out = '';
  for (let j = start; j < end && text[j]! < 0x80; j++) out += String.fromCharCode(text[j]!);
  return out;
}

function utf8(text: Uint8Array, range: { start: number; end: number }, path: string, notJson: (what: string) => KeyFileError): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(text.subarray(range.start, range.end));
  } catch {
    throw notJson(`invalid UTF-8 in a string (${path})`);
  }
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Padded base64 of the 32-byte key into `out` (44 bytes), without making a string. */
function encodeKey(key: Uint8Array, out: Uint8Array): void {
  let o = 0;
  for (let j = 0; j < key.length; j += 3) {
    const n = (key[j]! << 16) | ((key[j + 1] ?? 0) << 8) | (key[j + 2] ?? 0);
    out[o++] = BASE64.charCodeAt((n >> 18) & 63);
    out[o++] = BASE64.charCodeAt((n >> 12) & 63);
    out[o++] = j + 1 < key.length ? BASE64.charCodeAt((n >> 6) & 63) : 0x3d;
    out[o++] = j + 2 < key.length ? BASE64.charCodeAt(n & 63) : 0x3d;
  }
}

/** 6-bit value of a base64 character, or -1. */
function sextet(c: number): number {
  if (c >= 0x41 && c <= 0x5a) return c - 0x41;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 26;
  if (c >= 0x30 && c <= 0x39) return c - 0x30 + 52;
  if (c === 0x2b) return 62;
  if (c === 0x2f) return 63;
  return -1;
}

/**
 * Canonical padded base64 of exactly 32 bytes (44 characters: 43 data, one '=', and the two unused
 * low bits of the last data character zero), decoded into a buffer of its own; null otherwise.
 */
function decodeKey(b64: Uint8Array): Uint8Array | null {
  if (b64.length !== 44 || b64[43] !== 0x3d) return null;
  const out = new Uint8Array(new ArrayBuffer(DATA_KEY_LENGTH));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let j = 0; j < 43; j++) {
    const v = sextet(b64[j]!);
    if (v < 0) {
      out.fill(0);
      return null;
    }
    acc = ((acc << 6) | v) & 0xfff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  const canonical = (acc & ((1 << bits) - 1)) === 0;
  acc = 0;
  if (!canonical) {
    out.fill(0);
    return null;
  }
  return out;
}
