/**
 * A process out of file descriptors (a flood of connections to the HTTP endpoints, say) cannot start a command:
 * the run must fail as a command that could not start, not end the process with an unhandled 'error'. Its own
 * file (own worker process), as it takes every descriptor for a moment.
 */
import test from 'ava';
import { closeSync, openSync } from 'node:fs';
import { CommandError } from '../../src/exec/runner.js';
import { ExecaRunner } from '../../src/exec/execa-runner.js';

test('a command started with no file descriptor left fails as one that could not start (EMFILE), and the next one runs', async (t) => {
  const runner = new ExecaRunner();
  const fds: number[] = [];
  try {
    for (;;) fds.push(openSync('/dev/null', 'r'));
  } catch {
    // the limit
  }
  let error: unknown;
  try {
    await runner.run(['true']);
  } catch (e) {
    error = e;
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  t.true(error instanceof CommandError, String(error));
  t.is((error as CommandError).exitCode, null);
  t.false((error as CommandError).notFound, 'out of descriptors is not "not installed"');
  t.is((error as CommandError).message, 'true could not be started: spawn true EMFILE');
  t.is((await runner.run(['true'])).exitCode, 0);
});
