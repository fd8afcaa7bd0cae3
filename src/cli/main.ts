/**
 * The composition root: yargs commands wired to real implementations. Entered from src/main.ts (tsx) or from the
 * launcher (dist/vlan-gateway.mjs), which passes the code cache it loaded the bundle with.
 */
import { existsSync } from 'node:fs';
import yargs from 'yargs';
import { stopHelpers } from '../exec/shell-helper.js';
import { applyCommand, downCommand } from './apply.js';
import { setCodeCache, type CodeCache } from './code-cache.js';
import { describeError, exitCodeOf, EXIT, UsageError } from './errors.js';
import { labCommand } from './lab.js';
import { planCommand } from './plan.js';
import { runCommand } from './run.js';
import { releaseHeldSignals } from './signals.js';
import { statusCommand } from './status.js';
import { validateCommand } from './validate.js';

export async function main(argv: string[], options: { codeCache?: CodeCache } = {}): Promise<number> {
  setCodeCache(options.codeCache);
  guardStdout();
  let failed: unknown;
  let usage = false;
  try {
    await yargs(argv)
      .scriptName('vlan-gateway')
      .usage('$0 <command> [options]\n\nA software router for Docker containers on several VLANs.')
      .option('config', { type: 'string', describe: 'config file (default: $VLAN_GATEWAY_CONFIG, else /etc/vlan-gateway/gateway.yaml)' })
      .option('netns', { type: 'string', describe: 'act inside this named network namespace (ip netns)' })
      .command(validateCommand)
      .command(planCommand)
      .command(applyCommand)
      .command(downCommand)
      .command(labCommand)
      .command(runCommand)
      .command(statusCommand)
      .parserConfiguration({ 'camel-case-expansion': false }) // one name per option: no "Unknown arguments: x-y, xY"
      .demandCommand(1, 'Name a command.')
      .middleware((args) => checkOptions(args, argv))
      // The signals the launcher held while the bundle loaded: `run` takes them over, the others act on them now.
      .middleware(async (args) => {
        if (args._[0] !== 'run') await releaseHeldSignals();
      })
      .strict()
      .fail((message, error) => {
        if (error) throw error;
        usage = true;
        throw new Error(usageMessage(message, argv));
      })
      .help()
      .parseAsync();
  } catch (error) {
    failed = error;
  }
  await releaseHeldSignals(); // a usage error, --help: no command took them
  await stopHelpers(); // the command helper's shell, if the command started one, ends with it
  if (failed === undefined) return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  // Said as every other error is, after the command's name (a usage error read as another program's words).
  if (usage) process.stderr.write(`vlan-gateway: ${(failed as Error).message}\nRun vlan-gateway --help for usage.\n`);
  else process.stderr.write(`vlan-gateway: ${describeError(failed)}\n`);
  // `plan --detailed-exitcode` keeps 2 for "changes pending" (Terraform's convention): any error is 1 there, a
  // mistyped option included, or a script that applies on 2 would apply what it never planned.
  if (detailedPlan(argv)) return EXIT.failure;
  return usage ? EXIT.invalid : exitCodeOf(failed);
}

let stdoutGuarded = false;

/**
 * A write to a stdout that cannot take it fails after the fact, as an 'error' event, and unhandled that event ended
 * the process with a stack trace wherever it was: `plan | grep -q …` printed one, and `lab up | head -c 10` left the
 * lab built and its config not applied. A reader gone (EPIPE: `| head`, `| grep -q`) is no error of the command's:
 * the rest of the output is dropped and the command finishes, its exit code as it would be. Any other failure (a
 * full disk: ENOSPC) loses output the user asked for: said once on stderr, and the command exits 1.
 */
function guardStdout(): void {
  if (stdoutGuarded) return;
  stdoutGuarded = true;
  let failed = false;
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (failed) return; // the writes after the first failure fail too (the stream is destroyed)
    failed = true;
    if (error.code === 'EPIPE') return;
    process.stderr.write(`vlan-gateway: cannot write the output to stdout: ${error.code ?? error.message}${error.code === 'ENOSPC' ? ' (no space left on the device)' : ''}\n`);
    process.exitCode = EXIT.failure;
  });
}

const COMMANDS = ['validate', 'plan', 'apply', 'down', 'run', 'status', 'lab'];

/**
 * yargs' words where they would mislead: a mistyped command is "Unknown argument: aply" (the user typed a command),
 * and `lab` without its action "Not enough non-option arguments: got 0, need at least 1".
 */
function usageMessage(message: string, argv: readonly string[]): string {
  const command = commandWord(argv);
  if (command !== undefined && !COMMANDS.includes(command) && message.startsWith('Unknown argument')) {
    return `Unknown command: ${command} (the commands: ${COMMANDS.join(', ')})`;
  }
  if (command === 'lab' && message.startsWith('Not enough non-option arguments')) return 'lab needs an action: demo, up, check or down';
  return message;
}

