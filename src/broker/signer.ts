/**
 * The broker's ES256 keys, one for tokens and one for receipts, each checked at start: a P-256 key whose public JWK
 * really is its public half (a sign/verify round trip), so a misconfigured key fails at start
 * instead of producing tokens nobody can verify.
 */
import { CompactSign, compactVerify, importJWK, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { InvalidArgumentError } from '../errors.js';
import type { BrokerSigningKey } from './options.js';

export const SIGNING_ALG = 'ES256';

export interface KeyPair {
  kid: string;
  /** Public members only. */
  publicJwk: JWK;
  privateKey: CryptoKey | KeyObject | Uint8Array;
  publicKey: CryptoKey | KeyObject | Uint8Array;
}

/** The token key (its members), and the receipt key beside it: receipt.ts signs with `receipt` only. */
export interface Signer extends KeyPair {
  receipt: KeyPair;
}

export async function prepareSigner(key: BrokerSigningKey, receiptKey: BrokerSigningKey): Promise<Signer> {
  const token = await prepareKey(key, 'signingKey');
  const receipt = await prepareKey(receiptKey, 'receiptKey');
  if (receipt.publicJwk.x === token.publicJwk.x && receipt.publicJwk.y === token.publicJwk.y) {
    throw new InvalidArgumentError('the receipt key must not be the signing key: whoever can mint tokens must not be able to mint receipts (broker init makes receipt.jwk)');
  }
  if (receipt.kid === token.kid) throw new InvalidArgumentError('receiptKey.kid must differ from signingKey.kid');
  return { ...token, receipt };
}

async function prepareKey(key: BrokerSigningKey, name: 'signingKey' | 'receiptKey'): Promise<KeyPair> {
  if (typeof key !== 'object' || key === null) throw new InvalidArgumentError(`broker option ${name} is required`);
  const { kid, publicJwk } = key;
  if (typeof kid !== 'string' || kid.length === 0 || kid.length > 128) throw new InvalidArgumentError(`${name}.kid must be a non-empty string`);
  if (typeof publicJwk !== 'object' || publicJwk === null || publicJwk.kty !== 'EC' || publicJwk.crv !== 'P-256' || typeof publicJwk.x !== 'string' || typeof publicJwk.y !== 'string') {
    throw new InvalidArgumentError(`${name}.publicJwk must be an EC P-256 public JWK (ES256)`);
  }
  if ('d' in publicJwk) throw new InvalidArgumentError(`${name}.publicJwk holds a private member "d": pass the public JWK only`);
  const pub: JWK = { kty: 'EC', crv: 'P-256', x: publicJwk.x, y: publicJwk.y };
  let privateKey: CryptoKey | KeyObject | Uint8Array;
  let publicKey: CryptoKey | KeyObject | Uint8Array;
  try {
    publicKey = await importJWK(pub, SIGNING_ALG);
    privateKey = isJwk(key.privateKey) ? await importJWK(key.privateKey, SIGNING_ALG) : key.privateKey;
    const probe = new TextEncoder().encode('sealed-tensors broker signing-key check');
    const jws = await new CompactSign(probe).setProtectedHeader({ alg: SIGNING_ALG }).sign(privateKey);
    await compactVerify(jws, publicKey, { algorithms: [SIGNING_ALG] });
  } catch (cause) {
    throw new InvalidArgumentError(`${name}.privateKey must be the P-256 private key of ${name}.publicJwk (an ES256 sign/verify check failed)`, { cause });
  }
  return { kid, publicJwk: pub, privateKey, publicKey };
}

function isJwk(k: unknown): k is JWK {
  // KeyObject and CryptoKey have no kty.
  return typeof k === 'object' && k !== null && typeof (k as { kty?: unknown }).kty === 'string';
}
