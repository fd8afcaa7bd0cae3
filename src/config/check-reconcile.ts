/** The reconcile section: a schedule that is a cron expression. Pure. */
import cron from 'node-cron';
import { asString, isObject, problemList, type Raw } from './cross-field.js';
import { quoted, type Problem } from './problems.js';

export function reconcileProblems(input: Raw): Problem[] {
  const { problems, add } = problemList();
  const reconcile = isObject(input.reconcile) ? input.reconcile : {};
  const schedule = asString(reconcile.schedule);
  // The schema's pattern keeps out what could never be one; cronProblem decides the rest ("61 * * * *", "5-1 * * * *").
  const problem = schedule !== undefined && /^[0-9*/,\- A-Za-z?]+$/.test(schedule) ? cronProblem(schedule) : undefined;
  if (problem !== undefined) add(['reconcile', 'schedule'], `${quoted(schedule!)}${problem}`);
  return problems;
}

interface CronField {
  readonly name: string;
  readonly min: number;
  readonly max: number;
  /** The field's unit's next: what a step past the field leaves (`*\/90` seconds: once a minute). */
  readonly next: string;
  /** Its values' unit, in the plural. */
  readonly unit: string;
  /** Where a range of it wraps round (a day of week: 7 is Sunday again, as 0). */
  readonly top?: number;
  /** Its values' names, by value (months from 1): the three letters and the name in full, as node-cron takes them. */
  readonly names?: readonly (readonly [string, string])[];
  /** What a name of it names, in the singular ("month"). */
  readonly named?: string;
}

const MONTHS = [['', ''], ['jan', 'january'], ['feb', 'february'], ['mar', 'march'], ['apr', 'april'], ['may', 'may'], ['jun', 'june'],
  ['jul', 'july'], ['aug', 'august'], ['sep', 'september'], ['oct', 'october'], ['nov', 'november'], ['dec', 'december']] as const;
const DAYS = [['sun', 'sunday'], ['mon', 'monday'], ['tue', 'tuesday'], ['wed', 'wednesday'], ['thu', 'thursday'], ['fri', 'friday'],
  ['sat', 'saturday']] as const;

/** The six fields, seconds first (a five-field expression leaves the seconds out). */
const FIELDS: readonly CronField[] = [
  { name: 'second', min: 0, max: 59, next: 'minute', unit: 'seconds' },
  { name: 'minute', min: 0, max: 59, next: 'hour', unit: 'minutes' },
  { name: 'hour', min: 0, max: 23, next: 'day', unit: 'hours' },
  { name: 'day of month', min: 1, max: 31, next: 'month', unit: 'days' },
  { name: 'month', min: 1, max: 12, next: 'year', unit: 'months', names: MONTHS, named: 'month' },
  { name: 'day of week', min: 0, max: 7, top: 6, next: 'week', unit: 'days', names: DAYS, named: 'day of week' },
];

const GENERIC = ' is not a valid cron expression (5 fields, or 6 with seconds first, like "*/30 * * * * *")';

/**
 * Why a schedule is no cron expression the drift check could run on, to follow the value (`"5-1 * * * *": …`), or
 * undefined where it is one. node-cron takes a range that runs backwards (5-1 in the minutes) as wrapping round the
 * field, and a step past the field (`*\/90` in the seconds) as its first value alone: the first was nearly always a
 * typo for 1-5 and ran the check 57 minutes in the hour, the second ran it once a minute, not every 90 seconds. Both
 * are refused here, with the field and what to write; a value out of a field's range is said with the range; the
 * rest is node-cron's to decide.
 */
export function cronProblem(schedule: string): string | undefined {
  const words = schedule.trim().split(/\s+/);
  if (words.length === 5 || words.length === 6) {
    const fields = words.length === 5 ? FIELDS.slice(1) : FIELDS;
    for (const [i, word] of words.entries()) {
      for (const item of word.split(',')) {
        const why = itemProblem(item, fields[i]!);
        if (why !== undefined) return `: in the ${fields[i]!.name} field, ${why}`;
      }
    }
    // Each field well-formed, and no day they name in any month they name (the 31st of February): never run.
    const impossible = !cron.validate(schedule) && cron.validateDetailed(schedule).errors.some((e) => /impossible day of month/.test(e.message));
    if (impossible) return `: day ${words.at(-3)} of month${/[,-]/.test(words.at(-2)!) ? 's' : ''} ${words.at(-2)} never comes, so the drift check would never run`;
  }
  return cron.validate(schedule) ? undefined : GENERIC;
}

/**
 * A value of a field, by its number or (months, days of week) its name, in three letters or in full, in any case (as
 * node-cron takes them); undefined for neither. Only the whole name: a word that starts with one (`junk`, `FRIDAYX`)
 * names nothing, and node-cron, which replaces the names it finds in the field's text, reads `janfeb` as 12.
 */
