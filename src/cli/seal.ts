import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { IoError } from '../errors.js';
import { readKeyFile } from '../keys/key-file.js';
import { sealFile } from '../seal/seal-file.js';
import { sealModelDirectory } from '../seal/seal-model.js';
import { removePartialsOnSignals } from '../seal/output.js';
import { wipe } from '../bytes.js';
import { SUITE_NAMES } from '../format/constants.js';
import type { CommandContext } from './main.js';
import { formatBytes, parseSize, parseSuite, parseThreads } from './options.js';
import { writeJson } from './io.js';

export function registerSeal(program: Command, ctx: CommandContext): void {
  program
    .command('seal')
    .description('Seal a .safetensors file (OUT: a sealed file) or a sharded model folder (OUT: a folder of sealed shards and a sealed index).')
    .argument('<IN>', '.safetensors file, or folder with model.safetensors.index.json and its shards')
    .requiredOption('-o, --output <OUT>', 'sealed file or folder to create')
    .requiredOption('--key <KEY>', 'data key file (from "sealed-tensors keygen")')
    .option('--suite <SUITE>', 'aes-256-gcm or chacha20-poly1305', 'aes-256-gcm')
    .option('--chunk-size <SIZE>', 'payload chunk size, a multiple of 4KiB', '4MiB')
    .option('--pad-payload', 'pad the payload with zeros (Padmé, at most 12% more) so its public length hides the exact parameter count')
    .option('--force', 'replace OUT if it is earlier sealed output (never any other file or folder)')
    .option('--threads <N>', 'sealing threads (native path; default: all cores)', parseThreads)
    .option('--json', 'print a JSON summary')
    .action(async (input: string, opts: { output: string; key: string; suite: string; chunkSize: string; padPayload?: boolean; force?: boolean; json?: boolean; threads?: number }) => {
      const suite = parseSuite(opts.suite);
      const chunkSize = parseSize(opts.chunkSize, '--chunk-size');
      const info = await stat(input).catch((cause) => {
        throw new IoError(`cannot read ${input} (${cause.code ?? cause.message})`, { cause });
      });
      const key = await readKeyFile(opts.key);
      const started = performance.now();
      // Node's default SIGINT/SIGTERM/SIGHUP exit would leave the hidden .partial-* output behind.
      const stopCleanup = removePartialsOnSignals((signal) => ctx.io.stderr(`interrupted by ${signal}: removed the partial output, ${opts.output} is unchanged\n`));
      try {
        const options = { dataKey: key.key, keyId: key.id, suite, chunkSize, padPayload: opts.padPayload ?? false, overwrite: opts.force ?? false, ...(opts.threads ? { threads: opts.threads } : {}), tensorSha256: opts.json ?? false };
        const files = info.isDirectory()
          ? await sealModelDirectory(input, opts.output, options).then((m) => [...m.shards, m.index])
          : [await sealFile(input, opts.output, options)];
        const seconds = (performance.now() - started) / 1000;
        const bytes = files.reduce((n, f) => n + f.header.payloadLength, 0);
        if (opts.json) {
          writeJson(ctx.io, {
            output: opts.output,
            keyId: key.id,
            suite: SUITE_NAMES[suite],
            chunkSize,
            // Each tensor's plain SHA-256, as `verify --json` prints it: compare a sealed model with its source.
            files: files.map((f) => ({ path: f.path, payloadLength: f.header.payloadLength, headerDigest: f.headerDigest, ...(f.tensors ? { tensors: f.tensors } : {}) })),
            seconds,
          });
        } else {
          ctx.io.stdout(
            `sealed ${formatBytes(bytes)} into ${opts.output} (${info.isDirectory() ? `${files.length - 1} shard${files.length === 2 ? '' : 's'} + index` : '1 file'}, ${SUITE_NAMES[suite]}, key "${key.id}") in ${seconds.toFixed(2)} s\n`,
          );
        }
      } finally {
        stopCleanup();
        wipe(key.key);
      }
    });
}
