/**
 * The real runner, LC_ALL=C, no shell parsing a command's words (a started child's watcher aside: END_WITH_US; the
 * command helper reads each word single-quoted, as the word itself).
 * `run` (every read and write of a pass) and fire-and-forget children (`arping`, up to one per VLAN at a start) go
 * to the command helper (shell-helper.ts), one long-lived /bin/sh that forks them: a fork of node holds the main
 * thread 7–11 ms per command here. Where it cannot take one (output taken as it comes, a program not on the PATH,
 * no helper), they are spawned with node:child_process directly: execa's stream machinery costs about 2 ms of
 * main-thread time per call more (4.3 ms against 2.2 ms for `true`, measured). A long-running child (`ip monitor`)
 * keeps execa, where its line splitting and cleanup are worth it.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { CHILD_STDERR_TAIL, CommandError, type Child, type CommandRunner, type RunOptions, type RunResult, type StartOptions } from './runner.js';
import { NotStarted, runThroughHelper, type HelperRun } from './shell-helper.js';

const env = { LC_ALL: 'C', LANG: 'C' };
/** The child's environment: ours with the C locale (built once, not per call). */
const childEnv = { ...process.env, ...env };

/**
 * The signals a program dies of by its own fault (a segfault, an assertion's abort, seccomp refusing a system call):
 * not a kill from outside, and not the gateway's.
 */
const CRASH_SIGNALS: ReadonlySet<NodeJS.Signals> = new Set(['SIGSEGV', 'SIGBUS', 'SIGABRT', 'SIGILL', 'SIGFPE', 'SIGSYS', 'SIGTRAP']);

/**
 * How a started child (`ip monitor`) ends when this process does, however it ends. In a container the kernel ends it
 * with PID 1; outside one (`run --netns` on a host, a `kill -9` of the gateway alone, systemd's KillMode=process) it
 * was reparented to init and ran for ever, one more per restart. Node cannot set PR_SET_PDEATHSIG, and `setpriv
 * --pdeathsig` is not in busybox; finding and killing a previous run's monitor at the next start needs a next start,
 * and is a guess by name. So a pipe: the child's stdin, whose writing end only this process holds. A shell (dash,
 * bash, busybox: POSIX only) forks a watcher that reads it, then execs the command, which keeps the shell's pid (a
 * stop, the exit status and the signal are the command's own). End of file comes when this process is gone, or
 * when node closes the pipe as the command exits; the watcher then ends the command (SIGTERM), but only if it is still
 * the command's child: once the command has exited, its pid may be anyone's. The command's words are never shell
 * text ("$@"). An asynchronous list's stdin is /dev/null unless redirected (POSIX), hence fd 3. The shell is
 * /bin/sh (never looked up), and the command is found on the PATH first (onPath): one that is not there is spawned as
 * it is, so that its spawn fails with its own name (`spawn ip ENOENT`), not as the shell's exit status 127.
 */
const END_WITH_US = [
  'exec 3<&0 </dev/null',
  '{ while read -r _; do :; done; read -r _ _ _ parent _ </proc/self/stat; [ "$parent" = "$$" ] && kill "$$"; } <&3 >/dev/null 2>&1 &',
  'exec "$@" 3<&-',
].join('\n');

/** The executable file `file` names (on the PATH, as a spawn or a shell looks for it), or undefined when there is none. */
function onPath(file: string): string | undefined {
  const executable = (path: string) => {
    try {
      accessSync(path, constants.X_OK);
      return statSync(path).isFile();
    } catch {
      return false;
    }
  };
  if (file.includes('/')) return executable(file) ? file : undefined;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const path = join(dir === '' ? '.' : dir, file);
    if (executable(path)) return path;
  }
  return undefined;
}

/** Why a spawn of `file` failed: its error, and what that means where it is not plain (as the monitor says it). */
function whyNotStarted(file: string, error: NodeJS.ErrnoException): string {
  if (error.code === 'ENOENT') return `${error.message}: ${file} is not installed, or not on the PATH`;
  if (error.code === 'EACCES') return `${error.message}: permission denied`;
  return error.message;
}

/**
 * Why a command died of `signal`: our timeout's kill (`timeoutMs`, when it was ours), a crash of the program, or a kill
 * from elsewhere.
 */
