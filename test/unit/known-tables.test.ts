/**
 * When a scheduled pass may plan from the tables it knows instead of reading them (KnownTables): only where the
 * stats collector reads the tables at least as often as the schedule checks, for two of its readings.
 */
import test from 'ava';
import { knownTablesMaxAge } from '../../src/cli/drift-schedule.js';

/** The next `count` runs of a schedule that fires every `gapMs` (then, optionally, once after a longer wait). */
const runs = (gapMs: number, count = 10, then?: number) => {
  const start = Date.parse('2026-11-28T12:00:00Z');
  const dates = Array.from({ length: count }, (_, i) => new Date(start + i * gapMs));
  return then === undefined ? dates : [...dates, new Date(start + (count - 1) * gapMs + then)];
};

test('the default schedule (every 30 s) and stats interval (5 s): two readings and a second of slack', (t) => {
  t.is(knownTablesMaxAge(5000, runs(30_000)), 11_000);
  t.is(knownTablesMaxAge(5000, runs(5000)), 11_000, 'as often as the schedule: still no later than a reading pass');
});

test('a schedule that checks more often than the collector reads: every pass reads the tables', (t) => {
  t.is(knownTablesMaxAge(5000, runs(1000)), undefined);
  t.is(knownTablesMaxAge(5000, runs(60_000, 5, 1000)), undefined, 'the shortest gap counts, not the average');
});

test('no gap to compare (fewer than two runs) or no collector: every pass reads the tables', (t) => {
  t.is(knownTablesMaxAge(5000, runs(30_000, 1)), undefined);
  t.is(knownTablesMaxAge(5000, []), undefined);
  t.is(knownTablesMaxAge(0, runs(30_000)), undefined);
});
