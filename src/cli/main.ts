import { Command, CommanderError, type Option } from 'commander';
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
  deferRequiredOptions(program);

  try {
    await program.parseAsync(['node', 'sealed-tensors', ...argv]);
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.help' && err.exitCode !== 0) {
        // No command (or no subcommand of `attest`): commander printed the help to stderr.
        io.stderr('error ERR_INVALID_ARGUMENT: no command given (see --help)\n');
        return ExitCode.USAGE;
      }
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

/**
 * Commander reports a missing required option before an unknown one, so `seal --bogus` said
 * "-o not specified". Check required options in a preAction hook instead, which runs after the
 * unknown-option and argument checks.
 */
function deferRequiredOptions(program: Command): void {
  const required = new Map<Command, Option[]>();
  const walk = (cmd: Command): void => {
    const list = cmd.options.filter((o) => o.mandatory);
    for (const o of list) o.mandatory = false;
    if (list.length) required.set(cmd, list);
    cmd.commands.forEach(walk);
  };
  walk(program);
  program.hook('preAction', (_program, action) => {
    for (const o of required.get(action) ?? []) {
      if (action.getOptionValue(o.attributeName()) === undefined) {
        action.error(`required option '${o.flags}' not specified`, { code: 'commander.missingMandatoryOptionValue' });
      }
    }
  });
}
