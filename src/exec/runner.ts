/**
 * The one boundary through which the product starts processes. Everything above it (observe, apply, lab,
 * reconcile) speaks argv arrays to a CommandRunner; tests inject fakes, and only the composition root builds
 * the real runner (execa-runner.ts, with its command helper). No shell ever reads a command's words as anything
 * but words, and LC_ALL=C keeps tool output parseable.
 */
export interface RunOptions {
  /** Fed to the child's stdin (iptables-restore payloads). */
  readonly input?: string;
  /** Return the result of a non-zero exit instead of throwing CommandError. */
  readonly allowFailure?: boolean;
  readonly timeoutMs?: number;
  /**
   * Takes stdout piece by piece as it arrives (text, split anywhere), instead of in RunResult.stdout, which is then
   * ''. Lets a caller parse a large output (iptables-save at 10,000 rules) while the child is still writing it.
   */
  readonly onStdout?: (chunk: string) => void;
  /** Kills the child (SIGKILL) when aborted; the abort's reason says why, in the CommandError. */
  readonly signal?: AbortSignal;
  /** A rollback's command (it puts back what a failed pass changed): a stop's abortInFlight leaves it to finish. */
  readonly rollback?: boolean;
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

/** A long-running child (e.g. `ip monitor`): lines of stdout as they come, and a way to stop it. */
export interface Child {
  readonly pid: number | undefined;
  onLine(listener: (line: string) => void): void;
  /** Resolves with the exit code (or null when killed by a signal) once the child is gone. */
  readonly exited: Promise<number | null>;
  stop(): Promise<void>;
  /**
   * The end of what the child wrote on stderr (its last CHILD_STDERR_TAIL bytes), complete once `exited` resolves; absent
   * where it is not kept (a fire-and-forget child). What a child that fails says of why (a lab agent's `node` error).
   */
  stderrTail?(): string;
  /**
   * Why the child could not be started at all (the spawn's error: `spawn ip ENOENT`, EACCES, EMFILE), once `exited`
   * has resolved (with null, as for a child killed by a signal); undefined for one that started.
   */
  startError?(): string | undefined;
}

/** How much of a started child's stderr is kept (the end of it): a reason fits, a child that chatters costs no more. */
export const CHILD_STDERR_TAIL = 4096;

export interface StartOptions {
  /** Fire and forget: output ignored, and the child does not keep this process alive (a gratuitous ARP). */
  readonly detached?: boolean;
}

export interface CommandRunner {
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
  start(argv: readonly string[], options?: StartOptions): Child;
  /**
   * The words this runner puts before every argv (`ip netns exec NS` for --netns), absent when none. A message that
   * shows a command shows it with them (asRun, shownCommand): as it was run, and as the operator runs it by hand.
   */
  readonly prefix?: readonly string[];
}

/** `argv` as `runner` runs it (`ip netns exec NS cat …` under --netns): what a CommandError made above it names. */
export const asRun = (runner: CommandRunner, argv: readonly string[]): string[] => [...(runner.prefix ?? []), ...argv];

/**
 * A command line for a person to run, with the words that put it where the gateway runs its own (`ip netns exec NS`
 * under --netns): without them, one copied from a message acts on the operator's namespace, not the gateway's.
 */
export const shownCommand = (prefix: readonly string[] | undefined, command: string): string =>
  (prefix && prefix.length > 0 ? `${prefix.join(' ')} ${command}` : command);

/**
 * A command that failed, classified once at the boundary: argv, exit code and stderr stay attached. An exit code of
 * null is a command that did not exit by itself: `notFound` when its program is not there (not installed), else
 * one that was killed (a timeout, the OOM killer, someone's kill) or could not be started (EMFILE, EAGAIN). Only
 * the first means "not installed": a helper killed half-way says nothing about what is installed.
 *
 * `notStarted` (a program not there is one): the spawn itself failed, and `stderr` says why. The message says that
 * the command could not be started: one whose program was not on the PATH was said to have "exited by signal: spawn
 * ip ENOENT", which sent an operator looking for a kill that never was.
 */
export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly stdout = '',
    readonly notFound = false,
    // Not a field: the message says it, and a logged error's fields stay as they were (log.ts serializeError).
    notStarted = notFound,
  ) {
    const detail = stderr.trim() || stdout.trim() || 'no output';
    super(`${argv.join(' ')} ${notStarted ? 'could not be started' : `exited ${exitCode ?? 'by signal'}`}: ${detail}`);
  }
}

/**
 * Runs every command inside a network namespace, as `ip netns exec NS …` does. A program missing inside is
 * reported by ip as `exec of "X" failed` (exit 1); it is turned back into what the plain runner reports for a
 * missing program (exit code null, notFound), so "not installed" means the same with and without --netns.
 */
export function inNamespace(runner: CommandRunner, namespace: string): CommandRunner {
  const wrap = (argv: readonly string[]) => ['ip', 'netns', 'exec', namespace, ...argv];
  return {
    prefix: [...(runner.prefix ?? []), 'ip', 'netns', 'exec', namespace],
    run: async (argv, options) => {
      const result = await runner.run(wrap(argv), { ...options, allowFailure: true });
      if (result.exitCode !== 0 && /^exec of ".*" failed: No such file or directory/m.test(result.stderr)) {
        throw new CommandError(wrap(argv), null, result.stderr, result.stdout, true);
      }
      if (result.exitCode !== 0 && !options?.allowFailure) throw new CommandError(wrap(argv), result.exitCode, result.stderr, result.stdout);
      return result;
    },
    start: (argv, options) => runner.start(wrap(argv), options),
  };
}

/**
 * Every command through `runner` is killed after `timeoutMs` unless its caller gives a time of its own: a helper
 * that hangs (a kernel lock held by someone else, a process stopped) then fails its caller with a CommandError that
 * says so (`killed by SIGKILL (timeout N ms)`), instead of holding it for ever. The supervisor's passes and stats
 * readings run through one (cli/run.ts): a pass that fails so is rolled back and retried, as any failed pass.
 */
export function withDeadline(runner: CommandRunner, timeoutMs: number): DeadlineRunner {
  const inFlight = new Set<AbortController>();
  return {
    run: async (argv, options) => {
      if (options?.rollback) return runner.run(argv, { timeoutMs, ...options });
      const controller = new AbortController();
      inFlight.add(controller);
      // A caller's own signal (the conflict probes', aborted at a stop) kills the command too. Linked by a listener
      // removed when the command ends, not AbortSignal.any: on node 20 each signal that makes keeps about 70 bytes
      // on a caller's signal that lives as long as the process (the probes', several a second at 512 VLANs).
      const own = options?.signal;
      const follow = () => controller.abort(own!.reason);
      if (own?.aborted) follow();
      else own?.addEventListener('abort', follow, { once: true });
      try {
        return await runner.run(argv, { timeoutMs, ...options, signal: controller.signal });
      } finally {
        own?.removeEventListener('abort', follow);
        inFlight.delete(controller);
      }
    },
    start: (argv, options) => runner.start(argv, options),
    ...(runner.prefix ? { prefix: runner.prefix } : {}),
    abortInFlight: (why) => {
      for (const controller of inFlight) controller.abort(why);
      return inFlight.size;
    },
  };
}

/** A runner whose commands in flight can be killed at once (a stop that must not wait for their deadline). */
export interface DeadlineRunner extends CommandRunner {
  /** Kills the commands running now (not those started after, nor a rollback's), saying `why`; returns how many. */
  abortInFlight(why: string): number;
}