/** The first word that is not an option or an option's value: the command as typed. */
function commandWord(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i += 1) {
    const word = argv[i]!;
    if (word === '--') return argv[i + 1];
    if (!word.startsWith('-')) return word;
    if ([...SINGLE_VALUED, ...NUMBER_VALUED].some((key) => word === `--${key}`)) i += 1;
  }
  return undefined;
}

function detailedPlan(argv: readonly string[]): boolean {
  return argv.includes('plan') && argv.some((a) => a === '--detailed-exitcode' || (a.startsWith('--detailed-exitcode=') && a !== '--detailed-exitcode=false'));
}

/** The commands that take no --netns, and why: ignored, it would point at a lab it does not reach. */
const NETNS_NOT_HERE = {
  lab: '--netns: the lab makes its own namespaces (vgwlab-NAME-*); name the lab with --name',
} as const;

/** Options that take one value each (yargs makes an array of a repeated one, and takes `--netns=` as ""). */
const SINGLE_VALUED = ['config', 'netns', 'listen', 'url', 'schedule', 'name', 'log-level'];

/**
 * run's options that take a number of milliseconds. yargs reads one given without a value (`--stats-interval`
 * last, or before another option) as its default or as not given, and an empty one (`--min-interval ""`, a
 * Compose `command:` with an unset variable; `--min-interval=`) as 0: read from the words themselves.
 */
const NUMBER_VALUED = ['min-interval', 'stats-interval', 'health-timeout', 'command-timeout'];

/**
 * The flags that take no value. yargs reads `--flag=VALUE` as false for any VALUE but "true": `plan
 * --detailed-exitcode=1` exited 0 with changes pending, `plan --down=yes` showed what apply would change, and
 * `run --cleanup-on-exit=yes` stopped leaving the rules in place. Only "true" and "false" are taken.
 */
const BOOLEAN_VALUED = ['detailed-exitcode', 'down', 'json', 'cleanup-on-exit'];

/** The values the words give a number option: undefined for one given without a value. */
function numberValues(argv: readonly string[], key: string): Array<string | undefined> {
  const values: Array<string | undefined> = [];
  for (let i = 0; i < argv.length; i += 1) {
    const word = argv[i]!;
    if (word === '--') break;
    if (word.startsWith(`--${key}=`)) values.push(word.slice(key.length + 3));
    else if (word === `--${key}`) {
      const next = argv[i + 1];
      // yargs takes the next word as the value unless it is an option; a negative number is a value.
      const isValue = next !== undefined && !/^-(?![\d.])/.test(next);
      values.push(isValue ? next : undefined);
      if (isValue) i += 1;
    }
  }
  return values;
}

/**
 * Checks the options before any command runs. An empty or repeated value is refused rather than guessed at: an
 * empty `--netns` would otherwise mean "no namespace", and the command would act on the caller's own network.
 */
function checkOptions(args: Record<string, unknown>, argv: readonly string[]): void {
  for (const key of SINGLE_VALUED) {
    const value = args[key];
    if (Array.isArray(value)) throw new UsageError(`--${key} is given ${value.length} times (${value.map((v) => JSON.stringify(String(v))).join(', ')}); give it once`);
    if (value === '') throw new UsageError(`--${key} needs a value`);
  }
  for (const word of argv.slice(0, argv.includes('--') ? argv.indexOf('--') : argv.length)) {
    const [, key, value] = /^--([^=]+)=(.*)$/s.exec(word) ?? [];
    if (key !== undefined && BOOLEAN_VALUED.includes(key) && value !== 'true' && value !== 'false') {
      throw new UsageError(`--${key} takes no value (given ${JSON.stringify(value)}): write --${key}, or leave it out`);
    }
  }
  for (const key of (args._ as unknown[] | undefined)?.[0] === 'run' ? NUMBER_VALUED : []) {
    const values = numberValues(argv, key);
    if (values.length > 1) throw new UsageError(`--${key} is given ${values.length} times (${values.map((v) => JSON.stringify(v ?? '')).join(', ')}); give it once`);
    if (values.length === 1 && (values[0] ?? '').trim() === '') throw new UsageError(`--${key} needs a value`);
  }
  const netns = args.netns;
  const command = (args._ as unknown[] | undefined)?.[0];
  if (netns !== undefined && command === 'lab') throw new UsageError(NETNS_NOT_HERE[command]);
  if (typeof netns === 'string' && (netns.includes('/') || netns === '.' || netns === '..' || !existsSync(`/run/netns/${netns}`))) {
    throw new UsageError(`--netns ${netns}: no such network namespace (\`ip netns list\` shows the names)`);
  }
}
