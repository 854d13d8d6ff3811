/**
 * Per-key attestation policies, stored as files under DIR/policies/. Every key's record names a
 * policy stored under its own digest (sha256-<hex>.json) and pins that digest too: such a file
 * never changes, a file edited behind the keystore's back is refused (never enforced), and no key
 * changes policy because someone edited a file another key was bound to. Named policies such as
 * policies/default.json are templates: binding a key to one stores a copy under its digest.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { IoError, NotFoundError, PolicyError } from '../errors.js';
import { parsePolicy, type Policy } from '../attestation/policy/policy.js';
import { BROKER_FILES } from './config.js';
import { readGuardedFile, writeFileAtomic } from './files.js';

export const POLICY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** The name of a policy stored under its digest. */
export const PINNED_POLICY_NAME = /^sha256-([0-9a-f]{64})$/;
export const MAX_POLICY_BYTES = 1024 * 1024;
export const DEFAULT_POLICY_NAME = 'default';
/** The measurement SimulatedTee reports unless given another (SHA-384 of its fixed label). */
export const SIMULATED_DEFAULT_MEASUREMENT = createHash('sha384').update('sealed-tensors simulated TEE').digest('hex');

export interface StoredPolicy {
  name: string;
  /** Hex SHA-256 of the file's bytes. */
  digest: string;
  policy: Policy;
  bytes: Uint8Array;
}

export function policyPath(dir: string, name: string): string {
  if (typeof name !== 'string' || !POLICY_NAME.test(name) || name.endsWith('.json')) {
    throw new PolicyError(`policy name ${JSON.stringify(name)} is not valid: letters, digits, '.', '_' and '-', without ".json"`);
  }
  return join(dir, BROKER_FILES.policies, `${name}.json`);
}

/** The policy file `name` under DIR/policies, validated, with its digest. */
export async function readStoredPolicy(dir: string, name: string): Promise<StoredPolicy> {
  const path = policyPath(dir, name);
  const bytes = await readGuardedFile(path, `policy "${name}"`, { maxBytes: MAX_POLICY_BYTES }).catch((err: unknown) => {
    if ((err as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT') {
      throw new NotFoundError(`there is no policy "${name}" (${path}): store one with "sealed-tensors broker policy set", or pass a policy file`, { cause: err });
    }
    throw err;
  });
  const digest = createHash('sha256').update(bytes).digest('hex');
  const pinned = PINNED_POLICY_NAME.exec(name);
  if (pinned && pinned[1] !== digest) {
    throw new PolicyError(`policies/${name}.json does not have the SHA-256 its name states: it was edited after it was stored; nothing is released under it`);
  }
  return { name, digest, bytes, policy: parsePolicy(Buffer.from(bytes).toString('utf8'), `policies/${name}.json`) };
}

/**
 * The policy to bind a key to: `name` itself when it is stored under its digest, otherwise (a
 * named template such as "default") a copy stored under its digest.
 */
export async function pinPolicy(dir: string, name: string, allowSimulated: boolean): Promise<StoredPolicy> {
  const stored = await readStoredPolicy(dir, name);
  checkPolicyForBroker(stored.policy, allowSimulated, `policies/${name}.json`);
  return PINNED_POLICY_NAME.test(name) ? stored : importPolicy(dir, stored.bytes, `policies/${name}.json`, allowSimulated);
}

/**
 * The broker's PolicyStore (the server's contract) over DIR/policies: hands out only policies
 * stored under their digest, checked against it; anything else is unknown (the server denies).
 * Such files never change, so each is read once.
 */
export class FilePolicyStore {
  private readonly cache = new Map<string, Policy>();

  constructor(private readonly dir: string) {}

  async get(name: string): Promise<Policy | undefined> {
    if (typeof name !== 'string' || !PINNED_POLICY_NAME.test(name)) return undefined;
    const hit = this.cache.get(name);
    if (hit) return hit;
    let stored: StoredPolicy;
    try {
      stored = await readStoredPolicy(this.dir, name);
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
    this.cache.set(name, stored.policy);
    return stored.policy;
  }
}

/**
 * The policy a key's record names, refused unless its bytes still have the digest the record
 * pins. This is what a broker enforces for a key.
 */
export async function loadKeyPolicy(dir: string, record: { keyId: string; policy: string; policyDigest: string }): Promise<Policy> {
  const stored = await readStoredPolicy(dir, record.policy);
  if (stored.digest !== record.policyDigest) {
    throw new PolicyError(
      `policies/${record.policy}.json changed since it was set for key "${record.keyId}" (its SHA-256 is not the one the keystore pins): nothing is released under a policy nobody set; run "sealed-tensors broker policy set --dir DIR ${record.keyId} FILE"`,
    );
  }
  return stored.policy;
}

/** Refuses a policy that accepts simulated evidence on a broker initialised without --allow-simulated. */
export function checkPolicyForBroker(policy: Policy, allowSimulated: boolean, source: string): void {
  if (policy.allowSimulated && !allowSimulated) {
    throw new PolicyError(`${source} allows simulated evidence, but this broker was initialised without --allow-simulated: simulated TEEs prove nothing; remove allowSimulated from the policy`);
  }
}

/**
 * Validates policy JSON text and stores it under its digest (sha256-<hex>); an identical policy
 * already there is reused. Returns its name and digest.
 */
export async function importPolicy(dir: string, text: Uint8Array, source: string, allowSimulated: boolean): Promise<StoredPolicy> {
  text = new Uint8Array(text);
  if (text.length > MAX_POLICY_BYTES) throw new PolicyError(`${source} is larger than ${MAX_POLICY_BYTES} bytes`);
  const policy = parsePolicy(Buffer.from(text).toString('utf8'), source);
  checkPolicyForBroker(policy, allowSimulated, source);
  const digest = createHash('sha256').update(text).digest('hex');
  const name = `sha256-${digest}`;
  try {
    await writeFileAtomic(policyPath(dir, name), text, { mode: 0o600, noClobber: true });
  } catch (err) {
    // Already stored: content-addressed, so it is this policy (readStoredPolicy refuses an edited copy).
    if (!(err instanceof IoError) || (err.cause as NodeJS.ErrnoException | undefined)?.code !== 'EEXIST') throw err;
    await readStoredPolicy(dir, name);
  }
  return { name, digest, policy, bytes: text };
}

/**
 * The policy `broker init` writes: debug denied; no real TEE allowed until an operator lists its
 * measurements (`broker policy set`); with --allow-simulated, the simulated TEE's default
 * measurement.
 */
export function defaultPolicyJson(allowSimulated: boolean): string {
  const policy = {
    version: 1,
    allowSimulated,
    tees: allowSimulated ? { simulated: { measurements: { measurement: [SIMULATED_DEFAULT_MEASUREMENT] }, allowDebug: false } } : {},
  };
  return `${JSON.stringify(policy, null, 2)}\n`;
}
