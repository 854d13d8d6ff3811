import type { Command } from 'commander';
import { readKeyFile } from '../keys/key-file.js';
import { wipe } from '../bytes.js';
import { SUITE_NAMES } from '../format/constants.js';
import type { SealedModelReader } from '../reader/sealed-model.js';
import { NativeSealedModelReader } from '../reader/native-model.js';
import { defaultThreads } from '../reader/native-file.js';
import { nativeStatus } from '../native/addon.js';
import { importKey } from '../native/key.js';
import { SealedTensorsError } from '../errors.js';
import type { CommandContext } from './main.js';
import { formatBytes, parseThreads } from './options.js';
import { ExitCode, exitCodeFor, formatError, writeJson } from './io.js';

export function registerVerify(program: Command, ctx: CommandContext): void {
  program
    .command('verify')
    .description('Decrypt a sealed model in memory and check every chunk and every tensor digest; exit 0 only if all is good.')
    .argument('<SEALED>', 'sealed file, sealed index, or sealed model folder')
    .requiredOption('--key <KEY>', 'data key file')
    .option('--threads <N>', 'worker threads for decryption (native path; default: all cores)', parseThreads)
    .option('--json', 'print one JSON object listing every tensor with its plain SHA-256')
    .action(async (path: string, opts: { key: string; json?: boolean; threads?: number }) => {
      // Not performance.now(): the global loads perf_hooks (seven modules) on first use.
      const started = process.hrtime.bigint();
      try {
        const key = await readKeyFile(opts.key);
        // The native path when the addon loads (same output, every core); else the reference reader.
        let model: { sharded: boolean; files: { header: { keyId: string; suite: 1 | 2 } }[]; close(): unknown };
        let shards: { file: string; tensors: { byteLength: number }[] }[];
        if (nativeStatus().available) {
          let handle: ReturnType<typeof importKey>;
          try {
            handle = importKey(key.key); // moves the key into secure memory and wipes key.key
          } finally {
            wipe(key.key);
          }
          let native: NativeSealedModelReader;
          try {
            native = await NativeSealedModelReader.open(path, handle, { threads: opts.threads ?? defaultThreads() });
          } finally {
            handle.release(); // the reader keeps only its per-file subkeys
          }
          model = native;
          try {
            shards = await native.verifyOrThrow({ plainSha256: opts.json === true });
          } catch (err) {
            native.close();
            throw err;
          }
        } else {
          let reference: SealedModelReader;
          try {
            // Loaded only here: the native path never needs the reference reader or node:crypto.
            const { SealedModelReader } = await import('../reader/sealed-model.js');
            reference = await SealedModelReader.open(path, key.key);
          } finally {
            wipe(key.key);
          }
          model = reference;
          try {
            shards = await reference.verify();
          } catch (err) {
            await reference.close();
            throw err;
          }
        }
        try {
          const tensors = shards.flatMap((s) => s.tensors.map((t) => ({ ...t, ...(model.sharded ? { file: s.file } : {}) })));
          const bytes = tensors.reduce((n, t) => n + t.byteLength, 0);
          const seconds = Number(process.hrtime.bigint() - started) / 1e9;
          const header = model.files[0]!.header;
          if (opts.json) {
            writeJson(ctx.io, {
              verified: true,
              path,
              keyId: header.keyId,
              suite: SUITE_NAMES[header.suite],
              sharded: model.sharded,
              tensorCount: tensors.length,
              byteLength: bytes,
              tensors,
            });
          } else {
            ctx.io.stdout(
              `ok: ${tensors.length} tensors, ${formatBytes(bytes)} authenticated and digest-checked in ${seconds.toFixed(2)} s (${(bytes / 1e6 / Math.max(seconds, 1e-9)).toFixed(0)} MB/s)\n`,
            );
          }
        } finally {
          await model.close();
        }
      } catch (caught) {
        const { explainNotSealed } = await import('./not-sealed.js'); // only when something failed
        const err = await explainNotSealed(path, caught);
        if (!opts.json || !(err instanceof SealedTensorsError)) throw err;
        // Tools reading --json get a verdict on stdout too; people get the error on stderr.
        writeJson(ctx.io, { verified: false, path, error: { code: err.code, message: err.message } });
        ctx.io.stderr(formatError(err));
        ctx.exitCode = exitCodeFor(err);
        return;
      }
      ctx.exitCode = ExitCode.OK;
    });
}
