import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog, verifyAuditLog } from '../../src/broker/audit.js';
import { loadBrokerConfig } from '../../src/broker/config.js';
import { writeFileAtomic } from '../../src/broker/files.js';
import { FileKeystore, deriveKeystoreKeys, keystoreMac } from '../../src/broker/keystore.js';
import { importPolicy } from '../../src/broker/policies.js';
import { KEY_A, KEY_B, MODEL_1, MODEL_2, makeBroker, openBroker } from './helpers.js';

type Doc = { generation: number; keys: Record<string, unknown>[]; mac: string; [k: string]: unknown };
const readDoc = (dir: string): Doc => JSON.parse(readFileSync(join(dir, 'keystore.json'), 'utf8'));
const writeDoc = (dir: string, doc: Doc): void => writeFileSync(join(dir, 'keystore.json'), JSON.stringify(doc, null, 2));

/** Rewrites keystore.json with a valid MAC: what an attacker holding the kek could do. */
async function forgeDoc(dir: string, edit: (doc: Doc) => void): Promise<void> {
  const config = await loadBrokerConfig(dir);
  const doc = readDoc(dir);
  edit(doc);
  doc.mac = keystoreMac(deriveKeystoreKeys(config.kek).mac, doc);
  writeDoc(dir, doc);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? `not a SealedTensorsError: ${String(err)}`;
  }
}

