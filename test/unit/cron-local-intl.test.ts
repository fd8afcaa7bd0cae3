/**
 * node-cron's clock in the bundle (src/cli/cron-local-intl.ts): what node-cron reads through it equals what it reads
 * through the real Intl, in zones with and without DST, with half- and quarter-hour offsets, a 30-minute DST (Lord
 * Howe) and a negative one (Dublin). Each zone runs in its own process (test/helpers/cron-intl-compare.ts), with
 * TZ set as a container sets it.
 */
import test from 'ava';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import { cronLocalIntlProblem } from '../../scripts/cron-local-intl.mjs';
import { cronIntl, shortOffset } from '../../src/cli/cron-local-intl.js';

const COMPARE = fileURLToPath(new URL('../helpers/cron-intl-compare.ts', import.meta.url));
const ZONES = ['UTC', 'Europe/Berlin', 'Europe/Dublin', 'America/New_York', 'America/St_Johns', 'Australia/Lord_Howe',
  'Asia/Kathmandu', 'Pacific/Chatham', 'Africa/Casablanca'];

for (const zone of ZONES) {
  test(`node-cron reads the same local time and offset as through Intl: TZ=${zone}`, async (t) => {
    const { stdout } = await execa(process.execPath, ['--import', 'tsx', COMPARE], { env: { TZ: zone } });
    const result = JSON.parse(stdout) as { instants: number; changes: number; mismatches: string[] };
    t.deepEqual(result.mismatches, []);
    t.true(result.instants >= 8_000, `${result.instants} instants compared`);
    if (zone !== 'UTC' && zone !== 'Asia/Kathmandu') t.true(result.changes > 50, `${result.changes} offset changes crossed`);
  });
}

test('the offset as en-US writes it', (t) => {
  const at = (offsetMinutes: number) => ({ getTimezoneOffset: () => offsetMinutes }) as Date;
  t.is(shortOffset(at(0)), 'GMT');
  t.is(shortOffset(at(-60)), 'GMT+1');
  t.is(shortOffset(at(210)), 'GMT-3:30');
  t.is(shortOffset(at(-345)), 'GMT+5:45');
  t.is(shortOffset(at(-825)), 'GMT+13:45');
});

test('a time zone, another locale or other options get the real Intl formatter', (t) => {
  type Ctor = new (locale: string, options: object) => object;
  const DateTimeFormat = cronIntl.DateTimeFormat as unknown as Ctor;
  const parts = { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', weekday: 'short', hour12: false };
  t.false(new DateTimeFormat('en-US', parts) instanceof Intl.DateTimeFormat, 'the local time node-cron asks for');
  t.false(new DateTimeFormat('en-US', { timeZone: undefined, timeZoneName: 'shortOffset' }) instanceof Intl.DateTimeFormat);
  for (const [locale, options] of [
    ['en-US', { ...parts, timeZone: 'Europe/Berlin' }],
    ['en-US', { timeZone: 'Asia/Tokyo', timeZoneName: 'shortOffset' }],
    ['de-DE', parts],
    ['en-US', { ...parts, hour12: true }],
    ['en-US', { ...parts, era: 'short' }],
    ['en-US', { timeZoneName: 'long' }],
  ] as const) {
    const formatter = new DateTimeFormat(locale, options);
    t.true(formatter instanceof Intl.DateTimeFormat, JSON.stringify({ locale, options }));
  }
  const tokyo = new DateTimeFormat('en-US', { timeZone: 'Asia/Tokyo', timeZoneName: 'shortOffset' }) as Intl.DateTimeFormat;
  t.is(tokyo.formatToParts(new Date(0)).find((p) => p.type === 'timeZoneName')?.value, 'GMT+9');
});

// The build bound the local Intl in node-cron's module and checked that node-cron still made an Intl formatter, but
// not that the local Intl answered it: node-cron asking with other options (an hourCycle for hour12, another offset
// style) got the real Intl from it, and the build, the tests above (which ask with options of their own) and the
// launcher's test all passed while the supervisor paid for ICU again. The build now runs node-cron as bound, with the
// real formatter refusing to be made, and fails with what node-cron asked.
test('the build runs node-cron bound to the local Intl without ICU, and a node-cron asking otherwise fails it, saying what it asked', async (t) => {
  t.is(await cronLocalIntlProblem(), undefined, 'node-cron as installed');
  t.is(await cronLocalIntlProblem({ edit: (source) => source.replace('hour12: false', "hourCycle: 'h23'") }),
    'node-cron made a formatter of the real Intl (ICU), with ["en-US",{"year":"numeric","month":"2-digit","day":"2-digit","hour":"2-digit",'
    + '"minute":"2-digit","second":"2-digit","weekday":"short","hourCycle":"h23"}]: src/cli/cron-local-intl.ts no longer answers what node-cron asks');
  t.is(await cronLocalIntlProblem({ edit: (source) => source.replace("timeZoneName: 'shortOffset'", "timeZoneName: 'longOffset'") }),
    'node-cron made a formatter of the real Intl (ICU), with ["en-US",{"timeZoneName":"longOffset"}]: src/cli/cron-local-intl.ts no longer answers what node-cron asks');
  // A node-cron that keeps the process alive fails the build, saying so, instead of hanging it.
  t.regex(await cronLocalIntlProblem({ edit: (source) => `${source}\nsetInterval(() => {}, 1000);`, timeoutMs: 1500 }) ?? '',
    /^running node-cron bound to its local Intl failed: .*ETIMEDOUT/);
});
