/**
 * A few long-lived /bin/sh processes that start the gateway's short commands for it. A spawn from node forks all of
 * node: on the machine the benchmarks ran on (2 vCPUs, a VM), that holds the main thread 7–11 ms per command, in the
 * fork and then while the child tears the copy down for its exec. Handing the same command to a shell costs node a
 * write to a pipe and a read of two small files (0.2–0.7 ms), and the shell, about 2 MB, forks on the other core
 * (BENCHMARKS.md, "session av: the command helper"). A pass runs up to ten commands, a start at 100 VLANs a hundred
 * arpings: a third of the main thread's busy time at such a start was spawns, an eighth with the helper.
 *
 * Per command, node writes one line of shell text; every word in it is single-quoted, so no word of a command is
 * ever shell text (the runner's rule), and the only text that is not quoted is the helper's own:
 *
 *   'cmd' 'arg' 2>D/N.e <D/N.i >D/N.o & echo "P N $!"; wait $!; echo "E N $?"
 *
 * The helper answers `P N pid` once the command is started and `E N status` once it has exited. It waits for the
 * command itself, so it runs one at a time: node sends a command to a helper with nothing to run, and starts another
 * while there are fewer than HELPER_SLOTS (one per CPU). One fork per command, not the two of a subshell per command,
 * which let one helper run many at once: forks are what costs on such a machine, where they do not even run side by
 * side (4 `cat` at once took as long as 4 in a row), and a command cost 8 ms through a subshell against 5
 * (BENCHMARKS.md, "session aw"). Where every helper is busy, the command goes to the spare helper, which runs each
 * line in a subshell (`: ; { … } &`), as it does fire-and-forget commands (arpings): nothing waits behind another.
 * Output goes to files that node created and holds open before the line is sent (so a process out of descriptors
 * fails before the command runs, as a spawn would), and reads once the command has exited. A status above 128 is
 * death by a signal (the shell's convention).
 *
 * What stays with a plain spawn (execa-runner.ts): a program not on the PATH, or not executable (its own spawn
 * error says so), a command whose output is taken as it comes (onStdout), a long-running child, and everything when
 * the helper cannot run (no writable tmpfs, no /bin/sh: `VLAN_GATEWAY_EXEC_HELPER=off` too). Asynchronous lists
 * ignore SIGINT (POSIX), as the helper itself does: a Ctrl-C stops the gateway, which decides what becomes of its
 * commands, and a write half done is not cut by the terminal. A shell keeps a little for each job it ran (dash: about
 * 40 bytes), so a helper is retired after RETIRE_AFTER commands (one that runs its commands itself, once it has
 * nothing to run): it exits at the end of its input, and the subshells still running report through the pipe they
 * hold. A helper killed under a command it runs itself loses that command's end, which is said.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { closeSync, lstatSync, mkdtempSync, openSync, readdirSync, readFile, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism, constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/** How a command ended: its exit code, or the signal that killed it. */
type Ending = { readonly code: number; readonly signal?: undefined } | { readonly code?: undefined; readonly signal: NodeJS.Signals };

interface HelperResult {
  readonly ending: Ending;
  readonly stdout: string;
  readonly stderr: string;
}

export interface HelperRun {
  /** The command's pid, once the helper has said it. */
  readonly pid: number | undefined;
  /** Sends `signal` to the command (once its pid is known, if it is not yet). */
  kill(signal: NodeJS.Signals): void;
  /**
   * Its ending and output. Rejects with NotStarted when the helper ended (or never started) before it started the
   * command, which may then be spawned some other way; with another error when the command's end went unreported.
   */
  readonly done: Promise<HelperResult>;
}

/** The helper did not start the command (it could not start itself, or was killed first): nothing ran. */
export class NotStarted extends Error {
  override readonly name = 'NotStarted';
}

/** Commands per helper before it is retired (see above). */
const RETIRE_AFTER = 1000;
/** Helpers that run their commands themselves, at most: one per CPU (at least two, at most eight). */
export const HELPER_SLOTS = Math.min(8, Math.max(2, availableParallelism()));
const DIR_PREFIX = 'vlan-gateway-exec-';

/** Each signal's number to its name; of two names for one number (SIGABRT, SIGIOT), the first, as node says it. */
const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [name, number] of Object.entries(constants.signals)) if (!SIGNAL_NAMES.has(number)) SIGNAL_NAMES.set(number, name as NodeJS.Signals);

