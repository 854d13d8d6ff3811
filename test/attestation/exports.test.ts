import { expect, it } from 'vitest';

// src/index.ts restates the attestation API (cheap parts eagerly, verifiers behind lazy wrappers):
// a name added to src/attestation/index.ts and forgotten there would drop out of the package.
it('the package exports every value of the attestation API (NitroNsmProvider only from sealed-tensors/attestation)', async () => {
  const attestation = await import('../../src/attestation/index.js');
  const pkg = await import('../../src/index.js');
  const missing = Object.keys(attestation).filter((k) => !(k in pkg) && k !== 'NitroNsmProvider');
  expect(missing).toEqual([]);
});