describe('FileKeystore', () => {
  it('round trip: add, list, get, withDataKey hands out the key and wipes it afterwards', async () => {
    const { dir } = await makeBroker();
    const b = await openBroker(dir);
    const rec = await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1, MODEL_1], policy: 'default' });
    // Bound to a copy of the default policy stored under its digest: later edits of default.json do not reach it.
    const defaultDigest = createHash('sha256').update(readFileSync(join(dir, 'policies', 'default.json'))).digest('hex');
    expect(rec).toMatchObject({ keyId: 'key-a', state: 'active', models: [MODEL_1], policy: `sha256-${defaultDigest}`, policyDigest: defaultDigest, version: 1 });
    expect(readFileSync(join(dir, 'policies', `sha256-${defaultDigest}.json`))).toEqual(readFileSync(join(dir, 'policies', 'default.json')));
    let seen: Uint8Array | undefined;
    const copy = await b.keystore.withDataKey('key-a', async (key, record) => {
      seen = key;
      expect(record.keyId).toBe('key-a');
      return Uint8Array.from(key);
    });
    expect(copy).toEqual(KEY_A);
    expect(seen!.every((x) => x === 0)).toBe(true);
    // Wiped on failure too.
    await expect(b.keystore.withDataKey('key-a', async (key) => {
      seen = key;
      throw new Error('callback failed');
    })).rejects.toThrow('callback failed');
    expect(seen!.every((x) => x === 0)).toBe(true);
    expect(await codeOf(b.keystore.withDataKey('nope', async () => 0))).toBe('ERR_NOT_FOUND');
    expect(await codeOf(b.keystore.add(KEY_B, { keyId: 'key-a', models: [], policy: 'default' }))).toBe('ERR_INVALID_ARGUMENT');
    expect(await codeOf(b.keystore.add(KEY_B, { keyId: 'key-b', models: [], policy: 'nope' }))).toBe('ERR_NOT_FOUND');
    expect(await codeOf(b.keystore.add(KEY_B, { keyId: 'key-b', models: [], policy: '../x' }))).toBe('ERR_POLICY');
    expect(await codeOf(b.keystore.add(KEY_B.subarray(1), { keyId: 'key-b', models: [], policy: 'default' }))).toBe('ERR_INVALID_ARGUMENT');
    expect(await codeOf(b.keystore.add(KEY_B, { keyId: 'bad id', models: [], policy: 'default' }))).toBe('ERR_INVALID_ARGUMENT');
    expect(await codeOf(b.keystore.add(KEY_B, { keyId: 'key-b', models: [{ bundleId: 'x', headerDigest: 'y' }], policy: 'default' }))).toBe('ERR_INVALID_ARGUMENT');
    expect(await codeOf(b.keystore.rotate('nope', KEY_B, { keyId: 'key-b', models: [] }))).toBe('ERR_NOT_FOUND');
    expect(await codeOf(b.keystore.revoke('nope', 'r'))).toBe('ERR_NOT_FOUND');
    expect((await b.keystore.list()).map((r) => r.keyId)).toEqual(['key-a']);
    await b.close();

    // Another process's view: a fresh open reads the same.
    const c = await openBroker(dir);
    expect((await c.keystore.list()).map((r) => r.keyId)).toEqual(['key-a']);
    expect(await c.keystore.withDataKey('key-a', async (k) => Uint8Array.from(k))).toEqual(KEY_A);
    await c.close();

    // The file holds no key in the clear, and each wrapping uses its own nonce.
    const text = readFileSync(join(dir, 'keystore.json'), 'utf8');
    expect(text).not.toContain(Buffer.from(KEY_A).toString('base64url'));
    expect(text).not.toContain(Buffer.from(KEY_A).toString('hex'));
    expect(statSync(join(dir, 'keystore.json')).mode & 0o777).toBe(0o600);
  });

  it('addModels, setPolicy and rotate change records; every change is audited with the keystore generation', async () => {
    const { dir } = await makeBroker();
    const b = await openBroker(dir);
    await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
    const n1 = readDoc(dir).keys[0]!.wrap as { nonce: string };
    expect((await b.keystore.addModels('key-a', [MODEL_1, MODEL_2])).models).toEqual([MODEL_1, MODEL_2]);
    const n2 = readDoc(dir).keys[0]!.wrap as { nonce: string };
    expect(n2.nonce).not.toBe(n1.nonce); // re-wrapped under the new version
    const p = await importPolicy(dir, Buffer.from(JSON.stringify({ version: 1, tees: { snp: { measurements: { measurement: ['ab'.repeat(48)] } } } })), 'p.json', false);
    await b.keystore.setPolicy('key-a', p.name);
    expect(await b.keystore.get('key-a')).toMatchObject({ policy: p.name, policyDigest: p.digest, version: 3 });
    expect(await b.keystore.withDataKey('key-a', async (k) => Uint8Array.from(k))).toEqual(KEY_A);

    // Rotation (default): the new key inherits the policy, the old one is revoked.
    const r = await b.keystore.rotate('key-a', KEY_B, { keyId: 'key-b', models: [MODEL_2] });
    expect(r).toMatchObject({ keyId: 'key-b', rotatedFrom: 'key-a', policy: p.name, state: 'active' });
    expect(await b.keystore.get('key-a')).toMatchObject({ state: 'revoked', rotatedTo: 'key-b', revocationReason: 'rotated to key-b' });
    expect(await codeOf(b.keystore.withDataKey('key-a', async () => 0))).toBe('ERR_KEY_REVOKED');
    expect(await b.keystore.withDataKey('key-b', async (k) => Uint8Array.from(k))).toEqual(KEY_B);

    // Rotation with keepOld: both stay usable.
    await b.keystore.rotate('key-b', KEY_A.map((x) => x ^ 0xff), { keyId: 'key-c', models: [MODEL_2], keepOld: true });
    expect(await b.keystore.get('key-b')).toMatchObject({ state: 'active', rotatedTo: 'key-c' });
    await b.close();

    const lines = readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.event, l.generation])).toEqual([
      ['init', 0],
      ['key-add', 1],
      ['key-bind', 2],
      ['policy-set', 3],
      ['key-rotate', 4],
      ['key-rotate', 5],
    ]);
    expect(lines[2].models).toEqual([MODEL_2]);
    expect(lines[4]).toMatchObject({ keyId: 'key-a', newKeyId: 'key-b', oldRevoked: true });
    expect((await verifyAuditLog(dir)).ok).toBe(true);
  });

  it('revocation: never released again, the wrapped key is deleted, and it survives reopening', async () => {
    const { dir } = await makeBroker();
    const b = await openBroker(dir);
    await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
    await b.keystore.add(KEY_B, { keyId: 'key-b', models: [MODEL_2], policy: 'default' });
    await b.keystore.revoke('key-a', 'leaked');
    await b.keystore.revoke('key-a', 'again'); // no change
    expect(await codeOf(b.keystore.withDataKey('key-a', async () => 0))).toBe('ERR_KEY_REVOKED');
    expect(await codeOf(b.keystore.addModels('key-a', [MODEL_2]))).toBe('ERR_KEY_REVOKED');
    expect(await codeOf(b.keystore.setPolicy('key-a', 'default'))).toBe('ERR_KEY_REVOKED');
    expect(await codeOf(b.keystore.add(KEY_A, { keyId: 'key-a', models: [], policy: 'default' }))).toBe('ERR_INVALID_ARGUMENT');
    expect(await b.keystore.get('key-a')).toMatchObject({ state: 'revoked', revocationReason: 'leaked' });
    await b.close();
    const rec = readDoc(dir).keys.find((k) => k.keyId === 'key-a')!;
    expect(rec.wrap).toBeUndefined();
    const c = await openBroker(dir);
    expect(await codeOf(c.keystore.withDataKey('key-a', async () => 0))).toBe('ERR_KEY_REVOKED');
    expect(await c.keystore.withDataKey('key-b', async (k) => Uint8Array.from(k))).toEqual(KEY_B);
    await c.close();
    const events = readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).event);
    expect(events.filter((e) => e === 'key-revoke')).toHaveLength(1);
  });

  it('a revocation by another process is seen by an open keystore at its next use', async () => {
    const { dir } = await makeBroker();
    const server = await openBroker(dir);
    await server.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
    const operator = await openBroker(dir);
    await operator.keystore.revoke('key-a', 'by the operator');
    await operator.close();
    expect(await codeOf(server.keystore.withDataKey('key-a', async () => 0))).toBe('ERR_KEY_REVOKED');
    await server.close();
  });

  it('a reader racing a writer (another instance) never sees a false inconsistency', async () => {
    const { dir } = await makeBroker();
    const writer = await openBroker(dir);
    const reader = await openBroker(dir);
    await writer.keystore.add(KEY_A, { keyId: 'stable', models: [MODEL_1], policy: 'default' });
    let writing = true;
    const writes = (async () => {
      for (let i = 0; i < 15; i++) {
        await writer.keystore.add(KEY_B, { keyId: `k${i}`, models: [], policy: 'default' });
        await writer.keystore.revoke(`k${i}`, 'r');
        await writer.audit.append({ event: 'attest', n: i });
      }
      writing = false;
    })();
    let reads = 0;
    while (writing) {
      expect(await reader.keystore.withDataKey('stable', async (k) => k[0])).toBe(1);
      const keys = await reader.keystore.list();
      for (const k of keys) if (k.keyId !== 'stable' && k.state === 'active') expect(await codeOf(reader.keystore.withDataKey(k.keyId, async () => 0))).toMatch(/^(ok|ERR_KEY_REVOKED)$/);
      reads++;
    }
    await writes;
    expect(reads).toBeGreaterThan(0);
    expect((await reader.keystore.list()).filter((k) => k.state === 'revoked')).toHaveLength(15);
    await writer.close();
    await reader.close();
    expect((await verifyAuditLog(dir)).ok).toBe(true);
  });

  describe('tampering is refused with typed errors', () => {
    async function brokerWithKeys(): Promise<string> {
      const { dir } = await makeBroker();
      const b = await openBroker(dir);
      await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
      await b.keystore.add(KEY_B, { keyId: 'key-b', models: [MODEL_2], policy: 'default' });
      await b.close();
      return dir;
    }
    const open = async (dir: string): Promise<string> => {
      const config = await loadBrokerConfig(dir);
      const audit = await AuditLog.open(dir);
      try {
        const ks = await FileKeystore.open(config, audit);
        try {
          await ks.withDataKey('key-a', async () => 0);
          await ks.withDataKey('key-b', async () => 0);
          return 'ok';
        } finally {
          await ks.close();
        }
      } catch (err) {
        lastMessage = (err as Error).message;
        return (err as { code?: string }).code ?? String(err);
      } finally {
        await audit.close();
      }
    };
    let lastMessage = '';

    it('a flipped character in a wrapped key, a changed model, a changed policy pin: the MAC', async () => {
      const dir = await brokerWithKeys();
      const original = readFileSync(join(dir, 'keystore.json'));
      const edits: ((d: Doc) => void)[] = [
        (d) => {
          const w = d.keys[0]!.wrap as { ciphertext: string };
          w.ciphertext = (w.ciphertext[0] === 'A' ? 'B' : 'A') + w.ciphertext.slice(1);
        },
        (d) => void ((d.keys[0]!.models as { label: string }[])[0]!.label = 'other'),
        (d) => void (d.keys[1]!.policyDigest = '00'.repeat(32)),
        (d) => void (d.generation += 1),
      ];
      for (const edit of edits) {
        const doc = JSON.parse(original.toString('utf8'));
        edit(doc);
        writeDoc(dir, doc);
        expect(await open(dir)).toBe('ERR_KEYSTORE');
      }
      writeFileSync(join(dir, 'keystore.json'), original);
      expect(await open(dir)).toBe('ok');
    });

    it('two records swapping their wrapped keys (even with a valid MAC): the AAD binds the key id', async () => {
      const dir = await brokerWithKeys();
      await forgeDoc(dir, (d) => {
        const [a, b] = [d.keys[0]!.wrap, d.keys[1]!.wrap];
        d.keys[0]!.wrap = b;
        d.keys[1]!.wrap = a;
      });
      expect(await open(dir)).toBe('ERR_KEYSTORE');
      expect(lastMessage).toContain('wrapped key of "key-a" does not authenticate');
    });

    it('a record version edited (with a valid MAC): the AAD binds the version', async () => {
      const dir = await brokerWithKeys();
      await forgeDoc(dir, (d) => void (d.keys[0]!.version = 2));
      expect(await open(dir)).toBe('ERR_KEYSTORE');
      expect(lastMessage).toContain('wrapped key of "key-a" does not authenticate');
    });

    it('a revoked key edited back to active: refused by the MAC, and with a forged MAC by the audit log', async () => {
      const dir = await brokerWithKeys();
      const before = readDoc(dir);
      const b = await openBroker(dir);
      await b.keystore.revoke('key-a', 'compromised');
      await b.close();
      const revive = (d: Doc): void => {
        const r = d.keys[0]!;
        r.state = 'active';
        r.wrap = before.keys[0]!.wrap;
        r.version = before.keys[0]!.version;
        delete r.revokedAt;
        delete r.revocationReason;
      };
      const doc = readDoc(dir);
      revive(doc);
      writeDoc(dir, doc);
      expect(await open(dir)).toBe('ERR_KEYSTORE');
      expect(lastMessage).toContain('does not authenticate under this kek');
      await forgeDoc(dir, revive);
      expect(await open(dir)).toBe('ERR_KEYSTORE');
      expect(lastMessage).toContain('records key "key-a" as revoked');
    });

    it('rollback to an older authentic keystore.json: refused (generation behind the audit log)', async () => {
      const { dir, root } = await makeBroker();
      const b = await openBroker(dir);
      await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
      copyFileSync(join(dir, 'keystore.json'), join(root, 'old.json'));
      await b.keystore.addModels('key-a', [MODEL_2]);
      await b.close();
      copyFileSync(join(root, 'old.json'), join(dir, 'keystore.json'));
      const config = await loadBrokerConfig(dir);
      const audit = await AuditLog.open(dir);
      await expect(FileKeystore.open(config, audit)).rejects.toMatchObject({ code: 'ERR_KEYSTORE', message: expect.stringContaining('rolled back') });
      await audit.close();
    });

    it('a keystore.json from another broker, or the wrong kek: refused', async () => {
      const dir = await brokerWithKeys();
      writeFileSync(join(dir, 'kek'), randomBytes(32), { mode: 0o600 });
      expect(await open(dir)).toBe('ERR_KEYSTORE');
      const other = (await makeBroker()).dir;
      copyFileSync(join(other, 'keystore.json'), join(dir, 'keystore.json'));
      expect(await open(dir)).toBe('ERR_KEYSTORE');
    });

    it('malformed files: not JSON, unknown members, duplicate key ids', async () => {
      const dir = await brokerWithKeys();
      const original = readFileSync(join(dir, 'keystore.json'), 'utf8');
      writeFileSync(join(dir, 'keystore.json'), original.slice(0, 100));
      expect(await open(dir)).toBe('ERR_KEYSTORE');
      writeFileSync(join(dir, 'keystore.json'), original);
      await forgeDoc(dir, (d) => void (d.keys[1] = { ...d.keys[0]! }));
      expect(await open(dir)).toBe('ERR_KEYSTORE');
      writeFileSync(join(dir, 'keystore.json'), original);
      await forgeDoc(dir, (d) => void (d.extra = 1));
      expect(await open(dir)).toBe('ERR_KEYSTORE');
    });
  });

  describe('crash safety', () => {
    it('an atomic write that dies before its rename leaves the old file (and only a temp file)', async () => {
      const { dir } = await makeBroker();
      const b = await openBroker(dir);
      await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
      const before = readFileSync(join(dir, 'keystore.json'));
      // A writer killed between write and rename leaves its temp file: the keystore is the old one.
      writeFileSync(join(dir, '.keystore.json.tmp-deadbeef0000'), before.subarray(0, 50), { mode: 0o600 });
      await b.close();
      const c = await openBroker(dir);
      expect((await c.keystore.list()).map((r) => r.keyId)).toEqual(['key-a']);
      await c.keystore.addModels('key-a', [MODEL_2]);
      await c.close();
      expect(readFileSync(join(dir, 'keystore.json')).equals(before)).toBe(false);
      // writeFileAtomic replaces in one step; noClobber never replaces.
      await writeFileAtomic(join(dir, 'x'), 'one', { mode: 0o600 });
      await writeFileAtomic(join(dir, 'x'), 'two', { mode: 0o600 });
      expect(readFileSync(join(dir, 'x'), 'utf8')).toBe('two');
      await expect(writeFileAtomic(join(dir, 'x'), 'three', { mode: 0o600, noClobber: true })).rejects.toMatchObject({ code: 'ERR_IO' });
      expect(readFileSync(join(dir, 'x'), 'utf8')).toBe('two');
      expect(readdirSync(dir).filter((n) => n.startsWith('.x.'))).toEqual([]);
    });

    it('a crash between the keystore write and its audit entry: the entry is recovered at the next open', async () => {
      const { dir } = await makeBroker();
      const b = await openBroker(dir);
      await b.keystore.add(KEY_A, { keyId: 'key-a', models: [MODEL_1], policy: 'default' });
      // The audit append fails as if the process died right after the keystore's rename.
      const append = b.audit.appendLocked.bind(b.audit);
      b.audit.appendLocked = async () => {
        throw new Error('killed');
      };
      await expect(b.keystore.revoke('key-a', 'leaked')).rejects.toThrow('killed');
      b.audit.appendLocked = append;
      await b.close();
      expect(readDoc(dir).generation).toBe(2);
      expect(readFileSync(join(dir, 'audit.log'), 'utf8')).not.toContain('key-revoke');
      const c = await openBroker(dir);
      expect(await codeOf(c.keystore.withDataKey('key-a', async () => 0))).toBe('ERR_KEY_REVOKED');
      await c.close();
      const last = JSON.parse(readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n').at(-1)!);
      expect(last).toMatchObject({ event: 'key-revoke', keyId: 'key-a', generation: 2, recovered: true });
      expect((await verifyAuditLog(dir)).ok).toBe(true);
    });

    it('a process killed at any point of a stream of keystore changes leaves a folder that opens and verifies', async () => {
      const { dir } = await makeBroker();
      const dist = resolve('dist/broker');
      // The child adds and revokes keys until killed; it reports each completed change.
      const script = `
        const { loadBrokerConfig } = await import(${JSON.stringify(join(dist, 'config.js'))});
        const { AuditLog } = await import(${JSON.stringify(join(dist, 'audit.js'))});
        const { FileKeystore } = await import(${JSON.stringify(join(dist, 'keystore.js'))});
        const config = await loadBrokerConfig(process.argv[1]);
        const audit = await AuditLog.open(process.argv[1]);
        const ks = await FileKeystore.open(config, audit);
        for (let i = 0; ; i++) {
          await ks.add(new Uint8Array(32).fill(i % 256), { keyId: process.argv[2] + i, models: [], policy: 'default' });
          if (i % 2) await ks.revoke(process.argv[2] + (i - 1), 'r');
          process.stdout.write(i + '\\n');
        }`;
      for (const after of [1, 4, 9]) {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir, `run${after}-`], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        await new Promise<void>((res, rej) => {
          let out = '';
          child.stdout.on('data', (d) => {
            out += d;
            if (out.split('\n').length > after) {
              child.kill('SIGKILL');
              res();
            }
          });
          child.on('exit', (code) => (code !== null ? rej(new Error(`child exited ${code}: ${stderr}`)) : res()));
        });
        await new Promise((r) => child.once('close', r));
        // Whatever the moment of the kill: the folder opens, keys are consistent, the chain verifies.
        const b = await openBroker(dir);
        const keys = await b.keystore.list();
        for (const k of keys.filter((x) => x.state === 'active')) await b.keystore.withDataKey(k.keyId, async () => 0);
        await b.close();
        expect((await verifyAuditLog(dir)).ok).toBe(true);
      }
    });
  });
});