function valueOf(text: string, field: CronField): number | undefined {
  if (/^\d+$/.test(text)) return Number(text);
  const name = text.toLowerCase();
  const index = field.names?.findIndex(([short, full]) => short !== '' && (name === short || name === full));
  return index === undefined || index < 0 ? undefined : index;
}

/** What is wrong with one item of a field (`5-1`, `*\/90`, `70`), or undefined where this cannot tell (node-cron decides). */
function itemProblem(item: string, field: CronField): string | undefined {
  // Letters and digits together (1jan) are taken in whole here: node-cron puts a name's number in its place and reads
  // what that makes (1jan as 11, November; 0mon as Monday), so no mix of them is left to it.
  const m = /^(?:(\*)|([A-Za-z0-9]+)(?:-([A-Za-z0-9]+))?)(?:\/(\d+))?$/.exec(item);
  if (!m) return undefined;
  const [, star, firstText, lastText, stepText] = m;
  // The last of a day of week in the month, by its name or number (FRIL, 5L): node-cron's to decide.
  if (field.top !== undefined && lastText === undefined && stepText === undefined && /^[a-z0-9]+l$/i.test(item) && valueOf(item.slice(0, -1), field) !== undefined) return undefined;
  const range = `${field.min} to ${field.max}`;
  const first = firstText === undefined ? undefined : valueOf(firstText, field);
  const last = lastText === undefined ? undefined : valueOf(lastText, field);
  for (const [text, value] of [[firstText, first], [lastText, last]] as const) {
    if (text !== undefined && value === undefined && field.names !== undefined && /[A-Za-z]/.test(text)) {
      const [low, high] = [field.names[field.min]![0], field.names[field.top ?? field.max]![0]];
      return `${text} is not a ${field.named!}: a ${field.named!} is ${range} or its name, ${low.toUpperCase()} to ${high.toUpperCase()} or in full`;
    }
  }
  if ((firstText !== undefined && first === undefined) || (lastText !== undefined && last === undefined)) return undefined;
  for (const [text, value] of [[firstText, first], [lastText, last]] as const) {
    if (value !== undefined && (value < field.min || value > field.max)) return `${text} is out of its range, ${range}`;
  }
  const step = stepText === undefined ? undefined : Number(stepText);
  if (step === 0) return `${item} has a step of 0; a step is 1 or more`;
  // A range that starts at the field's top (a day of week's 7, Sunday again) starts at its first value: 7-1 is Sunday
  // and Monday, as node-cron runs it, not a range that runs backwards.
  const from = field.top !== undefined && first === field.max ? field.min : first;
  // And one that ends on Sunday written 0 (SAT-SUN, 5-0) ends at the week's end, 7: the weekend as people write it.
  // node-cron wraps it round to Sunday, the same days as up to 7, with a step too (5-0/2 and 5-7/2: Friday, Sunday).
  const to = field.top !== undefined && last === field.min && from !== undefined && from > field.min ? field.max : last;
  if (from !== undefined && last !== undefined && to !== undefined && from > to) {
    const named = /[A-Za-z]/.test(firstText! + lastText!);
    const show = (n: number) => (named && field.names ? field.names[n]![0].toUpperCase() : String(n));
    // What node-cron runs, written so: a range up to the field's top, and on from its bottom where the step lands.
    const every = step ?? 1;
    const part = (a: number, b: number) => (a + every > b ? show(a) : `${show(a)}-${show(b)}${step === undefined ? '' : `/${step}`}`);
    const top = field.top ?? field.max;
    const next = from + every * Math.ceil((top + 1 - from) / every) - (top - field.min + 1);
    const wrap = `${part(from, top)}${next <= last ? `,${part(next, last)}` : ''}`;
    // Only what means the same values: the same items the other way round (1-5 for 5-1) are others (MON-FRI for FRI-MON).
    return `${item} runs backwards: a range goes from the lower value up; for ${firstText} round to ${lastText}${step === undefined ? '' : ` every ${step}`}, write ${wrap}`;
  }
  if (star !== undefined && step !== undefined && step > (field.top ?? field.max) - field.min + 1) {
    return `${item} takes only ${field.min}: a step does not carry past the field's ${range} into the next ${field.next}, so this is once a ${field.next}, not every ${step} ${field.unit}`;
  }
  if (firstText !== undefined && lastText === undefined && step !== undefined) {
    // From the field's last value there is no range to step through (7/2 in the days of week: "7-7/2" said nothing).
    return `${item}: a step follows * or a range, as in */${step}${first === field.max ? '' : ` or ${firstText}-${field.max}/${step}`}`;
  }
  return undefined;
}
