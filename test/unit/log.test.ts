import test from 'ava';
import { Writable } from 'node:stream';
import { CommandError } from '../../src/exec/runner.js';
import { makeLogger, RateLimitedLog } from '../../src/log.js';

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

// The rate-limited lines (a netlink monitor that keeps exiting, stats readings that fail, refused reloads) were timed
// on the wall clock: set back an hour, the next hour of them was held back; set forward, the next was logged at once.
test('a rate-limited log counts time passing, not the wall clock', (t) => {
  const lines: Array<{ msg: string; suppressed?: number }> = [];
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => { lines.push(JSON.parse(chunk.toString('utf8')) as (typeof lines)[number]); done(); } });
  const wall = Date.now;
  const monotonic = performance.now;
  let wallMs = 1_700_000_000_000;
  let monotonicMs = 5000;
  Date.now = () => wallMs;
  performance.now = () => monotonicMs;
  try {
    const log = new RateLimitedLog(makeLogger('info', sink));
    log.warn('exited', {}, 'ip monitor exited; restarting it');
    wallMs -= 3_600_000; // the clock set back an hour, 31 s later
    monotonicMs += 31_000;
    log.warn('exited', {}, 'ip monitor exited; restarting it');
    wallMs += 7_200_000; // and forward two, a second later
    monotonicMs += 1000;
    log.warn('exited', {}, 'ip monitor exited; restarting it');
  } finally {
    Date.now = wall;
    performance.now = monotonic;
  }
  t.deepEqual(lines.map((l) => [l.msg, l.suppressed]), [['ip monitor exited; restarting it', undefined], ['ip monitor exited; restarting it', undefined]]);
});
