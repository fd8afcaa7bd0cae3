/**
 * The config file's YAML: its value (js-yaml, YAML 1.2 core schema) and, for error messages only, the line where a
 * path's value starts. js-yaml builds plain values without positions, which keeps a 10,000-rule config at about a
 * tenth of what a document of positioned nodes costs (BENCHMARKS.md); the positions come from its event stream,
 * read again only when there is a problem to place. Pure.
 */
import {
  CORE_SCHEMA, EVENT_ALIAS, EVENT_DOCUMENT, EVENT_MAPPING, EVENT_POP, EVENT_SCALAR, EVENT_SEQUENCE, getScalarValue, loadAll,
  parseEvents, YAMLException, type Event,
} from 'js-yaml';
import type { PathSegment } from './problems.js';

/** Aliases per document: plenty for a config, and a bound on what a "billion laughs" file makes validation walk. */
const MAX_ALIASES = 100;

export class YamlSyntaxError extends Error {
  override readonly name = 'YamlSyntaxError';
  /** `line 3, column 4: bad indentation of a sequence entry` (1-based), or the reason alone. */
  constructor(readonly line: string) {
    super(line);
  }
}

/** The document's value: an empty file (or comments only) is `{}`; more than one document is an error. */
export function parseYaml(text: string): unknown {
  let documents: unknown[];
  try {
    documents = loadAll(text, { schema: CORE_SCHEMA, maxAliases: MAX_ALIASES });
  } catch (error) {
    if (!(error instanceof YAMLException)) throw error;
    const mark = error.mark;
    // js-yaml's reason does not say which key is repeated; the mark is at its second use.
    const key = error.reason === 'duplicated mapping key' && mark?.position !== undefined
      ? /^[ \t]*([^\s:#"'{}[\],]+)[ \t]*:/.exec(text.slice(mark.position))?.[1] : undefined;
    const reason = key ? `${error.reason} "${key}"`
      : error.reason.startsWith('aliases exceeded') ? `more than ${MAX_ALIASES} aliases (*name) in the file; a config needs far fewer`
      : error.reason;
    throw new YamlSyntaxError(mark?.line !== undefined && mark.column !== undefined
      ? `line ${mark.line + 1}, column ${mark.column + 1}: ${reason}` : reason);
  }
  if (documents.length > 1) {
    throw new YamlSyntaxError(`the file holds ${documents.length} YAML documents (separated by "---"); a config is one document`);
  }
  return documents[0] ?? {};
}

/**
 * The 1-based line where the value at `path` starts, or, when the path goes further than the document does,
 * where its deepest existing part starts (the mapping a missing key belongs in). Undefined for the document root.
 */
export function lineOf(text: string, path: readonly PathSegment[]): number | undefined {
  let events: Event[];
  try {
    events = parseEvents(text, {});
  } catch {
    return undefined; // not reached with a text parseYaml accepted
  }
  let i = events.findIndex((e) => e.type === EVENT_DOCUMENT) + 1;
  if (i === 0 || i >= events.length) return undefined;
  let found: number | undefined;
  for (const segment of path) {
    const node = events[i]!;
    let child: number | undefined;
    let keyStart: number | undefined;
    if (node.type === EVENT_MAPPING) {
      for (let k = i + 1; events[k]!.type !== EVENT_POP; k = after(events, after(events, k))) {
        const key = events[k]!;
        if (key.type === EVENT_SCALAR && getScalarValue(text, key) === String(segment)) {
          child = after(events, k);
          keyStart = startOf(key); // where an empty value (which has no position) is
          break;
        }
      }
    } else if (node.type === EVENT_SEQUENCE && typeof segment === 'number') {
      let k = i + 1;
      for (let n = 0; n < segment && events[k]!.type !== EVENT_POP; n++) k = after(events, k);
      if (events[k]!.type !== EVENT_POP) child = k;
    }
    if (child === undefined) break;
    i = child;
    found = startOf(events[i]!) ?? keyStart ?? found;
  }
  if (found === undefined) return undefined;
  let line = 1;
  for (let at = text.indexOf('\n'); at !== -1 && at < found; at = text.indexOf('\n', at + 1)) line++;
  return line;
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
