import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores on CI: forks keep native state (mlock, prctl) per test file.
    pool: 'forks',
    globalSetup: ['test/global-setup.ts'],
    // Registers test-only addon hooks (e.g. exporting an ephemeral private key to search memory for it).
    env: { SEALED_TENSORS_TEST_HOOKS: '1' },
  },
});
