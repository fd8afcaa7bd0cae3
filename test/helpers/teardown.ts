/**
 * `test.after.always(title, fn)` that also runs when the test file is interrupted.
 *
 * ava runs a file's after.always hooks only once its tests have ended. A Ctrl-C (SIGINT to the terminal's whole
 * process group, ava's worker included) or ava's own timeout (it sends SIGTERM to the worker) ends the worker at
 * once instead, and what the file had made outlives it: network namespaces, gateway processes (started in their
 * own process group, so the Ctrl-C does not reach them), Prometheus, a dockerd started with setsid, scratch
 * directories. Here the first SIGINT or SIGTERM runs the file's teardowns (interrupt.ts: one after another, twice,
 * for a bounded time); then the worker ends by that same signal, as it would have without them. Teardowns must
 * therefore be safe to run twice.
 *
 * Each teardown runs once, whichever comes first (the hook or a signal); the other waits for the same run.
 */
import test from 'ava';
import { onInterrupt, type Say } from './interrupt.js';

export { type Say } from './interrupt.js';

/** Registers `fn` as an after.always hook titled `title`, run as well (once) if the file is interrupted. */
export function tearDownAlways(title: string, fn: (say: Say) => Promise<void>): void {
  let run: Promise<void> | undefined;
  const once = (say: Say) => (run ??= fn(say));
  onInterrupt({ once, again: fn });
  test.after.always(title, (t) => once((message) => t.log(message)));
}