function killedWhy(signal: NodeJS.Signals, timeoutMs: number | undefined): string {
  if (timeoutMs) return `killed by ${signal} (timeout ${timeoutMs} ms)`;
  if (CRASH_SIGNALS.has(signal)) return `crashed (${signal}): a fault of the program itself, not a kill`;
  return `killed by ${signal}, not by the gateway (the OOM killer, or another process)`;
}

export class ExecaRunner implements CommandRunner {
  run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const [file, ...args] = argv;
    if (file === undefined) return Promise.reject(new Error('empty argv'));
    // Through the command helper (shell-helper.ts) where it can take the command: one whose output is taken as it
    // comes, or whose program is not there to run (its spawn's own error says so), is spawned here.
    const path = options.onStdout || options.signal?.aborted ? undefined : onPath(file);
    const helped = path === undefined ? undefined : runThroughHelper(path, args, childEnv, options.input === undefined ? {} : { input: options.input });
    return helped ? this.helped(argv, helped, options) : this.spawned(argv, options);
  }

  /** A command the helper runs: its ending said as a spawn's is (spawned). */
  private helped(argv: readonly string[], run: HelperRun, options: RunOptions): Promise<RunResult> {
    let timedOut = false;
    const timer = options.timeoutMs ? setTimeout(() => {
      timedOut = true;
      run.kill('SIGKILL');
    }, options.timeoutMs) : undefined;
    const onAbort = () => run.kill('SIGKILL');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const over = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    };
    return run.done.then(({ ending, stdout, stderr }) => {
      over();
      if (ending.signal !== undefined) {
        const aborted = options.signal?.aborted ? String(options.signal.reason) : undefined;
        throw new CommandError(argv, null, aborted !== undefined ? `killed by SIGKILL (${aborted})` : killedWhy(ending.signal, timedOut ? options.timeoutMs : undefined), stdout);
      }
      if (ending.code !== 0 && !options.allowFailure) throw new CommandError(argv, ending.code, stderr, stdout);
      return { stdout, stderr, exitCode: ending.code };
    }, (error: unknown) => {
      over();
      // The helper did not start it (it could not start itself, or was killed first): spawned here instead.
      if (error instanceof NotStarted) return this.spawned(argv, options);
      throw new CommandError(argv, null, error instanceof Error ? error.message : String(error));
    });
  }

  private spawned(argv: readonly string[], options: RunOptions): Promise<RunResult> {
    const [file, ...args] = argv as [string, ...string[]];
    return new Promise<RunResult>((resolve, reject) => {
      const child = spawn(file, args, {
        env: childEnv,
        stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.timeoutMs || options.signal ? { killSignal: 'SIGKILL' as const } : {}),
      });
      let startError: Error | undefined;
      // First, before anything can throw: a spawn that fails (ENOENT, EACCES, and EMFILE when the process is out of
      // file descriptors) emits 'error' on the next tick, and an 'error' nobody listens to ends the process.
      child.on('error', (error) => {
        startError = error; // ENOENT / EACCES: 'close' still follows
      });
      if (!child.stdout || !child.stderr) {
        // No pipes were made (EMFILE): no 'close' is coming either.
        child.once('error', (error) => reject(new CommandError(argv, null, whyNotStarted(file, error), '', false, true)));
        return;
      }
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const { onStdout } = options;
      if (onStdout) {
        child.stdout.setEncoding('utf8'); // a character split across two reads is held back, not mangled
        child.stdout.on('data', (chunk: string) => onStdout(chunk));
      } else {
        child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
      }
      child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
      if (options.input !== undefined && child.stdin) {
        child.stdin.on('error', () => {}); // EPIPE: the child exited without reading all; its exit status says why
        child.stdin.end(options.input);
      }
      // A command we killed (timeout, abort) is over once it has exited, even where a child of its own (a wrapper's)
      // still holds the pipes: 'close' would wait for that child, holding the pass past its timeout.
      const { stdout, stderr } = child;
      child.once('exit', () => {
        if (!child.killed) return;
        stdout.destroy();
        stderr.destroy();
      });
      child.on('close', (code, signal) => {
        const result: RunResult = {
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
          exitCode: code ?? -1,
        };
        // Could not start at all, or was killed (timeout): always an error, even with allowFailure.
        if (startError || code === null) {
          const aborted = options.signal?.aborted ? String(options.signal.reason) : undefined;
          // `killed` is set only by a kill of ours (the timeout's): a signal from anywhere else (the OOM killer, an
          // operator's kill) is not said to be the timeout, which would send them looking for a hang that never was.
          const why = aborted !== undefined ? `killed by SIGKILL (${aborted})`
            : startError ? whyNotStarted(file, startError)
            : killedWhy(signal!, child.killed ? options.timeoutMs : undefined);
          const notFound = (startError as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
          reject(new CommandError(argv, null, why, result.stdout, notFound, aborted === undefined && startError !== undefined));
        } else if (code !== 0 && !options.allowFailure) {
          reject(new CommandError(argv, code, result.stderr, result.stdout));
        } else {
          resolve(result);
        }
      });
    });
  }
  start(argv: readonly string[], options: StartOptions = {}): Child {
    const [file, ...args] = argv;
    if (file === undefined) throw new Error('empty argv');
    if (options.detached) return fireAndForget(file, args);
    // Found as the shell will find it (by its name: `ps` shows the command as given).
    const child = onPath(file) === undefined
      ? execa(file, args, { env, reject: false, stdin: 'ignore', stderr: 'pipe', buffer: false })
      : execa('/bin/sh', ['-c', END_WITH_US, 'sh', file, ...args], { env, reject: false, stdin: 'pipe', stderr: 'pipe', buffer: false });
    const listeners: Array<(line: string) => void> = [];
    // Its stderr was ignored: a lab agent that failed before it was ready ("agent … exited (1)") said "no output",
    // its node error lost. The end of it is kept, bounded (a chattering `ip monitor` costs no more).
    let stderr = Buffer.alloc(0);
    let cut = false;
    const stderrEnded = new Promise<void>((resolve) => {
      if (!child.stderr) return resolve();
      child.stderr.on('data', (chunk: Buffer) => {
        stderr = Buffer.concat([stderr, chunk]);
        if (stderr.length > CHILD_STDERR_TAIL) {
          stderr = stderr.subarray(stderr.length - CHILD_STDERR_TAIL);
          cut = true;
        }
      });
      child.stderr.once('close', () => resolve());
      child.stderr.once('error', () => resolve());
    });
    if (child.stdout) {
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        for (const listener of listeners) listener(line);
      });
    }
    // A spawn that failed (ENOENT, EACCES, EMFILE) has neither an exit code nor a signal: its error says why.
    let startError: string | undefined;
    const code = child.then(
      (r) => {
        if (r.exitCode === undefined && r.signal === undefined) startError = r.cause instanceof Error ? r.cause.message : r.shortMessage;
        return r.signal ? null : (r.exitCode ?? null);
      },
      (error: unknown) => {
        startError = error instanceof Error ? error.message : String(error);
        return null;
      },
    );
    // Its stderr read to the end first (a moment after the exit), but not waited on for ever: a child of the child
    // may hold the pipe open.
    const exited = code.then(async (c) => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([stderrEnded, new Promise<void>((resolve) => (timer = setTimeout(resolve, 500)))]);
      clearTimeout(timer);
      return c;
    });
    return {
      pid: child.pid,
      onLine: (listener) => void listeners.push(listener),
      exited,
      stderrTail: () => `${cut ? '…' : ''}${stderr.toString('utf8')}`,
      startError: () => startError,
      stop: async () => {
        child.kill('SIGTERM');
        // A stopped child (SIGSTOP, a debugger, a frozen cgroup) leaves SIGTERM pending: woken, it ends now, not at
        // the SIGKILL 2 s later, which every stop of the supervisor waited for.
        child.kill('SIGCONT');
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(timer);
      },
    };
  }
}

/**
 * A child nobody reads from and nobody waits for (one unsolicited ARP per new gateway address: 100 at a start with
 * 100 VLANs): a plain spawn with its output ignored, which does not keep this process alive.
 */
function fireAndForget(file: string, args: readonly string[]): Child {
  const path = onPath(file);
  const helped = path === undefined ? undefined : runThroughHelper(path, args, childEnv, { output: false });
  if (helped) {
    const exited = helped.done.then(({ ending }) => (ending.signal !== undefined ? null : ending.code), () => null);
    return {
      get pid() {
        return helped.pid;
      },
      onLine: () => {},
      exited,
      stop: async () => {
        helped.kill('SIGTERM');
        await exited;
      },
    };
  }
  const child = spawn(file, args, { env: childEnv, stdio: 'ignore' });
  child.unref();
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', () => resolve(null)); // not installed: nothing was started
    child.once('exit', (code, signal) => resolve(signal ? null : code));
  });
  return {
    pid: child.pid,
    onLine: () => {},
    exited,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
