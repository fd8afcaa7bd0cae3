/**
 * The `Intl` node-cron sees in the bundle (build.mjs binds it in node-cron's own module, nowhere else).
 *
 * Why: node-cron 4 reads the clock through `Intl.DateTimeFormat('en-US', …).formatToParts()` at every match and
 * every next-run search, only to get the local time's fields (year … second, weekday) and its UTC offset back as
 * numbers. The first Intl formatter of a process maps about 5 MB of the node binary's ICU data, and a supervisor
 * keeps it for as long as it runs: at 100 VLANs the drift schedule alone took the supervisor from about 75 to 82 MB
 * of RSS (the target is 80). Where no time zone is asked for (the drift schedule asks for none: it runs on the
 * container's local time), the same fields come from Date's local getters, which read the same zone as Intl's
 * default (V8 takes both from the process's time zone, TZ included). Anything else this does not know (a time zone,
 * another locale or option) goes to the real Intl, unchanged. test/unit/cron-local-intl.test.ts compares the two
 * across time zones and their DST changes.
 */

interface Part {
  readonly type: string;
  readonly value: string;
}

/** The fields node-cron asks for, in the order en-US writes them ("Sun, 03/08/2026, 02:30:00"). */
const FIELDS = ['weekday', 'month', 'day', 'year', 'hour', 'minute', 'second'] as const;
type Field = typeof FIELDS[number];
const KNOWN_OPTIONS = new Set<string>([...FIELDS, 'hour12', 'timeZone', 'timeZoneName']);
const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

const pad = (n: number): string => String(n).padStart(2, '0');

/** The local UTC offset at `date` as en-US's `timeZoneName: 'shortOffset'` writes it: GMT, GMT+1, GMT-3:30. */
export function shortOffset(date: Date): string {
  const east = -date.getTimezoneOffset();
  if (east === 0) return 'GMT';
  const minutes = Math.abs(east) % 60;
  return `GMT${east < 0 ? '-' : '+'}${Math.floor(Math.abs(east) / 60)}${minutes === 0 ? '' : `:${pad(minutes)}`}`;
}

function localValue(field: Field, date: Date): string {
  switch (field) {
    case 'weekday': return WEEKDAYS[date.getDay()]!;
    case 'month': return pad(date.getMonth() + 1);
    case 'day': return pad(date.getDate());
    case 'year': return String(date.getFullYear());
    case 'hour': return pad(date.getHours());
    case 'minute': return pad(date.getMinutes());
    case 'second': return pad(date.getSeconds());
  }
}

/** Whether these are options this answers itself: en-US, the local zone, fields as node-cron asks for them. */
function local(locale: unknown, options: Record<string, unknown>): boolean {
  if (locale !== 'en-US' || options.timeZone !== undefined) return false;
  if (Object.keys(options).some((key) => !KNOWN_OPTIONS.has(key))) return false;
  if (options.timeZoneName !== undefined) {
    return options.timeZoneName === 'shortOffset' && FIELDS.every((field) => options[field] === undefined);
  }
  if (options.hour12 !== false) return false;
  return options.weekday === 'short' && options.year === 'numeric'
    && FIELDS.slice(1).filter((f) => f !== 'year').every((field) => options[field] === '2-digit');
}

class LocalDateTimeFormat {
  constructor(private readonly offsetOnly: boolean) {}

  formatToParts(date: Date | number = Date.now()): Part[] {
    const at = typeof date === 'number' ? new Date(date) : date;
    if (this.offsetOnly) return [{ type: 'timeZoneName', value: shortOffset(at) }];
    return FIELDS.map((type) => ({ type, value: localValue(type, at) }));
  }
}

/** `new DateTimeFormat(locale, options)`: the local answer where it can give one, else the real Intl's formatter. */
function DateTimeFormat(locale?: unknown, options: Record<string, unknown> = {}): unknown {
  if (local(locale, options)) return new LocalDateTimeFormat(options.timeZoneName !== undefined);
  // A time zone or anything else: ICU's answer, at ICU's cost. (A function called with `new` that returns an
  // object yields that object.)
  return new globalThis.Intl.DateTimeFormat(locale as string, options);
}

/** Bound as `Intl` in node-cron's module by build.mjs. */
export const cronIntl = { DateTimeFormat };
