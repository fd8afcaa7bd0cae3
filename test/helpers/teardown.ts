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
 * Each teardown runs once, whichever comes first (the hook or a signal); the other waits for the same run.
 */
import test from 'ava';

/** How long an interrupted file's teardowns may take before the worker ends anyway. */
export const INTERRUPTED_TEARDOWN_MS = 90_000;

/** Where a teardown writes what it has to say: the hook's t.log, or stderr when interrupted. */
export type Say = (message: string) => void;

const teardowns: Array<(say: Say) => Promise<void>> = [];
let interruptedBy: NodeJS.Signals | undefined;

function onSignal(signal: NodeJS.Signals): void {
  if (interruptedBy) return; // ava follows a Ctrl-C with a SIGTERM of its own: one teardown is enough
  interruptedBy = signal;
  process.stderr.write(`${signal}: running this test file's teardown before exiting\n`);
  const all = (async () => {
    for (const teardown of teardowns) {
      try {
        await teardown((message) => process.stderr.write(`${message}\n`));
      } catch (error) {
        process.stderr.write(`teardown after ${signal} failed: ${(error as Error).message ?? String(error)}\n`);
      }
    }
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
  }
  teardowns.push(once);
  test.after.always(title, (t) => once((message) => t.log(message)));
}
