/** A config problem: where it is (a path into the document) and a plain sentence. */
export type PathSegment = string | number;

export interface Problem {
  readonly path: readonly PathSegment[];
  readonly message: string;
  /** The problem is the key itself (unknown, repeated): its line is the key's, not where its value starts. */
  readonly at?: 'key';
  /** The line, when the path cannot tell it (a key written three times has one path for all of them). */
  readonly line?: number;
  /** The file of rules.dir the problem is in (a template, or a file that is none), when it is in one: the log names it. */
  readonly file?: string;
}

/** A key as users see it in a path: plain when it is a word, else quoted (a key may hold any text, a newline too). */
const PLAIN_KEY = /^[A-Za-z0-9_-]+$/;

/** A value echoed in a message up to this many characters; a longer one by its first SHOWN_PREFIX and its length. */
const SHOWN_WHOLE = 64;
const SHOWN_PREFIX = 40;

/**
 * A count with thousands separators, `1,048,576`, as `toLocaleString('en-US')` writes it but without ICU: the first
 * use of a locale loads about 6 MB of the node binary's ICU data into memory, and schema.ts formats a count when it
 * is loaded, so every `vlan-gateway run` kept them (the supervisor's RSS target is 80 MB).
 */
export function groupDigits(n: number): string {
  const [whole = '', fraction] = String(n).split('.');
  const grouped = whole.replace(/\B(?=(\d{3})+$)/g, ',');
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

/**
 * A value from the file as a message echoes it: whole, or, past a sane length (a 1 MB string given as a name), its
 * start and how long it is: `aaaa… (1,048,576 characters)`. `quote` writes the part shown (as JSON.stringify does).
 */
export function shown(text: string, quote: (part: string) => string = (part) => part): string {
  if (text.length <= SHOWN_WHOLE) return quote(text); // UTF-16 units: never fewer than characters
  const characters = Array.from(text);
  if (characters.length <= SHOWN_WHOLE) return quote(text);
  return `${quote(`${characters.slice(0, SHOWN_PREFIX).join('')}…`)} (${groupDigits(characters.length)} characters)`;
}

/** A text value in quotes, shortened as `shown` does: `"aaaa…" (1,048,576 characters)`. */
export const quoted = (text: string): string => shown(text, (part) => JSON.stringify(part));

/** A type as a type error names it ("must be a number, not a boolean"), from zod's names of types. */
export function article(type: string): string {
  if (type === 'integer') return 'an integer';
  if (type === 'null') return 'null (an empty value)';
  if (type === 'nan') return '.nan (not a number)';
  if (type === 'array' || type === 'object') return `an ${type}`;
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/**
 * A value's type as a type error names it (article() says it): JSON's types, with "nan" for .nan, as zod 3 named
 * them (zod 4's issues no longer carry the type received).
 */
export function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && Number.isNaN(value)) return 'nan';
  if (value instanceof Date) return 'date';
  return typeof value;
}

/** `vlans[0].gateway` — the form users see in every error; an odd key (or a very long one) as `["my key"]`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const segment of path) {
    out += typeof segment === 'number' ? `[${segment}]` : !PLAIN_KEY.test(segment) || segment.length > SHOWN_WHOLE ? `[${quoted(segment)}]` : out === '' ? segment : `.${segment}`;
  }
  return out || '(top level)';
}

/**
 * A line as it may be printed: control characters (a newline would forge a problem line of its own, an escape
 * sequence would drive the terminal), the Unicode line separators, and the invisible format characters (a
 * direction override makes a line read otherwise than it is) shown as escapes. Text from the file (a key, a path,
 * a YAML parser's message) can carry any of them.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what this finds
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly lines: readonly string[];
  constructor(
    readonly source: string,
    readonly problems: readonly Problem[],
    lines: readonly string[] = problems.map((p) => `${formatPath(p.path)}: ${p.message}`),
  ) {
    const printed = lines.map(printable);
    super(`${printable(source)}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${printed.map((l) => `  ${l}`).join('\n')}`);
    this.lines = printed;
  }
}

/** Why a rules.dir (or a file in it) could not be read, in the words every rules.dir problem uses. */
export function unreadableDirWhy(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such directory' : code === 'ENOTDIR' ? 'not a directory' : code === 'EISDIR' ? 'is a directory'
    : code === 'EACCES' ? 'permission denied' : code ?? (error as Error).message;
}
