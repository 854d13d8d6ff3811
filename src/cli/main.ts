import { Command, CommanderError } from 'commander';
import { ExitCode, exitCodeFor, formatError, processIo, type CliIo } from './io.js';
import { registerKeygen } from './keygen.js';
import { registerSeal } from './seal.js';
import { registerInspect } from './inspect.js';
import { registerVerify } from './verify.js';
import { registerDemo } from './demo.js';
import { registerAttest } from './attest.js';

export interface CommandContext {
  io: CliIo;
  /** Set by a command's action; main returns it. */
  exitCode: number;
}

/** Runs the CLI and returns the process exit code; never calls process.exit, so tests can run it in-process. */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const ctx: CommandContext = { io, exitCode: ExitCode.OK };
  const program = new Command('sealed-tensors')
    .description('Seal safetensors models so their weights stay encrypted outside an attested TEE.')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout(s),
      writeErr: (s) => io.stderr(s),
      // Usage errors are printed once, below, in the `error CODE: message` shape.
      outputError: () => {},
    })
    .showHelpAfterError(false);
  // Commands register here, one module each.
  registerKeygen(program, ctx);
  registerSeal(program, ctx);
  registerInspect(program, ctx);
  registerVerify(program, ctx);
  registerDemo(program, ctx);
  registerAttest(program, ctx);
  for (const cmd of program.commands) cmd.exitOverride();

  try {
    await program.parseAsync(['node', 'sealed-tensors', ...argv]);
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version') {
        return ExitCode.OK;
      }
      // Commander already printed its message; restate it in our error shape.
      io.stderr(`error ERR_INVALID_ARGUMENT: ${err.message.replace(/^error: /, '')} (see --help)\n`);
      return ExitCode.USAGE;
    }
    io.stderr(formatError(err));
    return exitCodeFor(err);
  }
}
