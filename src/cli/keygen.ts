import type { Command } from 'commander';
import { writeNewKeyFile } from '../keys/key-file.js';
import { wipe } from '../bytes.js';
import { validateKeyId } from '../format/header.js';
import type { CommandContext } from './main.js';
import { writeJson } from './io.js';

export function registerKeygen(program: Command, ctx: CommandContext): void {
  program
    .command('keygen')
    .description('Create a new 32-byte data key in a JSON key file (mode 0600, never overwrites).')
    .requiredOption('-o, --output <KEY>', 'key file to create')
    .option('--id <ID>', 'key id recorded in sealed headers (default: key-<uuid>)')
    .option('--json', 'print {"id", "path"} as JSON')
    .action(async (opts: { output: string; id?: string; json?: boolean }) => {
      if (opts.id !== undefined) validateKeyId(opts.id); // a usage error (exit 2), before any file is touched
      const key = await writeNewKeyFile(opts.output, opts.id);
      wipe(key.key);
      if (opts.json) writeJson(ctx.io, { id: key.id, path: opts.output });
      else ctx.io.stdout(`wrote data key "${key.id}" to ${opts.output} (mode 0600); keep it secret and backed up\n`);
    });
}