/** A word of shell text that is the word itself, whatever it holds (a NUL cannot be in an argument). */
const quoted = (word: string): string => `'${word.replaceAll("'", "'\\''")}'`;

interface Pending {
  pid?: number;
  /** A kill asked for before the pid was known. */
  killWith?: NodeJS.Signals;
  /** Whether node waits for this one (a fire-and-forget command does not keep the process alive). */
  held: boolean;
  /** Run by the helper itself, which waits for it (a slot): not a fire-and-forget command, which a subshell runs. */
  serial: boolean;
  finish(status: number): void;
  fail(error: Error): void;
}

class Helper {
  private readonly pending = new Map<number, Pending>();
  private held = 0;
  sent = 0;
  gone = false;
  /** Once the shell has exited (or could not start). */
  readonly exited: Promise<void>;

  constructor(private readonly child: ChildProcessByStdio<Writable, Readable, Readable>) {
    living.add(this);
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    }).then(() => void living.delete(this));
    child.unref();
    // No pipe keeps node alive by itself: its stdout does while a command node waits for runs (send, release).
    unrefStream(child.stdin);
    unrefStream(child.stdout);
    unrefStream(child.stderr);
    // Gone (killed, or never started): no more commands for it. Those it started still report, through the pipe
    // their shells hold; its end is when the last of them has let go of it.
    child.stdin.on('error', () => this.retired());
    child.once('exit', () => this.retired());
    child.once('error', () => {
      disabled = true; // not started (ENOENT, EAGAIN): no helper will run here
      this.retired();
    });
    child.stderr.resume(); // its own complaints only; each command's stderr goes to its file
    createInterface({ input: child.stdout }).on('line', (line) => this.line(line));
    child.stdout.once('close', () => this.end());
  }

  /** Sends `text` (one command) as command `id`; `pending` hears how it ends. */
  send(id: number, text: string, pending: Pending): void {
    this.pending.set(id, pending);
    if (pending.held && this.held++ === 0) refStream(this.child.stdout);
    this.sent++;
    this.child.stdin.write(text);
  }

  /** No more commands: it exits once those it has report (their lines still come through its stdout). */
  retire(): void {
    this.retired();
    this.child.stdin.end();
  }

  private retired(): void {
    this.gone = true;
    const at = helpers.indexOf(this);
    if (at >= 0) helpers.splice(at, 1);
    if (spare === this) spare = undefined;
  }

  /** Whether it runs a command itself now (it is sent one only when it does not). */
  get busy(): boolean {
    for (const pending of this.pending.values()) if (pending.serial) return true;
    return false;
  }

  pidOf(id: number): number | undefined {
    return this.pending.get(id)?.pid;
  }

  /** Whether command `id` was sent to it and has not ended; if so, `signal` goes to it (once its pid is known). */
  kill(id: number, signal: NodeJS.Signals): boolean {
    const pending = this.pending.get(id);
    if (!pending) return false;
    if (pending.pid === undefined) pending.killWith = signal;
    else killQuietly(pending.pid, signal);
    return true;
  }

  private line(line: string): void {
    const m = /^([PE]) (\d+) (\d+)$/.exec(line);
    if (!m) return;
    const id = Number(m[2]);
    const value = Number(m[3]);
    const pending = this.pending.get(id);
    if (!pending) return;
    if (m[1] === 'P') {
      pending.pid = value;
      if (pending.killWith) killQuietly(value, pending.killWith);
      return;
    }
    this.pending.delete(id);
    this.release(pending);
    pending.finish(value);
  }

  private release(pending: Pending): void {
    if (pending.held && --this.held === 0) unrefStream(this.child.stdout);
  }

  /**
   * Nothing writes to its stdout any more: a command it never said it started did not start (it may be run some
   * other way); one it did, but whose end no one reported, ended unseen (its reporting shell was killed).
   */
  private end(): void {
    this.retired();
    for (const pending of this.pending.values()) {
      this.release(pending);
      pending.fail(pending.pid === undefined ? new NotStarted('the command helper (/bin/sh) ended before it started the command')
        : new Error('the command helper (/bin/sh) ended before the command reported its end'));
    }
    this.pending.clear();
  }
}

function refStream(stream: Readable | Writable): void {
  (stream as unknown as { ref?: () => void }).ref?.();
}

