/**
 * What a test process made, removed when it is interrupted (a Ctrl-C: SIGINT to the terminal's process group; ava's
 * timeout: SIGTERM to the worker) instead of outliving it. The first SIGINT or SIGTERM runs every cleanup registered
 * here, one after another, for at most `INTERRUPTED_TEARDOWN_MS`; then the process ends by that same signal, as it
 * would have without them.
 *
 * Each cleanup runs once on that first pass, and again `SETTLE_MS` later: the hook or test that was running goes on
 * meanwhile (a Ctrl-C kills only the commands running at that instant), and a lab it was building when the first pass
 * listed the namespaces was finished after it (seen under load). Cleanups must therefore be safe to run twice.
 *
 * No ava here: a helper that cleans up what it is making (prepareBundle's directory, while the build runs) can be
 * run, and interrupted, outside a test file. teardown.ts registers a file's after.always hooks here too.
 */

/** How long an interrupted process's cleanups may take before it ends anyway. */
const INTERRUPTED_TEARDOWN_MS = 90_000;

/** How long after a signal's first cleanup pass the second one runs. */
const SETTLE_MS = 2000;

/** Where a cleanup writes what it has to say: a hook's t.log, or stderr when interrupted. */
export type Say = (message: string) => void;

export interface Cleanup {
  /** The first pass (teardown.ts: the same run as the after.always hook's, whichever comes first). */
  readonly once: (say: Say) => Promise<void>;
  /** The second pass, SETTLE_MS later. */
  readonly again: (say: Say) => Promise<void>;
}

const cleanups = new Set<Cleanup>();
let listening = false;
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
  if (interruptedBy) return; // ava follows a Ctrl-C with a SIGTERM of its own: one pass is enough
  interruptedBy = signal;
  process.stderr.write(`${signal}: running this test file's teardown before exiting\n`);
  const say: Say = (message) => process.stderr.write(`${message}\n`);
  const list = [...cleanups]; // as registered when the signal came: one that ends meanwhile still runs
  const pass = async (which: keyof Cleanup) => {
    // The second pass also runs those registered since: a signal handled before the callback of what the code was
    // making (a mkdtemp whose directory exists already, its cleanup registered in the callback) found it not yet
    // registered, and under load a bundle's directory outlived a SIGTERM (a CI run).
    for (const cleanup of which === 'again' ? new Set([...list, ...cleanups]) : list) {
      try {
        await cleanup[which](say);
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

/** Runs `cleanup` if the process is interrupted (see above) until the returned function is called. */
export function onInterrupt(cleanup: Cleanup): () => void {
  if (!listening) {
    listening = true;
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.stdout.on('error', ignoreEpipe);
    process.stderr.on('error', ignoreEpipe);
  }
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}
