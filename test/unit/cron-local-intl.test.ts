/**
 * node-cron's clock in the bundle (src/cli/cron-local-intl.ts): what node-cron reads through it equals what it reads
 * through the real Intl, in zones with and without DST, with half- and quarter-hour offsets, a 30-minute DST (Lord
 * Howe) and a negative one (Dublin). Each zone runs in its own process (test/helpers/cron-intl-compare.ts), with
 * TZ set as a container sets it.
 */
import test from 'ava';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
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
