/**
 * The config file's YAML: its value (js-yaml, YAML 1.2 core schema) and, for error messages only, the line where a
 * path's value starts. js-yaml builds plain values without positions, which keeps a 10,000-rule config at about a
 * tenth of what a document of positioned nodes costs (BENCHMARKS.md); the positions come from its event stream,
 * read again only when there is a problem to place. Pure.
 */
import {
  constructFromEvents, CORE_SCHEMA, EVENT_ALIAS, EVENT_DOCUMENT, EVENT_MAPPING, EVENT_POP, EVENT_SCALAR, EVENT_SEQUENCE,
  getScalarValue, loadAll, mergeTag, parseEvents, SCALAR_STYLE_PLAIN, YAMLException, type Event,
} from 'js-yaml';
import { shown, type PathSegment, type Problem } from './problems.js';

/** YAML 1.2's core schema, with merge keys (`<<: *defaults`), which Compose files have made familiar. */
const SCHEMA = CORE_SCHEMA.withTags(mergeTag);

/** Aliases per document: plenty for a config, and a bound on what a "billion laughs" file makes validation walk. */
const MAX_ALIASES = 100;

/** A fault the YAML parser reports: `line 3, column 4: bad indentation of a sequence entry` (1-based), and its line. */
export interface YamlFault {
  readonly text: string;
  readonly line?: number;
}

export class YamlSyntaxError extends Error {
  override readonly name = 'YamlSyntaxError';
  /**
   * `faults`: what stops the file being read, each with its line where it has one (a complex key in each mapping
   * that has one). `problems`: the keys the file repeats as well, as far as it could be read.
   */
  constructor(readonly faults: readonly YamlFault[], readonly problems: readonly Problem[] = []) {
    super(faults.map((f) => f.text).join('\n'));
  }
}

/**
 * The document's value: an empty file (or comments only) is `{}`; more than one document is an error. A key given
 * twice in one mapping is a problem of its own (`problems`, with its path), and the rest is still validated: the
 * value is then read as JSON.parse reads a repeated key, the last one counting. A file that cannot be read at all
 * (a syntax error, an unknown alias) is a YamlSyntaxError, with the keys it repeats besides.
 */
export function parseYaml(text: string): { value: unknown; problems: Problem[]; empty: boolean } {
  const load = (json: boolean) => loadAll(text, { schema: SCHEMA, maxAliases: MAX_ALIASES, json });
  let documents: unknown[] | undefined;
  let problems: Problem[] = [];
  try {
    documents = load(false);
  } catch (error) {
    if (!(error instanceof YAMLException)) throw error;
    problems = repeatedKeys(text, error);
    let fault: YAMLException | undefined = error;
    if (error.reason === REPEATED && problems.length > 0) {
      try {
        documents = load(true);
        fault = undefined;
      } catch (other) {
        if (!(other instanceof YAMLException)) throw other;
        fault = other; // another fault besides: said with the repeated keys
      }
    }
    if (fault || !documents) throw new YamlSyntaxError(faultsOf(fault ?? error, text), problems);
  }
  // A file ending in "---" (or holding empty documents around it) holds one config: the empty ones are nothing.
  if (documents.length > 1) documents = documents.filter((d) => d !== null && d !== undefined);
  if (documents.length > 1) {
    throw new YamlSyntaxError([{ text: `(top level): the file holds ${documents.length} YAML documents (separated by "---"); a config is one document` }], problems);
  }
  // No document, or none with a value: nothing but blank lines, comments or document markers (or a bare `~`).
  return { value: documents[0] ?? {}, problems, empty: documents[0] === null || documents[0] === undefined };
}

const REPEATED = 'duplicated mapping key';
const COMPLEX_KEY = 'object-based map does not support complex keys';

/**
 * js-yaml's exception as lines a person reads: where, and what (which key, for a repeated one). js-yaml places a
 * complex key at the file's start: each is found in the events instead, at its own line.
 */
function faultsOf(error: YAMLException, text: string): YamlFault[] {
  if (error.reason === COMPLEX_KEY) {
    const keys = complexKeys(text);
    if (keys.length > 0) {
      const at = position(text);
      return keys.map((offset) => {
        const { line, column } = at(offset);
        return { text: `line ${line}, column ${column}: ${plainReason(error.reason)}`, line };
      });
    }
  }
  return [syntaxError(error, text)];
}

