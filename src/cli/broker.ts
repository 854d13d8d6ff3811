import type { Command } from 'commander';
import { InvalidArgumentError } from '../errors.js';
import type { CommandContext } from './main.js';
import { ExitCode, writeJson } from './io.js';
import type { AuditDecision } from '../broker/audit.js';

/**
 * `sealed-tensors broker ...`: the key broker's folder, keys, policies and audit log. Each action
 * loads what it needs when it runs (init alone pays for the X.509 code, audit verify for jose).
 */

/** One release or denial, one line: seq, time, verdict, key, models, TEE, receipt or reasons. */
function formatDecision(d: AuditDecision): string {
  const keys = d.keyIds.length ? d.keyIds.join(',') : '-';
  const models = d.models.length ? d.models.map((m) => m.label ?? `bundle ${m.bundleId.slice(0, 16)}`).join(',') : '-';
  const where = d.verdict === 'deny' ? ` at ${d.event}` : '';
  const tail = d.verdict === 'release' ? (d.receiptId ? `  receipt ${d.receiptId}` : '') : d.reasons.length ? `  reasons: ${d.reasons.join('; ')}` : '';
  return `  ${String(d.seq).padStart(6)}  ${d.time}  ${d.verdict === 'release' ? 'RELEASE' : 'DENY   '}  key ${keys}  model ${models}${d.tee ? `  tee ${d.tee}` : ''}${where}${tail}`;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Config, audit log and keystore of a broker folder, opened for one command. */
async function openFolder(dir: string) {
  const { loadBrokerConfig } = await import('../broker/config.js');
  const { AuditLog } = await import('../broker/audit.js');
  const { FileKeystore } = await import('../broker/keystore.js');
  const config = await loadBrokerConfig(dir);
  const audit = await AuditLog.open(dir);
  try {
    const keystore = await FileKeystore.open(config, audit);
    return {
      config,
      audit,
      keystore,
      close: async () => {
        await keystore.close();
        await audit.close();
      },
    };
  } catch (err) {
    await audit.close();
    throw err;
  }
}

/**
 * --policy POLICY: the name of a policy already under DIR/policies (e.g. "default"), or a policy
 * file to validate and store.
 */
async function resolvePolicy(dir: string, arg: string, allowSimulated: boolean): Promise<string> {
  const { POLICY_NAME, importPolicy, readStoredPolicy } = await import('../broker/policies.js');
  const { NotFoundError } = await import('../errors.js');
  const { stat } = await import('node:fs/promises');
  if (POLICY_NAME.test(arg) && !arg.endsWith('.json')) {
    try {
      return (await readStoredPolicy(dir, arg)).name;
    } catch (err) {
      // Not a stored policy: maybe a file of that name.
      if (!(err instanceof NotFoundError) || !(await stat(arg).catch(() => undefined))) throw err;
    }
  }
  return (await importPolicy(dir, await readPolicyFile(arg), arg, allowSimulated)).name;
}

async function readPolicyFile(path: string): Promise<Uint8Array> {
  const { readRegularFile } = await import('../regular-file.js');
  const { MAX_POLICY_BYTES } = await import('../broker/policies.js');
  const { stat } = await import('node:fs/promises');
  const st = await stat(path).catch(() => undefined);
  if (st && st.size > MAX_POLICY_BYTES) throw new InvalidArgumentError(`policy file ${path} is larger than ${MAX_POLICY_BYTES} bytes`);
  return readRegularFile(path, 'pass a policy JSON file (docs/ATTESTATION.md)');
}

/** Reads a key file and the bindings of the models given for it; the key is wiped on failure. */
async function keyAndModels(keyPath: string, models: readonly string[]) {
  const { readKeyFile } = await import('../keys/key-file.js');
  const { readModelBinding } = await import('./broker-models.js');
  const key = await readKeyFile(keyPath);
  try {
    const bindings = [];
    for (const m of models) bindings.push(await readModelBinding(m, key));
    return { key, bindings };
  } catch (err) {
    key.key.fill(0);
    throw err;
  }
}

const NO_MODEL_NOTE = (keyId: string, dir: string): string =>
  `note: key "${keyId}" has no sealed model bound: sessions can open nothing with it until you run "sealed-tensors broker key bind --dir ${dir} ${keyId} --model SEALED"\n`;

export function registerBroker(program: Command, ctx: CommandContext): void {
  const broker = program.command('broker').description('Run and manage a key broker: its folder, keys, policies and audit log.');

  broker
    .command('init')
    .description('Create a ready broker folder: config, empty keystore, key-encryption key, CA and server certificate, signing key, default policy, audit log.')
    .argument('<DIR>', 'folder to create (must not exist, or be empty)')
    .option('--allow-simulated', 'let key policies accept the simulated TEE (development only: it proves nothing)')
    .option('--hostname <NAME>', 'another DNS name or IP address for the server certificate (besides localhost, 127.0.0.1, ::1); repeatable', collect)
    .option('--simulated-root <SHA256>', 'trust this simulated TEE root key fingerprint (with --allow-simulated); repeatable', collect)
    .option('--simulated-key <FILE>', 'trust the simulated TEE root key in FILE, created (0600) if missing; "load --simulated --simulated-key FILE" uses it (with --allow-simulated; development only)')
    .option('--listen <HOST:PORT>', 'default address for "broker serve"', '127.0.0.1:8443')
    .option('--json', 'print a JSON summary')
    .action(async (dir: string, opts: { allowSimulated?: boolean; hostname?: string[]; simulatedRoot?: string[]; simulatedKey?: string; listen: string; json?: boolean }) => {
      const { initBroker } = await import('../broker/init.js');
      const roots = [...(opts.simulatedRoot ?? [])];
      let simKey: { path: string; fingerprint: string; created: boolean } | undefined;
      if (opts.simulatedKey !== undefined) {
        if (opts.allowSimulated !== true) throw new InvalidArgumentError('--simulated-key needs --allow-simulated');
        const { simulatedRootKey } = await import('./simulated-key.js');
        const { SimulatedTee } = await import('../attestation/providers/simulated.js');
        const { key, created } = await simulatedRootKey(opts.simulatedKey, '--simulated-key');
        simKey = { path: opts.simulatedKey, fingerprint: new SimulatedTee({ rootKey: key }).rootFingerprint, created };
        roots.push(simKey.fingerprint);
      }
      let r;
      try {
        r = await initBroker(dir, { allowSimulated: opts.allowSimulated === true, hostnames: opts.hostname ?? [], simulatedRoots: roots, listen: opts.listen });
      } catch (err) {
        // Nothing half-done: a root key made for a broker that was not made goes too.
        if (simKey?.created) await (await import('node:fs/promises')).rm(simKey.path, { force: true });
        throw err;
      }
      if (opts.json) writeJson(ctx.io, { ...r, ...(simKey ? { simulatedKey: simKey } : {}) });
      else {
        ctx.io.stdout(
          [
            `created broker folder ${r.dir}`,
            `  clients trust ${r.caPath} (--ca); the certificate covers ${r.hostnames.join(', ')}`,
            `  clients pin ${r.publicKeysPath} (--broker-key): the public keys of tokens and receipts`,
            `  signing key ${r.signingKeyId} (tokens), receipt key ${r.receiptKeyId} (receipts; auditors need receipt.pub.jwk)`,
            `  policies/default.json denies every real TEE until it lists measurements: set a key's policy with`,
            `    sealed-tensors broker policy set --dir ${dir} KEYID POLICY.json`,
            ...(r.allowSimulated ? ['  SIMULATED TEEs allowed (--allow-simulated): for development only'] : []),
            ...(simKey
              ? [`  trusts the simulated TEE root key ${simKey.path}${simKey.created ? ' (created)' : ''}, fingerprint ${simKey.fingerprint}: load --simulated --simulated-key ${simKey.path}`]
              : []),
            '',
          ].join('\n'),
        );
      }
    });

  broker
    .command('serve')
    .description('Serve the KBS attestation protocol over HTTPS from a broker folder; prints "listening on URL" once it accepts connections; SIGTERM or SIGINT stops it cleanly.')
    .requiredOption('--dir <DIR>', 'broker folder')
    .option('--listen <HOST:PORT>', "address to listen on (port 0 picks a free one); default: config.json's")
    .option('--allow-plain-http-on-loopback', 'plain HTTP instead of HTTPS, on a loopback address only (development)')
    .option('--verify-threads <N>', 'verify evidence in N worker threads (1 to 16) beside the thread that serves requests; default: in that thread')
    .action(async (opts: { dir: string; listen?: string; allowPlainHttpOnLoopback?: boolean; verifyThreads?: string }) => {
      const { openBrokerFolder, brokerOptions } = await import('../broker/folder.js');
      const { startBroker } = await import('../broker/server.js');
      const { IoError, SealedTensorsError } = await import('../errors.js');
      let verifyThreads: number | undefined;
      if (opts.verifyThreads !== undefined) {
        verifyThreads = Number(opts.verifyThreads);
        if (!/^\d+$/.test(opts.verifyThreads) || verifyThreads < 1 || verifyThreads > 16) throw new InvalidArgumentError(`--verify-threads must be an integer from 1 to 16, got ${JSON.stringify(opts.verifyThreads)}`);
      }
      const b = await openBrokerFolder(opts.dir);
      let running;
      try {
        const options = brokerOptions(b, { ...(opts.listen ? { listen: opts.listen } : {}), allowPlainHttpOnLoopback: opts.allowPlainHttpOnLoopback === true, ...(verifyThreads ? { verifyThreads } : {}) });
        running = await startBroker(options).catch((err: unknown) => {
          if (err instanceof SealedTensorsError) throw err;
          throw new IoError(`cannot listen on ${options.host}:${options.port} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
        });
      } catch (err) {
        await b.close();
        throw err;
      }
      ctx.io.stdout(`listening on ${running.url}\n`);
      const signal = await new Promise<string>((resolve) => {
        const stop = (s: string): void => {
          process.off('SIGTERM', onTerm);
          process.off('SIGINT', onInt);
          resolve(s);
        };
        const onTerm = (): void => stop('SIGTERM');
        const onInt = (): void => stop('SIGINT');
        process.on('SIGTERM', onTerm);
        process.on('SIGINT', onInt);
      });
      // In-flight requests finish (up to the server's close timeout); queued audit entries are written.
      await running.close();
      await b.close();
      ctx.io.stderr(`stopped by ${signal}\n`);
      ctx.exitCode = ExitCode.OK;
    });

  const key = broker.command('key').description('Add, bind, rotate, revoke and list data keys.');

  key
    .command('add')
    .description('Add a data key (from its key file), bound to the sealed models it may open.')
    .requiredOption('--dir <DIR>', 'broker folder')
    .requiredOption('--key <KEYFILE>', 'data key file (from "sealed-tensors keygen")')
    .option('--model <SEALED>', 'sealed model file, sealed index or sealed model folder sealed under this key; repeatable', collect)
    .option('--policy <POLICY>', 'policy name under DIR/policies, or a policy JSON file', 'default')
    .option('--json', 'print the key record as JSON')
    .action(async (opts: { dir: string; key: string; model?: string[]; policy: string; json?: boolean }) => {
      const b = await openFolder(opts.dir);
      try {
        const { key: k, bindings } = await keyAndModels(opts.key, opts.model ?? []);
        let record;
        try {
          const policy = await resolvePolicy(opts.dir, opts.policy, b.config.allowSimulated);
          record = await b.keystore.add(k.key, { keyId: k.id, models: bindings, policy });
        } finally {
          k.key.fill(0);
        }
        if (opts.json) writeJson(ctx.io, record);
        else ctx.io.stdout(`added key "${record.keyId}" with ${record.models.length} model(s), policy ${record.policy}\n`);
        if (record.models.length === 0) ctx.io.stderr(NO_MODEL_NOTE(record.keyId, opts.dir));
      } finally {
        await b.close();
      }
    });

  key
    .command('bind')
    .description('Bind more sealed models to an active key (e.g. a new version sealed under the same key).')
    .argument('<KEYID>', 'key id')
    .requiredOption('--dir <DIR>', 'broker folder')
    .requiredOption('--key <KEYFILE>', 'the key file (each model is checked to open with it)')
    .requiredOption('--model <SEALED>', 'sealed model file, sealed index or sealed model folder; repeatable', collect)
    .option('--json', 'print the key record as JSON')
    .action(async (keyId: string, opts: { dir: string; key: string; model: string[]; json?: boolean }) => {
      const b = await openFolder(opts.dir);
      try {
        const { key: k, bindings } = await keyAndModels(opts.key, opts.model);
        k.key.fill(0);
        if (k.id !== keyId) throw new InvalidArgumentError(`the key file holds key "${k.id}", not "${keyId}"`);
        const record = await b.keystore.addModels(keyId, bindings);
        if (opts.json) writeJson(ctx.io, record);
        else ctx.io.stdout(`key "${keyId}" is bound to ${record.models.length} model(s)\n`);
      } finally {
        await b.close();
      }
    });

  key
    .command('rotate')
    .description('Replace a key by a new one (from its key file). The old key is revoked unless --keep-old.')
    .requiredOption('--dir <DIR>', 'broker folder')
    .requiredOption('--key-id <ID>', 'the key id to rotate away from')
    .requiredOption('--key <NEWKEYFILE>', 'the new data key file')
    .option('--model <SEALED>', 'sealed model (re-sealed under the new key) to bind to it; repeatable', collect)
    .option('--policy <POLICY>', "policy for the new key (default: the old key's)")
    .option('--keep-old', 'keep the old key active (models sealed under it still load) until you revoke it')
    .option('--json', 'print the new key record as JSON')
    .action(async (opts: { dir: string; keyId: string; key: string; model?: string[]; policy?: string; keepOld?: boolean; json?: boolean }) => {
      const b = await openFolder(opts.dir);
      try {
        const { key: k, bindings } = await keyAndModels(opts.key, opts.model ?? []);
        let record;
        try {
          const policy = opts.policy !== undefined ? await resolvePolicy(opts.dir, opts.policy, b.config.allowSimulated) : undefined;
          record = await b.keystore.rotate(opts.keyId, k.key, { keyId: k.id, models: bindings, ...(policy ? { policy } : {}), keepOld: opts.keepOld === true });
        } finally {
          k.key.fill(0);
        }
        if (opts.json) writeJson(ctx.io, record);
        else {
          ctx.io.stdout(
            `rotated "${opts.keyId}" to "${record.keyId}" (${record.models.length} model(s), policy ${record.policy}); ` +
              (opts.keepOld ? `"${opts.keyId}" stays active until you revoke it\n` : `"${opts.keyId}" is revoked\n`),
          );
        }
        if (record.models.length === 0) ctx.io.stderr(NO_MODEL_NOTE(record.keyId, opts.dir));
      } finally {
        await b.close();
      }
    });

  key
    .command('revoke')
    .description('Revoke a key for good: it is never released again, and its wrapped bytes are deleted.')
    .argument('<KEYID>', 'key id')
    .requiredOption('--dir <DIR>', 'broker folder')
    .option('--reason <TEXT>', 'why (recorded in the keystore and the audit log)', 'revoked by the operator')
    .action(async (keyId: string, opts: { dir: string; reason: string }) => {
      const b = await openFolder(opts.dir);
      try {
        const before = await b.keystore.get(keyId);
        await b.keystore.revoke(keyId, opts.reason);
        ctx.io.stdout(before?.state === 'revoked' ? `key "${keyId}" was already revoked (${before.revokedAt})\n` : `revoked key "${keyId}": it is never released again\n`);
      } finally {
        await b.close();
      }
    });

  key
    .command('list')
    .description('List the keys: state, policy, models.')
    .requiredOption('--dir <DIR>', 'broker folder')
    .option('--json', 'print {"keys": [...]} as JSON')
    .action(async (opts: { dir: string; json?: boolean }) => {
      const b = await openFolder(opts.dir);
      try {
        const keys = await b.keystore.list();
        if (opts.json) writeJson(ctx.io, { keys });
        else if (keys.length === 0) ctx.io.stdout('no keys (add one with "sealed-tensors broker key add")\n');
        else {
          for (const k of keys) {
            const extra = [k.rotatedTo ? `rotated to ${k.rotatedTo}` : '', k.revocationReason ? `reason: ${k.revocationReason}` : ''].filter(Boolean).join('; ');
            ctx.io.stdout(`${k.keyId}  ${k.state}  policy ${k.policy}  ${k.models.length} model(s)  added ${k.createdAt}${extra ? `  (${extra})` : ''}\n`);
            for (const m of k.models) ctx.io.stdout(`    ${m.bundleId} ${m.headerDigest}${m.label ? `  ${m.label}` : ''}\n`);
          }
        }
      } finally {
        await b.close();
      }
    });

  broker
    .command('policy')
    .description("Set keys' attestation policies.")
    .command('set')
    .description("Validate a policy file, store it under DIR/policies, and make it the key's policy.")
    .argument('<KEYID>', 'key id')
    .argument('<POLICY>', 'policy JSON file (docs/ATTESTATION.md), or the name of a stored policy')
    .requiredOption('--dir <DIR>', 'broker folder')
    .action(async (keyId: string, policyArg: string, opts: { dir: string }) => {
      const b = await openFolder(opts.dir);
      try {
        const { NotFoundError } = await import('../errors.js');
        if (!(await b.keystore.get(keyId))) throw new NotFoundError(`no key "${keyId}" in the keystore (see broker key list)`);
        const name = await resolvePolicy(opts.dir, policyArg, b.config.allowSimulated);
        await b.keystore.setPolicy(keyId, name);
        ctx.io.stdout(`key "${keyId}" now uses policy ${name} (policies/${name}.json)\n`);
      } finally {
        await b.close();
      }
    });

  broker
    .command('receipt-key')
    .description('The key that signs release receipts (separate from the token key).')
    .command('add')
    .description('Give a broker folder made before receipt keys its own receipt key (receipt.jwk 0600, receipt.pub.jwk), name it in config.json and record it in the audit log. Stop the broker first.')
    .requiredOption('--dir <DIR>', 'broker folder')
    .option('--json', 'print a JSON summary')
    .action(async (opts: { dir: string; json?: boolean }) => {
      const { addReceiptKey } = await import('../broker/init.js');
      const r = await addReceiptKey(opts.dir);
      if (opts.json) writeJson(ctx.io, r);
      else ctx.io.stdout(`receipt key ${r.receiptKeyId} added to ${r.dir}; give auditors receipt.pub.jwk (older receipts still verify with signing.pub.jwk), and sessions broker.jwks (--broker-key)\n`);
    });

  broker
    .command('audit')
    .description('Check the audit log.')
    .command('verify')
    .description('Verify the hash chain and every receipt; exit 0 only if all of it verifies, else name the first bad entry (exit 1).')
    .argument('<DIR>', 'broker folder (or a copy holding config.json, receipt.pub.jwk, signing.pub.jwk and audit.log)')
    .option('--receipt <FILE>', 'a receipt held outside the broker (compact JWS): the log must hold it; repeatable', collect)
    .option('--json', 'print the verification as JSON, with every release and denial in "decisions"')
    .action(async (dir: string, opts: { receipt?: string[]; json?: boolean }) => {
      const { verifyAuditLog } = await import('../broker/audit.js');
      const receipts: string[] = [];
      if (opts.receipt) {
        const { readRegularFile } = await import('../regular-file.js');
        for (const f of opts.receipt) receipts.push(Buffer.from(await readRegularFile(f, 'pass a file holding one receipt (compact JWS)')).toString('utf8').trim());
      }
      const v = await verifyAuditLog(dir, { receipts, list: true });
      if (opts.json) writeJson(ctx.io, v);
      else {
        if (v.ok) {
          ctx.io.stdout(`audit log OK: ${v.entries} entries, ${v.receipts} receipt(s) verified; last entry ${v.head!.seq}, sha256 ${v.head!.hash}\n`);
        } else {
          if (v.firstBad) ctx.io.stdout(`audit log BAD: entry ${v.firstBad.seq} (line ${v.firstBad.line}): ${v.firstBad.reason}\n  ${v.entries} entries before it verified\n`);
          for (const m of v.missingReceipts ?? []) ctx.io.stdout(`receipt ${m.receiptId || '(unreadable)'}${m.auditSeq >= 0 ? ` for entry ${m.auditSeq}` : ''}: ${m.reason}\n`);
        }
        const ds = v.decisions ?? [];
        const released = ds.filter((d) => d.verdict === 'release').length;
        ctx.io.stdout(`${released} release(s), ${ds.length - released} denial(s)${v.ok ? '' : ' among the entries that verified'}:\n`);
        for (const d of ds) ctx.io.stdout(`${formatDecision(d)}\n`);
      }
      ctx.exitCode = v.ok ? ExitCode.OK : ExitCode.REJECTED;
    });
}
