import { createRequire } from 'node:module';
import type * as Commander from 'commander';
import type { Option } from 'commander';

import { ExitCode, exitCodeFor, formatError, processIo, type CliIo } from './io.js';

// commander is CommonJS: required, not imported, so that Node's ES loader need not scan its source
// for named exports (cjs-module-lexer) on every start of the CLI; and required in main(), once the
// named command's modules are on their way (see there).
const require = createRequire(import.meta.url);
let commander: typeof Commander | undefined;
type Command = Commander.Command;

type Register = (program: Command, ctx: CommandContext) => void;

/**
 * One module per command, imported only when that command runs: `--help` and `inspect` must not
 * pay for the attestation verifiers' X.509 code, nor `verify` for anything but its own path.
 * The descriptions here are what the top-level help lists; each module has the full definition.
 */
const COMMANDS: readonly { name: string; usage: string; description: string; load: () => Promise<Register> }[] = [
  { name: 'keygen', usage: '[options]', description: 'Create a new 32-byte data key in a JSON key file (mode 0600, never overwrites).', load: async () => (await import('./keygen.js')).registerKeygen },
  { name: 'seal', usage: '[options] <IN>', description: 'Seal a .safetensors file (OUT: a sealed file) or a sharded model folder (OUT: a folder of sealed shards and a sealed index).', load: async () => (await import('./seal.js')).registerSeal },
  { name: 'inspect', usage: '[options] <SEALED>', description: "Show a sealed file's public header (no key needed, no tensor names), or with --key its full tensor table.", load: async () => (await import('./inspect.js')).registerInspect },
  { name: 'verify', usage: '[options] <SEALED>', description: 'Decrypt a sealed model in memory and check every chunk and every tensor digest; exit 0 only if all is good.', load: async () => (await import('./verify.js')).registerVerify },
  { name: 'load', usage: '[options] <SEALED>', description: 'Attest this TEE to a key broker, fetch the model\'s key, and load the sealed model in secure memory; prints a summary, never tensor contents.', load: async () => (await import('./load.js')).registerLoad },
  { name: 'demo', usage: '[options]', description: 'Seal a generated model, show what an outsider sees, verify it, and watch a one-bit change get rejected.', load: async () => (await import('./demo.js')).registerDemo },
  { name: 'attest', usage: '', description: 'Gather attestation evidence in a TEE, or verify evidence against a policy.', load: async () => (await import('./attest.js')).registerAttest },
  { name: 'broker', usage: '', description: 'Run and manage a key broker: its folder, keys, policies and audit log.', load: async () => (await import('./broker.js')).registerBroker },
];

export interface CommandContext {
  io: CliIo;
  /** Set by a command's action; main returns it. */
  exitCode: number;
}

/** Runs the CLI and returns the process exit code; never calls process.exit, so tests can run it in-process. */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const ctx: CommandContext = { io, exitCode: ExitCode.OK };
  // The command named on the command line (or by `help NAME`) registers in full; the others only
  // as names for the help listing and for "unknown command" suggestions. Its import starts first:
  // Node reads its modules on the threadpool while this thread compiles commander.
  const named = argv[0] === 'help' ? argv[1] : argv[0];
  const loading = COMMANDS.find((c) => c.name === named)?.load();
  loading?.catch(() => {}); // awaited below, inside the try; this only keeps it from counting as unhandled first
  const { Command, CommanderError, Help } = (commander ??= require('commander') as typeof Commander);
  const program = new Command('sealed-tensors')
    .description('Seal safetensors models so their weights stay encrypted outside an attested TEE.')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout(s),
      writeErr: (s) => io.stderr(s),
      // Usage errors are printed once, below, in the `error CODE: message` shape.
      outputError: () => {},
    })
    .showHelpAfterError(false)
    // Commands not loaded have no options or arguments to show: list them as their modules define them.
    .configureHelp({
      subcommandTerm: (cmd) => {
        const c = COMMANDS.find((x) => x.name === cmd.name());
        return c ? `${c.name}${c.usage ? ` ${c.usage}` : ''}` : Help.prototype.subcommandTerm.call(new Help(), cmd);
      },
    });

  try {
    for (const c of COMMANDS) {
      if (c.name === named && loading) (await loading)(program, ctx);
      else program.command(c.name).description(c.description);
    }
    for (const cmd of program.commands) cmd.exitOverride();
    deferRequiredOptions(program);
    await program.parseAsync(['node', 'sealed-tensors', ...argv]);
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.help' && err.exitCode !== 0) {
        // No command, `help UNKNOWN`, or `attest` without a subcommand: commander printed the help to stderr.
        const words = argv.filter((a) => !a.startsWith('-'));
        const what = words.length === 0 ? 'no command given' : words[0] === 'help' ? `unknown command '${words[1]}'` : `'${words.join(' ')}' needs a subcommand`;
        io.stderr(`error ERR_INVALID_ARGUMENT: ${what} (see --help)\n`);
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