/** js-yaml's exception as a line a person reads: where, and what (which key, for a repeated one). */
function syntaxError(error: YAMLException, text: string): YamlFault {
  const mark = error.mark;
  const repeated = error.reason === REPEATED;
  // js-yaml's reason does not say which key is repeated; the mark is at its second use.
  // A quoted key's mark is just inside its opening quote.
  const quote = mark?.position ? text[mark.position - 1] : undefined;
  const rest = mark?.position === undefined ? '' : text.slice(mark.position);
  const key = !repeated || mark?.position === undefined ? undefined
    : quote === '"' || quote === "'" ? new RegExp(`^([^${quote}\\n]*)${quote}[ \\t]*:`).exec(rest)?.[1]
    : /^[ \t]*([^\s:#"'{}[\],]+)[ \t]*:/.exec(rest)?.[1];
  const reason = key ? `${error.reason} ${shown(key, (part) => `"${part}"`)}` : plainReason(error.reason);
  if (mark?.line === undefined || mark.column === undefined) return { text: `(top level): ${reason}` };
  const [line, column] = markLine(text, mark.line, mark.column);
  return { text: `line ${line}, column ${column}: ${reason}${flowValueHint(text, line, column)}`, line };
}

/**
 * `listen: [::]:9100` is a YAML list (`[::]`) with text after it, which js-yaml says as "bad indentation of a mapping
 * entry", pointing just past the bracket: nothing there says the brackets are the trouble. Where the fault's mark is
 * inside such a value (a list or a mapping that goes on past its closing bracket), just after a closing bracket, the
 * value is named, with the quotes that make it text. Only there: a fault elsewhere (the line's indentation, a tab or
 * an alias on the next line) says nothing of a list on that line or the one before, which may well be one.
 */
function flowValueHint(text: string, line: number, column: number): string {
  const source = text.split(/\r\n?|\n/)[line - 1] ?? '';
  const m = /^\s*(?:-\s+)?[^\s#:'"[\]{}][^#:]*:\s+([[{][^\s#]*[\]}][^\s#\]},][^\s#]*)\s*(?:#.*)?$/d.exec(source);
  const value = m?.[1];
  const [start, end] = m?.indices?.[1] ?? [0, 0];
  const at = column - 1; // 0-based, as the indices
  if (value === undefined || at <= start || at >= end || !/[\]}]/.test(source[at - 1]!)) return '';
  // In double quotes a '"' ends the text and a backslash starts an escape: such a value is said in single quotes (in which
  // only a "'" is written twice), so that what is shown is what to write.
  const quotedValue = /["\\]/.test(value) ? `'${value.replaceAll("'", "''")}'` : `"${value}"`;
  // A long value is shortened, as every value said is, and then not written out again quoted.
  const said = shown(value);
  return ` (the value ${said} starts with "${value[0]}", which YAML reads as the start of a ${value[0] === '[' ? 'list' : 'mapping'}: `
    + `to mean the text, quote it${said === value ? `, as in ${quotedValue}` : ''})`;
}

/** js-yaml's mark (0-based) as the 1-based line and column a person reads. */
function markLine(text: string, line: number, column: number): [number, number] {
  // At the end of a file that ends with a line break, js-yaml's mark is on the line after the last: say the last.
  const lines = text.split(/\r\n?|\n/);
  if (lines.at(-1) === '') lines.pop();
  const last = Math.max(lines.length, 1);
  return line + 1 > last ? [last, (lines[last - 1]?.length ?? 0) + 1] : [line + 1, column + 1];
}

/**
 * js-yaml's reasons that name its own internals (an option, its object model) said as what is wrong in the file;
 * the others already read as a sentence about the text.
 */
function plainReason(reason: string): string {
  if (reason.startsWith('aliases exceeded')) return `more than ${MAX_ALIASES} aliases (*name) in the file; a config needs far fewer`;
  const depth = /^nesting exceeded maxDepth \((\d+)\)$/.exec(reason);
  if (depth) return `more than ${depth[1]} levels of nesting (lists and mappings inside one another); a config needs a few`;
  if (reason === 'object-based map does not support complex keys') return 'a key that is a list or a mapping ("? [a, b]"); a config\'s keys are words';
  if (reason.startsWith('cannot merge mappings')) return 'a merge key (<<) takes a mapping or a list of mappings (like <<: *defaults), nothing else';
  return reason;
}

/**
 * The events of as much of the text as the parser reads: the whole, or, where it stops at a syntax error, the lines
 * before the one it stops on (the keys there are what they are in the whole text). When those do not parse either (a
 * list left open above the error), the text before one of the few top-level keys above it; undefined when none parses.
 */
function eventsBefore(text: string, error?: YAMLException): Event[] | undefined {
  const parse = (part: string) => {
    try {
      return parseEvents(part, {});
    } catch {
      return undefined;
    }
  };
  const whole = parse(text);
  if (whole || error?.mark?.line === undefined || error.mark.column === undefined) return whole;
  const [line] = markLine(text, error.mark.line, error.mark.column); // the line the fault is said at
  const starts = [0, ...[...text.matchAll(/\r\n?|\n/g)].map((m) => m.index + m[0].length)];
  const topLevel = starts.slice(1, line - 1).filter((start) => /^[^\s#-]/.test(text.slice(start, start + 1))).reverse();
  for (const end of [starts[line - 1] ?? 0, ...topLevel.slice(0, 3)]) {
    const events = end > 0 ? parse(text.slice(0, end)) : undefined;
    if (events) return events;
  }
  return undefined;
}

/** Each key written a second time in one mapping, with its path and both lines (before `error`, where it stopped the parser). */
function repeatedKeys(text: string, error?: YAMLException): Problem[] {
  const events = eventsBefore(text, error);
  if (!events) return [];
  const lineOf = lineOfOffset(text);
  const problems: Problem[] = [];
  const open = (k: number) => k < events.length && events[k]!.type !== EVENT_POP;
  const walk = (i: number, path: PathSegment[]): void => {
    const type = events[i]?.type;
    if (type === EVENT_MAPPING) {
      const seen = new Map<string, number>();
      for (let k = i + 1; open(k); k = after(events, after(events, k))) {
        const key = events[k]!;
        const name = keyName(text, key);
        if (name === undefined) continue;
        // An empty key (": 1") has no text of its own: its line is its value's.
        const start = startOf(key) ?? (open(after(events, k)) ? startOf(events[after(events, k)]!) : undefined) ?? 0;
        const first = seen.get(name);
        if (first === undefined) seen.set(name, start);
        else problems.push({ path: [...path, name], line: lineOf(start), message: `is given twice in one mapping (first at line ${lineOf(first)}); give it once` });
        if (open(after(events, k))) walk(after(events, k), [...path, name]);
      }
    } else if (type === EVENT_SEQUENCE) {
      for (let k = i + 1, n = 0; open(k); k = after(events, k), n++) walk(k, [...path, n]);
    }
  };
  for (const [k, event] of events.entries()) if (event.type === EVENT_DOCUMENT) walk(k + 1, []);
  return problems;
}

/** Where each key that is a list or a mapping (`? [a, b]`) starts. */
function complexKeys(text: string): number[] {
  const events = eventsBefore(text) ?? [];
  const offsets: number[] = [];
  const open = (k: number) => k < events.length && events[k]!.type !== EVENT_POP;
  for (const [i, event] of events.entries()) {
    if (event.type !== EVENT_MAPPING) continue;
    for (let k = i + 1; open(k); k = after(events, after(events, k))) {
      const key = events[k]!;
      if (key.type !== EVENT_MAPPING && key.type !== EVENT_SEQUENCE) continue;
      // Said at its "?", where there is one.
      const indicator = /\?[ \t]*$/.exec(text.slice(Math.max(0, key.start - 80), key.start));
      offsets.push(indicator ? key.start - indicator[0].length : key.start);
    }
  }
  return offsets.sort((a, b) => a - b);
}

/** A plain word no core-schema type takes: the key is its text (most keys, so most keys construct nothing). */
const PLAIN_WORD = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const RESOLVED_WORD = /^(null|Null|NULL|true|True|TRUE|false|False|FALSE)$/;
const DOCUMENT_START: Event = { type: EVENT_DOCUMENT, explicitStart: false, explicitEnd: false, directives: [] };

/**
 * A scalar key as the loaded value names it: js-yaml makes a property of its value, so `~` is "null", `0x10` is
 * "16", `1.50` is "1.5" and `!!str 1` is "1". Undefined for a key that is no scalar.
 */
function keyName(text: string, key: Event): string | undefined {
  if (key.type !== EVENT_SCALAR) return undefined;
  const written = getScalarValue(text, key);
  if (key.tagStart < 0 && (key.style !== SCALAR_STYLE_PLAIN || (PLAIN_WORD.test(written) && !RESOLVED_WORD.test(written)))) return written;
  try {
    return String(constructFromEvents([DOCUMENT_START, key, { type: EVENT_POP }], { source: text, schema: SCHEMA })[0]);
  } catch {
    return written; // a tag it does not know: the load reports that
  }
}

/** Offset → 1-based line and column. */
function position(text: string): (offset: number) => { line: number; column: number } {
  const lineOf = lineOfOffset(text);
  return (offset) => {
    const line = lineOf(offset);
    const before = text.slice(0, offset);
    const lineStart = Math.max(before.lastIndexOf('\n'), before.lastIndexOf('\r')) + 1;
    return { line, column: offset - lineStart + 1 };
  };
}

/**
 * A function giving the 1-based line where a path's value starts. When the path goes further than the document
 * does, where its deepest existing part starts (the mapping a missing key belongs in); undefined for the document
 * root. The text is parsed once, for all the problems of one config.
 */
export function lineFinder(text: string): (path: readonly PathSegment[], at?: 'key') => number | undefined {
  let index: EventIndex | undefined;
  let lineOf: ((offset: number) => number) | undefined;
  return (path, at) => {
    index ??= new EventIndex(text);
    const offset = index.offsetOf(path, at === 'key');
    if (offset === undefined) return undefined;
    lineOf ??= lineOfOffset(text);
    return lineOf(offset);
  };
}

/** Offset → 1-based line. A line ends at LF, CRLF or a lone CR (YAML's line breaks; an old Mac editor writes CR alone). */
function lineOfOffset(text: string): (offset: number) => number {
  const lineStarts = [0];
  for (const m of text.matchAll(/\r\n?|\n/g)) lineStarts.push(m.index + m[0].length);
  return (offset) => {
    let low = 0;
    let high = lineStarts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (lineStarts[mid]! <= offset) low = mid;
      else high = mid - 1;
    }
    return low + 1;
  };
}

/** A collection's children by key or position: the event index of each value, and where its key starts. */
type Children = Map<string, { value: number; keyStart: number | undefined }>;

/** The event stream, with each collection's children listed once, when a path first goes through it. */
class EventIndex {
  private readonly events: Event[];
  private readonly children = new Map<number, Children>();

  constructor(private readonly text: string) {
    try {
      this.events = parseEvents(text, {});
    } catch {
      this.events = []; // not reached with a text parseYaml accepted
    }
  }

  /** Where the path's value starts; with `key`, where its last key is written (a block value starts lines below it). */
  /** Where the document parseYaml took starts: empty ones around it ("---" first, a "~") are skipped there, so here too. */
  private root: number | undefined;

  offsetOf(path: readonly PathSegment[], key = false): number | undefined {
    const { events } = this;
    if (this.root === undefined) {
      // Once for all the problems of a config: a 10,000-rule file may have a problem in every rule.
      const collection = (k: number) => events[k]?.type === EVENT_MAPPING || events[k]?.type === EVENT_SEQUENCE;
      const documents = events.flatMap((e, k) => (e.type === EVENT_DOCUMENT ? [k + 1] : []));
      this.root = documents.find(collection) ?? documents[0] ?? 0;
    }
    let i = this.root;
    if (i === 0 || i >= events.length) return undefined;
    let found: number | undefined;
    for (const [n, segment] of path.entries()) {
      const child = this.childrenOf(i)?.get(String(segment));
      if (!child) break;
      i = child.value;
      found = (key && n === path.length - 1 ? child.keyStart : undefined) ?? startOf(this.events[i]!) ?? child.keyStart ?? found;
    }
    return found;
  }

  private childrenOf(i: number): Children | undefined {
    const known = this.children.get(i);
    if (known) return known;
    const { events, text } = this;
    const type = events[i]?.type;
    if (type !== EVENT_MAPPING && type !== EVENT_SEQUENCE) return undefined;
    const children: Children = new Map();
    const open = (k: number) => k < events.length && events[k]!.type !== EVENT_POP;
    if (type === EVENT_MAPPING) {
      for (let k = i + 1; open(k); k = after(events, after(events, k))) {
        const key = events[k]!;
        const name = keyName(text, key);
        // A repeated key: its last use is the one the value comes from (see parseYaml), and the one a problem names.
        if (name !== undefined && open(after(events, k))) {
          children.set(name, { value: after(events, k), keyStart: startOf(key) });
        }
      }
    } else {
      for (let k = i + 1, n = 0; open(k); k = after(events, k), n++) children.set(String(n), { value: k, keyStart: undefined });
    }
    this.children.set(i, children);
    return children;
  }
}

/** The index of the event after the node that starts at `i` (a collection ends at its POP). */
function after(events: readonly Event[], i: number): number {
  const type = events[i]!.type;
  if (type !== EVENT_MAPPING && type !== EVENT_SEQUENCE) return i + 1;
  let depth = 0;
  for (let k = i; k < events.length; k++) {
    const t = events[k]!.type;
    if (t === EVENT_MAPPING || t === EVENT_SEQUENCE) depth++;
    else if (t === EVENT_POP && --depth === 0) return k + 1;
  }
  return events.length;
}

/** Where a node starts in the text (offsets of -1 mean absent: an empty scalar has none). */
function startOf(event: Event): number | undefined {
  const at = event.type === EVENT_MAPPING || event.type === EVENT_SEQUENCE ? event.start
    : event.type === EVENT_SCALAR ? event.valueStart
    : event.type === EVENT_ALIAS ? event.anchorStart
    : -1;
  return at >= 0 ? at : undefined;
}
