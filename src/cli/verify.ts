import type { Command } from 'commander';
import { readKeyFile } from '../keys/key-file.js';
import { wipe } from '../bytes.js';
import { SUITE_NAMES } from '../format/constants.js';
import { SealedModelReader } from '../reader/sealed-model.js';
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
      const started = performance.now();
      try {
        const key = await readKeyFile(opts.key);
        let model: SealedModelReader;
        try {
          model = await SealedModelReader.open(path, key.key);
        } finally {
          wipe(key.key);
        }
        try {
          const shards = await model.verify();
          const tensors = shards.flatMap((s) => s.tensors.map((t) => ({ ...t, ...(model.sharded ? { file: s.file } : {}) })));
          const bytes = tensors.reduce((n, t) => n + t.byteLength, 0);
          const seconds = (performance.now() - started) / 1000;
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
      } catch (err) {
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
