import { expect, it } from 'vitest';

// The package's main entry must offer no way to decrypt with a key in hand: for inference, keys
// reach a process only through an EnclaveSession. The readers live in sealed-tensors/owner.
const DECRYPTING = ['SealedFileReader', 'SealedModelReader', 'NativeSealedFileReader', 'NativeSealedModelReader', 'openSealedModel', 'importKey', 'FileSource', 'MemorySource'];

it('the main entry exports no key-in-hand reader; sealed-tensors/owner has them all', async () => {
  const pkg = await import('../../src/index.js');
  const owner = await import('../../src/owner.js');
  expect(DECRYPTING.filter((name) => name in pkg)).toEqual([]);
  expect(DECRYPTING.filter((name) => !(name in owner))).toEqual([]);
  // and nothing on the main entry hands out a native handle usable by a reader
  for (const [name, value] of Object.entries(pkg)) {
    if (typeof value === 'function') expect(/reader|importkey|opensealed/i.test(name), name).toBe(false);
  }
});

it('package.json maps sealed-tensors/owner to the built owner module', async () => {
  const { readFileSync } = await import('node:fs');
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  expect(pkg.exports['./owner']).toEqual({ types: './dist/owner.d.ts', import: './dist/owner.js' });
});
