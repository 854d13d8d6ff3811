import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FilePolicyStore, importPolicy, loadKeyPolicy, pinPolicy } from '../../src/broker/policies.js';
import { KEY_A, MODEL_1, makeBroker, openBroker } from './helpers.js';

const SNP = (m: string): Buffer => Buffer.from(JSON.stringify({ version: 1, tees: { snp: { measurements: { measurement: [m.repeat(48)] } } } }));

describe('policies', () => {
  it('keys are bound to copies stored under their digest: editing default.json later changes no key', async () => {
    const { dir } = await makeBroker();
    const b = await openBroker(dir);
    const before = await b.keystore.add(KEY_A, { keyId: 'k', models: [MODEL_1], policy: 'default' });
    writeFileSync(join(dir, 'policies', 'default.json'), SNP('ab'));
    const store = new FilePolicyStore(dir);
    expect(await store.get(before.policy)).toMatchObject({ tees: {} });
    // A key added now gets the new template, under its own digest.
    const after = await b.keystore.add(KEY_A, { keyId: 'k2', models: [MODEL_1], policy: 'default' });
    expect(after.policy).not.toBe(before.policy);
    expect(Object.keys((await store.get(after.policy))!.tees)).toEqual(['snp']);
    expect(await loadKeyPolicy(dir, after)).toMatchObject({ tees: { snp: {} } });
    await b.close();
  });

  it('the policy store hands out only digest-named policies whose bytes match; an edited one is refused', async () => {
    const { dir } = await makeBroker();
    const p = await importPolicy(dir, SNP('cd'), 'p.json', false);
    expect(p.name).toBe(`sha256-${p.digest}`);
    expect((await importPolicy(dir, SNP('cd'), 'again.json', false)).name).toBe(p.name); // stored once
    const store = new FilePolicyStore(dir);
    expect(await store.get('default')).toBeUndefined(); // a template, never a key's policy
    expect(await store.get(`sha256-${'0'.repeat(64)}`)).toBeUndefined();
    expect(await store.get('../kek')).toBeUndefined();
    const file = join(dir, 'policies', `${p.name}.json`);
    writeFileSync(file, SNP('ef'));
    await expect(new FilePolicyStore(dir).get(p.name)).rejects.toMatchObject({ code: 'ERR_POLICY', message: expect.stringContaining('edited after it was stored') });
    await expect(pinPolicy(dir, p.name, false)).rejects.toMatchObject({ code: 'ERR_POLICY' });
    await expect(importPolicy(dir, SNP('cd'), 'p.json', false)).rejects.toMatchObject({ code: 'ERR_POLICY' });
    expect(readFileSync(file)).toEqual(SNP('ef')); // left for the operator to look at
    await expect(importPolicy(dir, Buffer.from('{"version": 1, "allowSimulated": true, "tees": {}}'), 's.json', false)).rejects.toMatchObject({ code: 'ERR_POLICY', message: expect.stringContaining('--allow-simulated') });
    await expect(importPolicy(dir, Buffer.from('{"version": 1, "tees": {"snp": {}}, "tees": {}}'), 'dup.json', false)).rejects.toMatchObject({ code: 'ERR_POLICY', message: expect.stringContaining('duplicate') });
  });
});
