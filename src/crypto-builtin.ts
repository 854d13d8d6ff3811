/**
 * node:crypto, loaded on first use: its JS (about twenty internal modules) costs ~10 ms of start-up,
 * which a native `verify`, `inspect` or importing the package must not pay when they never use it.
 * Modules that need it on every path import it directly; these are for the ones that need it on some.
 */
import { createRequire } from 'node:module';
import type * as Crypto from 'node:crypto';

const require = createRequire(import.meta.url);

export const nodeCrypto = (): typeof Crypto => require('node:crypto') as typeof Crypto;
