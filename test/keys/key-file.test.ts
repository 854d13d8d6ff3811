import { chmodSync, chownSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_KEY_FILE_BYTES, readKeyFile, writeNewKeyFile } from '../../src/keys/key-file.js';
import { KeyFileError } from '../../src/errors.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const dir = tempDir('st-keyfile-');
let n = 0;

const B64 = Buffer.from(TEST_KEY).toString('base64'); // canonical: 44 characters
const member = {
  kind: '"kind": "sealed-tensors-data-key"',
  version: '"version": 1',
  id: '"id": "k1"',
  key: `"key": "${B64}"`,
  created: '"created": "2026-01-01T00:00:00.000Z"',
};
const ALL = [member.kind, member.version, member.id, member.key, member.created];

/** A key file with these exact contents, mode 0600 unless told. */
function file(text: string, mode = 0o600): string {
  const path = join(dir, `k${n++}.json`);
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  return path;
}
const json = (members: string[]): string => `{\n  ${members.join(',\n  ')}\n}\n`;

async function rejects(path: string, message: RegExp): Promise<void> {
  const err = await readKeyFile(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KeyFileError);
  expect((err as KeyFileError).code).toBe('ERR_KEY_FILE');
  expect((err as Error).message).toMatch(message);
}

describe('key files', () => {
  it('read back what keygen wrote, and a hand-written file in any member order', async () => {
    const path = join(dir, 'new.key');
    const made = await writeNewKeyFile(path, 'owner-key-1');
    const read = await readKeyFile(path);
    expect(read.id).toBe('owner-key-1');
    expect(Buffer.from(read.key).equals(Buffer.from(made.key))).toBe(true);
    const other = await readKeyFile(file(json([member.key, member.id, member.version, member.kind]))); // no "created"
    expect([...other.key]).toEqual([...TEST_KEY]);
    expect(other.id).toBe('k1');
  });

  it('are never read through a symbolic link', async () => {
    const target = file(json(ALL));
    const link = join(dir, 'link.key');
    symlinkSync(target, link);
    await rejects(link, /is a symbolic link/);
  });

  it('must be regular files: a FIFO is refused at once (it would block), a folder too', async () => {
    const fifo = join(dir, 'fifo.key');
    const r = spawnSync('mkfifo', ['-m', '600', fifo]);
    expect(r.status, 'mkfifo (coreutils) is needed').toBe(0);
    await rejects(fifo, /not a regular file/);
    const folder = join(dir, 'folder.key');
    mkdirSync(folder, { mode: 0o700 });
    await rejects(folder, /not a regular file/);
  });

  it('must not be readable or writable by group or others', async () => {
    await rejects(file(json(ALL), 0o644), /readable by others \(mode 644\).*chmod 600/);
    await rejects(file(json(ALL), 0o640), /mode 640/);
    await rejects(file(json(ALL), 0o602), /mode 602/);
    await expect(readKeyFile(file(json(ALL), 0o400))).resolves.toMatchObject({ id: 'k1' });
  });

  it.skipIf(process.geteuid?.() !== 0)('must belong to the user that reads them (changing an owner needs root)', async () => {
    const path = file(json(ALL));
    chownSync(path, 65534, 65534);
    await rejects(path, /belongs to uid 65534, not to this user \(uid 0\)/);
  });

  it('are at most 64 KiB', async () => {
    const padded = json(ALL) + ' '.repeat(MAX_KEY_FILE_BYTES);
    await rejects(file(padded), /larger than 65536 bytes/);
    await expect(readKeyFile(file(json(ALL) + ' '.repeat(MAX_KEY_FILE_BYTES - json(ALL).length)))).resolves.toMatchObject({ id: 'k1' });
  });

  it('hold the key as canonical padded base64 of exactly 32 bytes', async () => {
    const withKey = (k: string): string => file(json([member.kind, member.version, member.id, `"key": "${k}"`]));
    const last = B64[42]!; // carries 2 unused bits, which must be zero
    const bad = [
      B64.slice(0, 43), // unpadded
      B64 + '=', // extra padding
      B64.slice(0, 42) + String.fromCharCode(last.charCodeAt(0) + 1) + '=', // non-zero unused bits
      Buffer.alloc(33, 1).toString('base64'), // 33 bytes
      Buffer.alloc(31, 1).toString('base64'), // 31 bytes
      B64.slice(0, 10) + ' ' + B64.slice(11), // a space inside
      B64.replace(/[+/]/g, '-').replace(/^./, '_'), // URL-safe alphabet
      B64.slice(0, 10) + '\\u00' + B64.charCodeAt(10).toString(16) + B64.slice(11), // an escape: same text after JSON.parse
      '',
    ];
    for (const k of bad) await rejects(withKey(k), /canonical padded base64 of exactly 32 bytes/);
    await rejects(file(json([member.kind, member.version, member.id, '"key": 12345'])), /canonical padded base64/);
    await rejects(file(json([member.kind, member.version, member.id])), /canonical padded base64/);
  });

  it('reject unknown and repeated members (JSON.parse would keep the last one silently)', async () => {
    await rejects(file(json([...ALL, '"comment": "x"'])), /unknown member "comment"/);
    await rejects(file(json([...ALL, '"__proto__": "x"'])), /unknown member "__proto__"/);
    const other = Buffer.alloc(32, 9).toString('base64');
    const twice = json([...ALL, `"key": "${other}"`]);
    expect((JSON.parse(twice) as { key: string }).key).toBe(other);
    await rejects(file(twice), /member "key" twice/);
    await rejects(file(json([member.id, ...ALL])), /member "id" twice/);
  });

  it('reject what is not one JSON object of strings and numbers, kind and version checked', async () => {
    await rejects(file(json(ALL) + 'x'), /not valid JSON/);
    await rejects(file(`[${json(ALL)}]`), /not valid JSON/);
    await rejects(file(json([...ALL.slice(0, 4), '"created": {"a": 1}'])), /not valid JSON/);
    await rejects(file(json(ALL).replace('1,', '1,,')), /not valid JSON/);
    await rejects(file('\ufeff' + json(ALL)), /not valid JSON/);
    await rejects(file(json(ALL).replace('"version": 1', '"version": "1"')), /kind\/version/);
    await rejects(file(json(ALL).replace('"version": 1', '"version": 2')), /kind\/version/);
    await rejects(file(json(ALL).replace('sealed-tensors-data-key', 'something-else')), /kind\/version/);
    await rejects(file(json(ALL).replace('"k1"', '"bad id!"')), /invalid id/);
    await rejects(file(''), /not valid JSON/);
  });

  it('report a missing file as ERR_KEY_FILE', async () => {
    await rejects(join(dir, 'missing.key'), /cannot read key file .*ENOENT/);
  });
});
