/** Errors are classified once, here: exit 2 for what the user must fix in their input, 1 for runtime failures. */
import { ApplyError } from '../apply/apply.js';
import { forThisUser, lockFileHint, privilegeHint } from '../apply/hints.js';
import { ConfigError, printable } from '../config/problems.js';
import { CommandError } from '../exec/runner.js';
import { LabError, LabInputError } from '../lab/topology.js';
import { BackendError } from '../observe/read.js';
import { PlanError } from '../plan/check.js';
import { ForeignSetError, InUseError } from '../plan/diff.js';
import { TemplateError } from '../template/render.js';

export const EXIT = { ok: 0, failure: 1, invalid: 2 } as const;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** A runtime failure its message explains in full (a server that cannot listen, a gateway that does not answer). */
export class FailureError extends Error {
  override readonly name = 'FailureError';
}

export function exitCodeOf(error: unknown): number {
  if (error instanceof ConfigError || error instanceof TemplateError || error instanceof PlanError || error instanceof UsageError
    || error instanceof LabInputError) return EXIT.invalid;
  return EXIT.failure;
}

export function describeError(error: unknown): string {
  return forThisUser(describe(error));
}

function describe(error: unknown): string {
  if (error instanceof ConfigError) {
    // A lone problem that names the file itself (cannot read it, it is empty) is one line: under the header
    // "invalid config: F: 1 problem:" it named the file twice, over two lines.
    const [only] = error.lines;
    if (error.lines.length === 1 && namesFile(only!, printable(error.source))) return `invalid config: ${only!}`;
    return `invalid config: ${error.message}`;
  }
  if (error instanceof TemplateError) {
    return error.problems.length === 1 ? `invalid rule template: ${error.message}` : `invalid rule templates (nothing was applied):\n${error.message}`;
  }
  if (error instanceof PlanError) return `invalid rules (nothing was applied):\n${error.message}`;
  if (error instanceof ApplyError) return `apply failed: ${error.message}`;
  if (error instanceof CommandError) {
    const hint = privilegeHint(error.stderr) ?? lockFileHint(error.stderr);
    return hint ? `${error.message}; ${hint}` : error.message;
  }
  if (error instanceof ForeignSetError || error instanceof InUseError) return `nothing was applied: ${error.message}`;
  if (error instanceof BackendError || error instanceof UsageError || error instanceof FailureError || error instanceof LabError) return error.message;
  return (error as Error)?.stack ?? String(error);
}

/** A line of describeErrorLines, and the file of rules.dir it is about, where it is about one (a template). */
export interface ErrorLine {
  readonly text: string;
  readonly file?: string;
}

/**
 * describeError's text as lines that each stand alone, for a log line apiece and /status's reload errors: a config's
 * problems each with the file they are in (unless the line names that file itself: namesFile), and no header line
 * ("invalid config: F: 2 problems:", "invalid rule templates (nothing was applied):"), which logged on its own read as
 * one more error.
 */
export function describeErrorLines(error: unknown): string[] {
  return describeErrorLinesOf(error).map((l) => l.text);
}

/**
 * describeErrorLines with the template each line is about, where it is about one: a rejected reload's log line names
 * it as its `path` (the config file otherwise), the file its text names first.
 */
export function describeErrorLinesOf(error: unknown): ErrorLine[] {
  if (error instanceof ConfigError) {
    const source = printable(error.source);
    // A ConfigError's lines say its problems in order, then its notes (joined to the last before the file is put first).
    return withNotes(error.lines.map((line, i) => lineOf(line, error.problems[i]?.file)))
      .map((line) => ({ ...line, text: `invalid config: ${namesFile(line.text, source) ? '' : `${source}: `}${line.text}` }));
  }
  const all = describeError(error).split('\n').map((l) => l.trim()).filter(Boolean);
  const lines = all.length > 1 && all[0]!.endsWith(':') ? all.slice(1) : all;
  // The errors whose problems are each a line (a problem's file with it), then their notes.
  const files = error instanceof TemplateError ? [...error.problems.map((p) => p.file), ...error.notes.map(() => undefined)]
    : error instanceof PlanError ? error.problems.map((p) => p.file)
      : [];
  return withNotes(lines.map((text, i) => lineOf(text, files.length === lines.length ? files[i] : undefined)));
}

const lineOf = (text: string, file: string | undefined): ErrorLine => (file === undefined ? { text } : { text, file });

function withNotes(lines: readonly ErrorLine[]): ErrorLine[] {
  // A line in parentheses is said of the problems before it ("(and 3 more lines refused)", "(rendered as at a start
  // before Docker attaches the NICs: …)"): it goes with them, not as an error of its own ("reload rejected: (and 3 more
  // lines refused)"); said once, at the end of the last.
  const isNote = (l: ErrorLine) => /^\(.*\)$/.test(l.text);
  const problems = lines.filter((l) => !isNote(l));
  if (problems.length === 0 || problems.length === lines.length) return [...lines];
  const notes = lines.filter(isNote).map((l) => l.text);
  const last = problems.at(-1)!;
  return [...problems.slice(0, -1), { ...last, text: `${last.text} ${notes.join(' ')}` }];
}

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Does a problem's line name the config file `source` already: starting with `source:`, or naming it as a whole token
 * (`cannot read gateway.yaml: no such file`), not as part of a longer path (`rules.dir: cannot read
 * /etc/vlan-gateway/gateway.yaml.d (no such directory)` names another file, and takes the prefix).
 */
function namesFile(line: string, source: string): boolean {
  if (source === '') return true;
  return new RegExp(`(?:^|[\\s(])${escaped(source)}(?=$|[\\s:,;)]|\\.(?:$|\\s))`).test(line);
}