function unrefStream(stream: Readable | Writable): void {
  (stream as unknown as { unref?: () => void }).unref?.();
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone already
  }
}

/** The helpers that run commands themselves, one at a time (not retired, not gone), at most HELPER_SLOTS. */
const helpers: Helper[] = [];
/** The helper that runs each command it is given in a subshell: what finds every one of the others busy, and fire-and-forget commands. */
let spare: Helper | undefined;
/** Every helper not yet exited: those that take commands and those retired with commands still to report. */
const living = new Set<Helper>();
let dir: string | undefined;
let disabled = process.env.VLAN_GATEWAY_EXEC_HELPER?.trim() === 'off';
let nextId = 0;

/**
 * The private directory of this process's output files (0700), made once: on a tmpfs where there is one (/dev/shm),
 * else in the temporary directory. None where neither can be written (a read-only container without a tmpfs): the
 * runner then spawns every command itself.
 */
function filesDir(): string | undefined {
  if (dir !== undefined) return dir;
  for (const base of ['/dev/shm', tmpdir()]) {
    try {
      removeAbandoned(base);
      const made = mkdtempSync(join(base, `${DIR_PREFIX}${process.pid}-`));
      process.once('exit', () => rmSync(made, { recursive: true, force: true }));
      return (dir = made);
    } catch {
      // not there, or not writable: the next
    }
  }
  return undefined;
}

