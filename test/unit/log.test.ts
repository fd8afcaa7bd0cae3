import test from 'ava';
import { Writable } from 'node:stream';
import { CommandError } from '../../src/exec/runner.js';
import { makeLogger } from '../../src/log.js';

/** What the supervisor's logger writes for `err`, parsed back from its JSON line. */
function logged(error: unknown): Record<string, unknown> {
  const lines: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(chunk.toString('utf8')); done(); } });
  makeLogger('info', sink).error({ err: error }, 'reconcile failed; previous rules left in place');
  return (JSON.parse(lines[0]!) as { err: Record<string, unknown> }).err;
}

test('an error the gateway classified is logged by its message and fields, without a stack trace', (t) => {
  const error = new CommandError(['ipset', 'restore', '-exist'], 1, 'ipset v7.17: Kernel error received: set type not supported\n');
  t.deepEqual(logged(error), {
    type: 'CommandError',
    message: 'ipset restore -exist exited 1: ipset v7.17: Kernel error received: set type not supported',
    argv: ['ipset', 'restore', '-exist'],
    exitCode: 1,
    notFound: false,
  });
});

test('anything else (a bug of ours) keeps its stack trace', (t) => {
  const err = logged(new TypeError("Cannot read properties of undefined (reading 'nic')"));
  t.is(err.type, 'TypeError');
  t.regex(String(err.stack), /^TypeError: Cannot read properties of undefined \(reading 'nic'\)\n +at /);
});
