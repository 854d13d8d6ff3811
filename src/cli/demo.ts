import type { Command } from 'commander';
import { runDemo } from '../demo/demo.js';
import type { CommandContext } from './main.js';

export function registerDemo(program: Command, ctx: CommandContext): void {
  program
    .command('demo')
    .description('Seal a generated model, show what an outsider sees, verify it, and watch a one-bit change get rejected.')
    .option('--keep', 'keep the temporary folder and print its path')
    .action(async (opts: { keep?: boolean }) => {
      await runDemo({ say: (line) => ctx.io.stdout(`${line}\n`) }, opts.keep ?? false);
    });
}