/** The directories of processes that are gone (killed before their exit handler ran): ours by name and owner. */
function removeAbandoned(base: string): void {
  try {
    for (const name of readdirSync(base)) {
      const pid = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name)?.[1];
      // One with this process's own pid is an earlier process's (this one makes its own after the sweep): a
      // container restarted, with pids counted from 1 again, where /dev/shm outlived the restart.
      if (pid === undefined || (Number(pid) !== process.pid && alive(Number(pid)))) continue;
      const path = join(base, name);
      // A directory of ours, not a link someone put there under that name (lstat: not followed).
      const found = lstatSync(path);
      if (found.isDirectory() && found.uid === process.getuid?.()) rmSync(path, { recursive: true, force: true });
    }
  } catch {
    // nothing to sweep, or not ours to sweep
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A new helper; undefined where none can start (nothing will be started through one then). */
function startHelper(env: NodeJS.ProcessEnv): Helper | undefined {
  if (disabled || dir === undefined) return undefined;
  try {
    const child = spawn('/bin/sh', ['-s'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    if (!child.stdin || !child.stdout || !child.stderr) return undefined;
    const started = new Helper(child);
    // Asynchronous lists ignore SIGINT anyway; the helper does too, so a Ctrl-C leaves node to decide. At the end of
    // its input with node gone (killed before its exit handler ran: its parent is then another process), it removes
    // node's directory of files, which no one else would until the next gateway process; a helper retired while
    // node runs leaves it to node.
    child.stdin.write(`trap '' INT QUIT\ntrap 'read -r _ _ _ parent _ </proc/self/stat; [ "$parent" = "$PPID" ] || rm -rf -- ${quoted(dir)}' EXIT\n`);
    return started;
  } catch {
    return undefined;
  }
}

/** A helper with nothing to run: one there is, else a new one while there are fewer than HELPER_SLOTS. */
function idleHelper(env: NodeJS.ProcessEnv): Helper | undefined {
  // A helper that has run RETIRE_AFTER commands is retired once it has nothing to run (see above).
  for (const h of [...helpers]) if (!h.busy && h.sent >= RETIRE_AFTER) h.retire();
  const idle = helpers.find((h) => !h.busy);
  if (idle || helpers.length >= HELPER_SLOTS) return idle;
  const started = startHelper(env);
  if (started) helpers.push(started);
  return started;
}

/** The spare helper (a new one after RETIRE_AFTER commands). */
function spareHelper(env: NodeJS.ProcessEnv): Helper | undefined {
  if (spare && spare.sent < RETIRE_AFTER) return spare;
  spare?.retire();
  return (spare = startHelper(env));
}

/**
 * Ends every helper (the end of their input) and waits, up to `limitMs`, for each to exit, so that none outlives
 * the gateway, even for the moment its exit takes: at the end of a command, and of a supervisor's stop. The
 * commands they started and still run report as before (the helper is not needed for that); a command after this
 * starts a new one.
 */
export async function stopHelpers(limitMs = 1000): Promise<void> {
  const all = [...living];
  for (const helper of all) helper.retire();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(all.map((h) => h.exited)), new Promise((resolve) => (timer = setTimeout(resolve, limitMs)))]);
  clearTimeout(timer);
}

/**
 * Starts `path` (found on the PATH already) with `args` through the helper, `input` on its stdin, its output kept
 * (`output: false`: thrown away, and node not kept alive for it). Undefined when the helper cannot take it: the
 * caller spawns it itself, as nothing has been started.
 */
export function runThroughHelper(path: string, args: readonly string[], env: NodeJS.ProcessEnv,
  options: { input?: string; output?: boolean } = {}): HelperRun | undefined {
  if (disabled) return undefined;
  let files: { out: string; err: string; in?: string; fds: number[] } | undefined;
  try {
    const base = filesDir();
    if (base === undefined) {
      disabled = true;
      return undefined;
    }
    const id = ++nextId;
    const at = join(base, String(id));
    const keep = options.output !== false;
    files = { out: `${at}.o`, err: `${at}.e`, fds: [] };
    if (keep) {
      files.fds.push(openSync(files.out, 'w+', 0o600), openSync(files.err, 'w+', 0o600));
    }
    if (options.input !== undefined) {
      files.in = `${at}.i`;
      writeFileSync(files.in, options.input, { mode: 0o600 });
    }
    const redirect = keep ? `2>${quoted(files.err)} <${quoted(files.in ?? '/dev/null')} >${quoted(files.out)}` : '</dev/null >/dev/null 2>&1';
    const command = `${[path, ...args].map(quoted).join(' ')} ${redirect} & echo "P ${id} $!"`;
    // A command whose end node waits for goes to a helper with nothing to run (or one it can start), which runs it
    // itself and waits for it (one fork, not two). Where every one is busy, it goes to the spare, as a fire-and-forget
    // one (an arping) does, which runs each in a subshell of its own: nothing waits behind another (a ping waits a
    // second for an answer that may not come, and `lab check` sends dozens at once). The `:` first makes dash and
    // busybox reap the subshells that have exited, which they do only before a command in the foreground.
    const serial = keep ? idleHelper(env) : undefined;
    const h = serial ?? spareHelper(env);
    if (!h) {
      disabled = true;
      cleanUp(files);
      return undefined;
    }
    const text = serial ? `${command}; wait $!; echo "E ${id} $?"\n` : `: ; { ${command}; wait $!; echo "E ${id} $?"; } &\n`;
    const taken = files;
    let pending!: Pending;
    const done = new Promise<HelperResult>((resolve, reject) => {
      pending = {
        held: keep,
        serial: serial !== undefined,
        finish: (status) => {
          const ending: Ending = status > 128 && SIGNAL_NAMES.has(status - 128) ? { signal: SIGNAL_NAMES.get(status - 128)! } : { code: status };
          if (!keep) {
            cleanUp(taken);
            resolve({ ending, stdout: '', stderr: '' });
            return;
          }
          Promise.all(taken.fds.map(readFd))
            .then(([out, err]) => resolve({ ending, stdout: out!.toString('utf8'), stderr: err!.toString('utf8') }), reject)
            .finally(() => cleanUp(taken));
        },
        fail: (error) => {
          cleanUp(taken);
          reject(error);
        },
      };
    });
    h.send(id, text, pending);
    let pid: number | undefined;
    return {
      get pid() {
        for (const helper of living) pid ??= helper.pidOf(id);
        return pid;
      },
      kill: (signal) => {
        for (const helper of living) if (helper.kill(id, signal)) return;
      },
      done,
    };
  } catch {
    // Out of descriptors (EMFILE), the tmpfs full or gone: a spawn of its own says what it meets.
    if (files) cleanUp(files);
    return undefined;
  }
}

/** What the command wrote to the file `fd` holds open (from its start: node never moved it). */
function readFd(fd: number): Promise<Buffer> {
  return new Promise((resolve, reject) => readFile(fd, (error, data) => (error ? reject(error) : resolve(data))));
}

function cleanUp(files: { out: string; err: string; in?: string; fds: number[] }): void {
  for (const fd of files.fds.splice(0)) {
    try {
      closeSync(fd);
    } catch {
      // closed
    }
  }
  for (const path of [files.out, files.err, files.in]) {
    if (path === undefined) continue;
    try {
      unlinkSync(path);
    } catch {
      // never made (a fire-and-forget command's), or gone
    }
  }
}
