/**
 * Run as its own process with TZ set (test/unit/cron-local-intl.test.ts): compares what node-cron reads through
 * cronIntl with what it reads through the real Intl, over this zone's UTC offset changes and random instants, and
 * prints one JSON line: how many instants, how many offset changes were crossed, and the first mismatches.
 */
import { cronIntl } from '../../src/cli/cron-local-intl.js';
import { prng } from './prng.js';

// Exactly the two formatters node-cron makes (node_modules/node-cron/dist/_shared.js, getPartsFormatter and
// getOffsetFormatter, without a time zone).
const PARTS = { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', weekday: 'short', hour12: false } as const;
const OFFSET = { timeZone: undefined, timeZoneName: 'shortOffset' } as const;

type Formatter = { formatToParts(date: Date): Array<{ type: string; value: string }> };
const make = (impl: unknown, options: object): Formatter =>
  new (impl as new (locale: string, options: object) => Formatter)('en-US', options);
const real = [make(Intl.DateTimeFormat, PARTS), make(Intl.DateTimeFormat, OFFSET)];
const ours = [make(cronIntl.DateTimeFormat, PARTS), make(cronIntl.DateTimeFormat, OFFSET)];

/**
 * What node-cron reads from the parts: every named part but literals, an hour of "24" as 0, and the offset as minutes
 * (getTimezoneGMT: "GMT" and "GMT+0", which ICU writes for the zone named UTC, are both Z).
 */
function read(formatter: Formatter, date: Date): string {
  return formatter.formatToParts(date).filter((p) => p.type !== 'literal').map((p) => {
    if (p.type === 'hour' && p.value === '24') return 'hour=00';
    if (p.type !== 'timeZoneName') return `${p.type}=${p.value}`;
    const m = /^GMT(?:([+-])(\d{1,2})(?::(\d{2}))?)?$/.exec(p.value);
    if (!m) return `timeZoneName=unreadable ${p.value}`;
    const minutes = m[1] ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3] ?? 0)) : 0;
    return `offset=${minutes}`;
  }).sort().join(' ');
}

const instants: number[] = [];
let changes = 0;
// Every quarter hour within 3 hours of each change of this zone's offset, 1970 to 2040 (DST both ways, and the
// zones that moved their standard time).
const offsetAt = (ms: number) => new Date(ms).getTimezoneOffset();
const HOUR = 3_600_000;
for (let t = Date.UTC(1970, 0, 1); t < Date.UTC(2040, 0, 1); t += 6 * HOUR) {
  if (offsetAt(t) === offsetAt(t + 6 * HOUR)) continue;
  changes++;
  for (let q = t - 3 * HOUR; q <= t + 9 * HOUR; q += HOUR / 4) instants.push(q, q + 59_999, q + 1);
}
const random = prng(20261129);
for (let i = 0; i < 8_000; i++) instants.push(Math.floor(random() * Date.UTC(2100, 0, 1)));

const mismatches: string[] = [];
for (const ms of instants) {
  const date = new Date(ms);
  for (let f = 0; f < 2; f++) {
    const want = read(real[f]!, date);
    const got = read(ours[f]!, date);
    // The real offset formatter also writes the date (its default fields): node-cron reads only the offset.
    const mine = f === 1 ? want.split(' ').filter((p) => /^(offset|timeZoneName)=/.test(p)).join(' ') : want;
    if (got !== mine && mismatches.length < 5) mismatches.push(`${date.toISOString()}: real ${mine} | ours ${got}`);
  }
}
console.log(JSON.stringify({ zone: Intl.DateTimeFormat().resolvedOptions().timeZone, instants: instants.length, changes, mismatches }));
