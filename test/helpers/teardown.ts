/**
 * `test.after.always(title, fn)` that also runs when the test file is interrupted.
 *
 * ava runs a file's after.always hooks only once its tests have ended. A Ctrl-C (SIGINT to the terminal's whole
 * process group, ava's worker included) or ava's own timeout (it sends SIGTERM to the worker) ends the worker at
 * once instead, and what the file had made outlives it: network namespaces, gateway processes (started in their
 * own process group, so the Ctrl-C does not reach them), Prometheus, a dockerd started with setsid, scratch
 * directories. Here the first SIGINT or SIGTERM runs the file's teardowns, one after another, for at most
 * `INTERRUPTED_TEARDOWN_MS`; then the worker ends by that same signal, as it would have without them.
 *
 * Each teardown runs once, whichever comes first (the hook or a signal); the other waits for the same run. After a
 * signal they run a second time, `SETTLE_MS` later: the hook or test that was running goes on meanwhile (a Ctrl-C
 * kills only the commands running at that instant), and a lab it was building when the first pass listed the
 * namespaces was finished after it (seen under load). Teardowns must therefore be safe to run twice.
 */
import test from 'ava';

/** How long an interrupted file's teardowns may take before the worker ends anyway. */
export const INTERRUPTED_TEARDOWN_MS = 90_000;

/** How long after a signal's first teardown pass the second one runs. */
const SETTLE_MS = 2000;

/** Where a teardown writes what it has to say: the hook's t.log, or stderr when interrupted. */
export type Say = (message: string) => void;

const teardowns: Array<{ once: (say: Say) => Promise<void>; again: (say: Say) => Promise<void> }> = [];
let interruptedBy: NodeJS.Signals | undefined;

/**
 * On a Ctrl-C, ava's main process exits at once, without waiting for its workers: the pipes of a worker's stdout
 * and stderr then lead nowhere, and the worker's next write fails with EPIPE, which (unhandled) is an uncaught
 * exception, and ava's handler of those ends the worker, its teardown cut short. A write that finds nobody reading
 * is of no consequence here; any other error of the streams stays uncaught.
 */
function ignoreEpipe(error: NodeJS.ErrnoException): void {
  if (error.code !== 'EPIPE') throw error;
}

function onSignal(signal: NodeJS.Signals): void {
  if (interruptedBy) return; // ava follows a Ctrl-C with a SIGTERM of its own: one teardown is enough
  interruptedBy = signal;
  process.stderr.write(`${signal}: running this test file's teardown before exiting\n`);
  const say: Say = (message) => process.stderr.write(`${message}\n`);
  const pass = async (which: 'once' | 'again') => {
    for (const teardown of teardowns) {
      try {
        await teardown[which](say);
      } catch (error) {
        say(`teardown after ${signal} failed: ${(error as Error).message ?? String(error)}`);
      }
    }
  };
  const all = (async () => {
    await pass('once');
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    await pass('again');
  })();
  const limit = new Promise<void>((resolve) => setTimeout(resolve, INTERRUPTED_TEARDOWN_MS).unref());
  void Promise.race([all, limit]).then(() => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.kill(process.pid, signal);
  });
}

/** Registers `fn` as an after.always hook titled `title`, run as well (once) if the file is interrupted. */
export function tearDownAlways(title: string, fn: (say: Say) => Promise<void>): void {
  let run: Promise<void> | undefined;
  const once = (say: Say) => (run ??= fn(say));
  if (teardowns.length === 0) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.stdout.on('error', ignoreEpipe);
    process.stderr.on('error', ignoreEpipe);
  }
  teardowns.push({ once, again: fn });
  test.after.always(title, (t) => once((message) => t.log(message)));
}
