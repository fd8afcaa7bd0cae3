import { execa } from 'execa';
import { createInterface } from 'node:readline';
import { CommandError, type Child, type CommandRunner, type RunOptions, type RunResult, type StartOptions } from './runner.js';

const env = { LC_ALL: 'C', LANG: 'C' };

/** The real runner: execa with argv arrays, never a shell. */
export class ExecaRunner implements CommandRunner {
  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const [file, ...args] = argv;
    if (file === undefined) throw new Error('empty argv');
    const result = await execa(file, args, {
      input: options.input,
      reject: false,
      env,
      stripFinalNewline: false,
      timeout: options.timeoutMs,
    });
    const out: RunResult = {
      stdout: String(result.stdout ?? ''),
      stderr: String(result.stderr ?? ''),
      exitCode: result.exitCode ?? (result.failed ? -1 : 0),
    };
    if (result.failed && result.exitCode === undefined) {
      // Could not start at all (ENOENT) or was killed: always an error, even with allowFailure.
      throw new CommandError(argv, null, result.shortMessage ?? result.message ?? 'failed to start', out.stdout);
    }
    if (out.exitCode !== 0 && !options.allowFailure) {
      throw new CommandError(argv, out.exitCode, out.stderr, out.stdout);
    }
    return out;
  }

  start(argv: readonly string[], options: StartOptions = {}): Child {
    const [file, ...args] = argv;
    if (file === undefined) throw new Error('empty argv');
    const child = execa(file, args, {
      env, reject: false, stdin: 'ignore', stderr: 'ignore', buffer: false,
      ...(options.detached ? { stdout: 'ignore', cleanup: false } : {}),
    });
    if (options.detached) child.unref();
    const listeners: Array<(line: string) => void> = [];
    if (child.stdout) {
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        for (const listener of listeners) listener(line);
      });
    }
    const exited = child.then(
      (r) => (r.signal ? null : (r.exitCode ?? null)),
      () => null,
    );
    return {
      pid: child.pid,
      onLine: (listener) => void listeners.push(listener),
      exited,
      stop: async () => {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(timer);
      },
    };
  }
}
