/**
 * Rule templates (Handlebars, strict: a missing value is an error, never an empty string; no HTML escaping).
 * A template renders rule bodies only, one per line; the planner owns table headers, chain declarations, `-A`,
 * comments and COMMIT. Each rendered line is checked here so that neither a template nor a value can smuggle
 * in a command (`-A`, `-F`, …), a second line, or a quote that does not pair. Pure.
 */
import Handlebars from 'handlebars';
import { precompiled } from './precompiled.js';
import { syntaxErrorText } from './syntax-error.js';
import { groupDigits, quoted } from '../config/problems.js';

/**
 * Where in a template a problem is: the line of its output, and the line of the template itself where one line of it
 * is the rule as written (Handlebars drops a line that holds only a block's tag, so the two drift apart).
 */
export interface TemplateLine {
  readonly rendered: number;
  readonly template?: number;
}

/** One thing wrong with a template: its file, what, and the line where it has one. */
export interface TemplateProblem {
  readonly file: string;
  readonly detail: string;
  readonly line?: TemplateLine;
}

/** The most problems of one render said one by one; the rest are counted. */
const TEMPLATE_PROBLEMS_SAID = 20;

/** A template's problem as one line: its file, the line (the template's where it can be told, else the output's), and what. */
export const templateProblemText = (p: TemplateProblem) => `${p.file}${lineText(p.line)}: ${p.detail}`;

const lineText = (line: TemplateLine | undefined) =>
  (line === undefined ? '' : line.template !== undefined ? ` line ${line.template}` : `, rendered line ${line.rendered}`);

/**
 * What is wrong with the templates: the first problem (file, detail, line), and the others found in the same run
 * (every refused line of a template, every template of rules.dir), one per line of the message.
 */
export class TemplateError extends Error {
  override readonly name = 'TemplateError';
  readonly problems: readonly TemplateProblem[];
  /** The lines said once after the problems: how many more lines were refused, in which render they arose. */
  readonly notes: readonly string[];
  /** `unsaid`: how many more lines were refused; `note`: a line said once after the problems (in which render they arose). */
  constructor(readonly file: string, readonly detail: string, readonly line?: TemplateLine, others: readonly TemplateProblem[] = [],
    readonly unsaid = 0, note?: string) {
    const problems = [{ file, detail, ...(line !== undefined ? { line } : {}) }, ...others];
    const notes = [...(unsaid > 0 ? [`(and ${unsaid} more lines refused)`] : []), ...(note ? [note] : [])];
    super([...problems.map(templateProblemText), ...notes].join('\n'));
    this.problems = problems;
    this.notes = notes;
  }

  /** Several errors as one, in the order given. */
  static of(errors: readonly TemplateError[]): TemplateError {
    const [first, ...rest] = errors.flatMap((e) => e.problems);
    return new TemplateError(first!.file, first!.detail, first!.line, rest, errors.reduce((n, e) => n + e.unsaid, 0));
  }
}

const engine = Handlebars.create();
// {{log}} writes to stdout, which is the supervisor's JSON log stream: not a template's to write to.
engine.registerHelper('log', () => {
  throw new Error('{{log}} is not available in rule templates (it would write into the gateway\'s log stream)');
});

// Handlebars has no comparison: without one, a rule for one VLAN of a loop ({{#each vlans}}) could not be told from
// the others' but by hand-written subnets. `(eq a b)` compares two values as written (`id` is a number: `(eq id 30)`).
engine.registerHelper('eq', (...args: unknown[]) => {
  const values = args.slice(0, -1); // the last is Handlebars' options
  if (values.length !== 2) throw new Error(`(eq …) compares two values, and was given ${values.length}: write (eq name "iot")`);
  return values[0] === values[1];
});

/**
 * What a user's template may write in one render, in characters. A template is a few lines, but loops nested
 * inside one another ({{#each vlans}} in {{#each vlans}} in {{#each zones}}) or partials that call each other ten
 * times over multiply: a 600-byte template rendered 100 MB of rules, took 3 minutes and 4.8 GB to check, and ran
 * the process out of memory (a supervisor's reload ended it, instead of keeping the running rules). 4 MiB is
 * about 40,000 rules of 100 characters (160,000 short ones were checked in 5 s and 370 MB), four times the most
 * the gateway is measured at (BENCHMARKS.md); Handlebars cannot be asked to stop, so each loop's pass and each partial counts what it
 * wrote (without what the ones inside it wrote, which count themselves) and the render stops at the limit.
 */
export const MAX_USER_RENDER_CHARS = 4 * 2 ** 20;

class RenderLimit extends Error {}

/** The render being counted (a user's template), and what each counted call open now has seen written inside it. */
let budget: { left: number } | undefined;
const nested: number[] = [];

/** A block's body or a partial, counted against the budget when there is one. */
function counted(fn: Handlebars.TemplateDelegate | undefined): Handlebars.TemplateDelegate | undefined {
  if (!fn) return fn;
  return function (this: unknown, ...args: Parameters<Handlebars.TemplateDelegate>) {
    if (!budget) return fn.apply(this, args);
    nested.push(0);
    let out: string;
    let inside = 0;
    try {
      out = fn.apply(this, args);
    } finally {
      inside = nested.pop()!;
    }
    if (nested.length > 0) nested[nested.length - 1]! += out.length;
    budget.left -= out.length - inside;
    if (budget.left < 0) throw new RenderLimit();
    return out;
  };
}

type HelperOptions = Handlebars.HelperOptions & { fn?: Handlebars.TemplateDelegate };
const each = engine.helpers.each!;
engine.registerHelper('each', function (this: unknown, context: unknown, options: HelperOptions) {
  return each.call(this, context, options && { ...options, fn: counted(options.fn)! });
});
type Decorator = (this: unknown, fn: unknown, props: unknown, container: unknown, options: HelperOptions) => unknown;
const inline = (engine as unknown as { decorators: Record<string, Decorator> }).decorators.inline!;
engine.registerDecorator('inline', function (this: unknown, fn: unknown, props: unknown, container: unknown, options: HelperOptions) {
  return inline.call(this, fn, props, container, { ...options, fn: counted(options.fn)! });
});

/** Part of what a rendered state depends on (see DesiredStore). */
export const ENGINE_VERSION = `handlebars ${Handlebars.VERSION}`;
/**
 * Compiled templates by file and text, the least recently used first. Bounded: a supervisor compiles each new text
 * of a user's template (every reload that edits one) and runs for months; unbounded, each edit kept its compiled
 * function for good (about 9 KB of heap and 35 KB of RSS apiece, measured). A plan uses at most the six built-in
 * templates and the three of rules.dir, a reload compares two configs' worth: the rest are old texts.
 */
const cache = new Map<string, Handlebars.TemplateDelegate>();
const MAX_COMPILED_TEMPLATES = 32;

export const TEMPLATE_OPTIONS = Object.freeze({ strict: true, noEscape: true });
let built: ReadonlyMap<string, TemplateSpecification> = new Map();

/**
 * Uses templates compiled ahead (by the build) for the texts they were made from; a set made with other options
 * than these is not used. Returns whether it is.
 */
export function usePrecompiledTemplates(set: typeof precompiled): boolean {
  const usable = JSON.stringify(set.options) === JSON.stringify(TEMPLATE_OPTIONS);
  built = usable ? set.templates : new Map();
  cache.clear();
  return usable;
}
usePrecompiledTemplates(precompiled);

function compile(source: string, file: string): Handlebars.TemplateDelegate {
  const key = `${file}\u0000${source}`;
  let template = cache.get(key);
  if (template) {
    cache.delete(key); // the most recently used last
  } else {
    // Compiled on its first call, which renderRules makes at once: a syntax error surfaces there, as a
    // TemplateError like any other (compiling ahead as well would parse and generate every template twice).
    // Handlebars adds to the options object it is given: each compile gets a copy.
    const spec = built.get(source);
    template = spec ? engine.template(spec) : engine.compile(source, { ...TEMPLATE_OPTIONS });
    if (cache.size >= MAX_COMPILED_TEMPLATES) cache.delete(cache.keys().next().value!);
  }
  cache.set(key, template);
  return template;
}

/**
 * A template's syntax, checked without rendering it (Handlebars parses and compiles it, nothing runs): its problem, or
 * undefined. For a config with problems of its own, whose templates cannot be rendered (loadConfig).
 */
export function templateSyntaxProblem(source: string, file: string): TemplateProblem | undefined {
  if (built.has(source)) return undefined;
  try {
    engine.precompile(source, { ...TEMPLATE_OPTIONS });
    return undefined;
  } catch (error) {
    return { file, detail: firstLine(error, source) };
  }
}

/** Handlebars' messages, made to read as one sentence with a position. */
function firstLine(error: unknown, source: string): string {
  if (error instanceof RenderLimit || (error instanceof RangeError && error.message === 'Invalid string length')) {
    return `renders more than ${MAX_USER_RENDER_CHARS / 2 ** 20} MiB of rules (about 40,000), the most a template may: `
      + 'loops nested inside one another ({{#each}} in {{#each}}) or partials that call each other multiply what it writes';
  }
  if (error instanceof RangeError && /call stack/.test(error.message)) {
    // Without a partial called ({{> p}}, or a partial block {{#> p}}…{{/p}}), the stack ran out on blocks nested a
    // thousand and more deep (in the parser or the render).
    return /\{\{~?\s*#?\s*>/.test(source) ? 'calls itself without end (a partial that includes itself, {{> name}} inside its own {{#*inline "name"}})'
      : 'nests blocks deeper than the gateway reads ({{#if}}, {{#each}} or {{#with}} inside one another a thousand times and more); a template needs a few levels';
  }
  const message = String((error as Error)?.message ?? error);
  const missing = /^"(.+)" not defined in .* - (\d+):(\d+)/.exec(message);
  if (missing) return `${JSON.stringify(missing[1])} is not defined (template line ${missing[2]}, column ${Number(missing[3]) + 1})`;
  const syntax = syntaxErrorText(message, source);
  if (syntax !== undefined) return syntax;
  // Handlebars does not check these itself: the JavaScript error that results says "undefined" and nothing of the template.
  const nothing = /^Cannot read properties of (?:undefined|null) \(reading '([^']*)'\)/.exec(message);
  if (nothing) {
    return nothing[1] === 'call' || nothing[1] === 'lookupProperty'
      ? 'a helper was called without the values it takes (like {{lookup}} without a list or a mapping and a key)'
      : `${JSON.stringify(nothing[1])} was looked up above the top level of the data: a "../" too many `
        + '(the {{else}} part of an {{#each}} is at the level of the {{#each}} itself, not inside the list)';
  }
  return message.split('\n')[0]!;
}

/**
 * Options that would turn a rule body into a command on other chains or tables: -A, -I, -D, -R, -N, -X, -F, -P,
 * -E, -Z, -L, -S, -C and -t, and their long names. iptables (getopt) also reads them with the value attached
 * (`-IFORWARD`, `-tnat`), after short options that take no value (`-vIFORWARD` is -v, then -I FORWARD), and
 * long ones with `=` (`--append=FORWARD`): every such spelling is refused. A long name abbreviated (`--app`) is
 * not: it would be ambiguous with extension options that only the loaded matches define (`-m policy --pol`).
 */
const SHORT_COMMANDS = 'AIDRNXFPEZLSCt';
/** Short options without a value, which may come first in the same word. */
const SHORT_FLAGS = 'fbvnx46V';
const LONG_COMMANDS = [
  'append', 'insert', 'delete', 'replace', 'new-chain', 'new', 'delete-chain', 'flush', 'policy', 'rename-chain',
  'zero', 'list', 'list-rules', 'check', 'table',
];

const SAFE_PUNCTUATION = '._:,/!=+@%"-';
const SAFE = /^[A-Za-z0-9 ._:,/!=+@%"-]+$/;
/**
 * What a double-quoted value may hold: printable ASCII, spaces as written (a log prefix in brackets, `"[FW DROP] "`;
 * a hex string, `"|0d0a|"`). iptables-restore ends a quoted word at the next `"` and reads nothing else in it as
 * syntax (a `[` is a counter, and a `#` a comment, only at the start of a line), and iptables-save prints the value
 * back quoted, with `"`, `\` and `'` escaped, which restore reads back as written (iptables 1.8.9, nft and legacy).
 * Not `\`: in quotes iptables reads it as an escape (`"a\"b"` is a"b), so the value applied would not be the one written.
 */
const QUOTED_CHAR = /^[\x20-\x21\x23-\x5b\x5d-\x7e]$/;

/** The first character a rule may not hold where it stands (outside or inside double quotes), or undefined. */
function refusedCharacter(body: string): { char: string; quoted: boolean } | undefined {
  let quoted = false;
  for (const char of body) {
    if (char === '"') quoted = !quoted;
    else if (!(quoted ? QUOTED_CHAR : SAFE).test(char)) return { char, quoted };
  }
  return undefined;
}

/** A rule body's tokens, each with whether it was written in double quotes; undefined for a quote that does not pair. */
function quotedTokens(body: string): Array<{ text: string; quoted: boolean }> | undefined {
  const tokens: Array<{ text: string; quoted: boolean }> = [];
  const re = /"([^"]*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(body)) !== null) {
    if (m[2]?.includes('"')) return undefined;
    tokens.push(m[1] !== undefined ? { text: m[1], quoted: true } : { text: m[2]!, quoted: false });
  }
  return tokens;
}

/** A word spelling a command or table option: group 1 its short letter, group 2 its long name. */
const COMMAND = new RegExp(`(?:^| )(?:-[${SHORT_FLAGS}]*([${SHORT_COMMANDS}])\\S*|--(${LONG_COMMANDS.join('|')})(?:=\\S*)?)(?= |$)`);
const HAS_TARGET = /(?:^| )(?:-j|-g|--jump|--goto) /;
/**
 * The target options in a spelling other than `-j NAME`, `-g NAME`, `--jump NAME`, `--goto NAME`, which iptables
 * also reads: the name attached (`-jACCEPT`, `--goto=VGW-X`), after flags that take no value (`-vj`), or the long
 * name abbreviated (`--got`). The planner reads a rule's target in those four spellings only (its jump checks).
 */
const ODD_TARGET = new RegExp(`(?:^| )(?!(?:-j|-g|--jump|--goto)(?: |$))(-[${SHORT_FLAGS}]*[jg]\\S*|--(?:j(?:u(?:mp?)?)?|g(?:o(?:to?)?)?)(?:=\\S*)?)(?= |$)`);
/** A word iptables reads as a target option, in any of those spellings (the four plain ones included). */
const TARGET_WORD = new RegExp(`^(?:-[${SHORT_FLAGS}]*[jg]\\S*|--(?:j(?:u(?:mp?)?)?|g(?:o(?:to?)?)?)(?:=\\S*)?)$`);

/** The longest comment iptables keeps (the comment match's XT_MAX_COMMENT_LEN, 256 bytes with the NUL). */
const MAX_COMMENT = 255;
/**
 * Texts iptables cuts to a length without a word (nft and legacy alike, iptables 1.8.9), as it does a comment: a log
 * prefix to 29 characters (the LOG target's 30 bytes with the NUL: "telnet from office to the uplink: " was logged as
 * "telnet from office to the upl"), an NFLOG prefix to 63 (legacy; nft keeps more). By the option before them.
 */
const KEPT_TEXT: ReadonlyMap<string, { what: string; most: number }> = new Map([
  ['--comment', { what: 'comment', most: MAX_COMMENT }],
  ['--log-prefix', { what: 'log prefix', most: 29 }],
  ['--nflog-prefix', { what: 'NFLOG prefix', most: 63 }],
]);
const SHORTEST_KEPT = Math.min(...Array.from(KEPT_TEXT.values(), (kept) => kept.most));

/**
 * The longest rule body a template may write. iptables-restore reads a line into a buffer of 10,240 bytes: a longer
 * one is read as two lines, the rest taken for a line of its own (nft and legacy alike, iptables 1.8.9), so a rule
 * of 10,300 characters was refused with "Bad argument `yyyy'" about a piece of its own text, naming no rule, and
 * one whose rest was a word such as COMMIT was committed cut short although the restore failed. The planner writes
 * `-A VGW-USER-POSTROUTING -m comment --comment vgw:<hash> ` before the body (66 characters), and the apply's undo
 * restores the rule as iptables-save writes it back, longer than it was given (`/32`, `-m tcp`, quotes, a counters
 * prefix): 8,192 leaves that room.
 */
const MAX_RULE_BODY = 8192;

export function checkRuleBody(body: string): string | undefined {
  if (body.length > MAX_RULE_BODY) {
    return `${quoted(body)} is too long for a rule: iptables-restore reads about 10,000 characters of a line and takes the rest `
      + `for a line of its own; a rule here is at most ${groupDigits(MAX_RULE_BODY)} characters (split it into several rules, or `
      + 'match long lists with an ipset of your own)';
  }
  // The whole line at once first: the gateway's own 10,000 lines hold none but these.
  const refused = SAFE.test(body) ? undefined : refusedCharacter(body);
  if (refused?.quoted === false) {
    return `${JSON.stringify(body)} has a character that is not allowed in a rule: ${JSON.stringify(refused.char)} (allowed: letters, digits, `
      + `space and ${SAFE_PUNCTUATION}, and in a double-quoted value any printable ASCII character but \\)`;
  }
  if (refused) {
    return `${JSON.stringify(body)} has a character that is not allowed in a quoted value: ${JSON.stringify(refused.char)} (in double `
      + 'quotes: printable ASCII characters, but not \\, which iptables reads as an escape)';
  }
  // A negated first match (`! -s 10.0.0.0/8 …`, `! -d …`) is how iptables itself writes one: a rule body too.
  if (!body.startsWith('-') && !body.startsWith('! -')) return `${JSON.stringify(body)} is not a rule body (it must start with an option such as -s or -j)`;
  // Quotes only come from user templates (comments); only then is a real tokenizer needed.
  const tokens = body.includes('"') ? quotedTokens(body) : undefined;
  if (tokens === undefined && body.includes('"')) return `${JSON.stringify(body)} has an unbalanced quote`;
  // Quoted words are values to the checks below (a comment, a log prefix, `--string "-g"`), as they are to the
  // planner, which reads a rule's target outside quotes.
  const text = tokens ? tokens.map((t) => (t.quoted ? '_' : t.text)).join(' ') : body;
  // Looked for only in a body long enough to hold one (not the gateway's own 10,000 lines).
  if (body.length > SHORTEST_KEPT && (body.includes('--comment') || body.includes('-prefix'))) {
    const words = tokens ?? body.split(' ').map((word) => ({ text: word, quoted: false }));
    for (let i = 1; i < words.length; i++) {
      const kept = words[i - 1]!.quoted ? undefined : KEPT_TEXT.get(words[i - 1]!.text);
      if (kept && words[i]!.text.length > kept.most) {
        return `${JSON.stringify(body)} has a ${kept.what} of ${words[i]!.text.length} characters: iptables keeps ${kept.most} and cuts the rest without a word`;
      }
    }
  }
  const odd = ODD_TARGET.exec(text)?.[1];
  if (odd) return `${JSON.stringify(body)} writes its target as ${odd}: write it as -j TARGET (or -g CHAIN), the option and the name as two words`;
  const command = COMMAND.exec(text);
  if (command) {
    const word = command[0].trim();
    const option = command[1] !== undefined ? `-${command[1]}` : `--${command[2]!}`;
    const spelled = word === option ? option : `${option} (in ${word})`;
    return `${JSON.stringify(body)} uses ${spelled}: templates write rule bodies, the planner writes commands`;
  }
  if (!HAS_TARGET.test(text)) {
    // iptables reads a quoted word as the word itself: where a rule has no target outside quotes, a target option in
    // quotes (`"-j" VGW-X`) is its target, which the planner's checks would not see. (Beside a target outside quotes,
    // a quoted option is the value of the option before it, or a second target or command, which iptables refuses.)
    const option = tokens?.find((t) => t.quoted && TARGET_WORD.test(t.text));
    if (option) {
      return `${JSON.stringify(body)} has the option ${JSON.stringify(option.text)} in quotes, which iptables reads as the option itself: `
        + 'write options without quotes (quotes are for text, like a comment with spaces)';
    }
    return `${JSON.stringify(body)} has no -j target`;
  }
  return undefined;
}

/**
 * The data a user's template sees, made to refuse a name it does not have. Strict mode makes `{{nicname}}` an
 * error, but not a helper's argument: `{{#each vlanz}}` or `{{#if uplink.nicc}}` looked up nothing and rendered
 * nothing, and the rules it was meant to write silently went. Fields that exist but have no value (`uplink.nic`
 * while the uplink is not attached) are null and read as such. Symbols pass through (Handlebars reads them); what
 * objects inherit is refused like a name the data does not have.
 */
export function guarded<T extends object>(data: T, path = ''): T {
  return new Proxy(data, {
    get(target, prop, receiver) {
      // Written into a rule as it is ({{uplink}}, {{this}} in {{#each vlans}}): JavaScript's text for it is
      // "[object Object]" (or a list's items with commas), which no rule means. Its text is instead what to say
      // about it, marked, and renderRules says it (Handlebars also makes text of the data for its own messages).
      if (prop === Symbol.toPrimitive) return () => `${NOT_A_VALUE}${notAValue(target, path)}${NOT_A_VALUE}`;
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof prop === 'symbol') return value;
      // What every object or list inherits (toString, constructor, __proto__, map) is not a value either: Handlebars
      // refuses it as not the data's own, so it read as nothing (an {{#if uplink.toString}} block silently went) and
      // Handlebars wrote three lines of its own to stderr.
      if (!Object.prototype.hasOwnProperty.call(target, prop)) {
        const where = path === '' ? prop : `${path}.${prop}`;
        const known = Array.isArray(target) ? 'an index' : Object.keys(target).join(', ');
        throw new Error(`${where} is not a value templates have (${path === '' ? 'top level' : path}: ${known})`);
      }
      if (value === null || typeof value !== 'object') return value;
      return guarded(value as object, Array.isArray(target) ? `${path}[${prop}]` : path === '' ? prop : `${path}.${prop}`);
    },
  });
}

/** Marks, on both sides, what to say of a mapping or a list a template wrote as a value (no rule holds it). */
const NOT_A_VALUE = '\u0001';

/** A mapping or a list of the template data, written where a rule takes a value. */
function notAValue(target: object, path: string): string {
  const where = path === '' ? 'the top level of the data' : path;
  if (Array.isArray(target)) return `${where} is a list, not a value to write into a rule: write each item with {{#each ${path === '' ? 'this' : path}}}…{{/each}}`;
  const keys = Object.keys(target);
  const like = keys.length > 0 && /^[a-z]\w*(\.[a-z]\w*)*$/i.test(path) ? `, like {{${path}.${keys[0]!}}}` : '';
  return `${where} is a mapping, not a value to write into a rule: write one of its fields (${keys.join(', ')})${like}`;
}

/**
 * A line of text as renderRules makes it a rule body: trimmed, and each run of whitespace outside double quotes folded
 * to one space. A quoted value is kept as written (`--log-prefix "a  b"`): iptables applies it so, and iptables-save
 * prints it back so. A quote that does not pair is refused by checkRuleBody.
 */
const asBody = (line: string) => line.trim().replace(/"[^"]*"|\s+/g, (m) => (m.charCodeAt(0) === 34 /* " */ ? m : ' '));

/**
 * The line of a template's source (1-based) that a rule it rendered comes from, where that can be told: the one line
 * whose text is the rule's, as written (no value filled in, no helper). Undefined when no line, or more than one, is.
 */
export function sourceLineOf(source: string, body: string): number | undefined {
  const lines = source.split('\n').flatMap((line, index) => (asBody(line) === body ? [index + 1] : []));
  return lines.length === 1 ? lines[0] : undefined;
}

/**
 * Renders a template and returns its rule bodies (blank lines dropped, whitespace outside quotes folded). `limited`: a user's
 * template, whose output is at most MAX_USER_RENDER_CHARS.
 */
export function renderRules(source: string, file: string, data: object, limited = false): string[] {
  const template = compile(source, file);
  let text: string;
  budget = limited ? { left: MAX_USER_RENDER_CHARS } : undefined;
  nested.length = 0;
  try {
    text = template(data);
    if (limited && text.length > MAX_USER_RENDER_CHARS) throw new RenderLimit(); // what no loop or partial wrote
  } catch (error) {
    throw new TemplateError(file, firstLine(error, source));
  } finally {
    budget = undefined;
  }
  const bodies: string[] = [];
  // Every line refused is said (up to TEMPLATE_PROBLEMS_SAID, the rest counted), not the first alone: a template
  // fixed one line a run took as many runs as it had bad lines.
  const problems: TemplateProblem[] = [];
  let unsaid = 0;
  const refuse = (detail: string, rendered: number, body?: string) => {
    if (problems.length >= TEMPLATE_PROBLEMS_SAID) {
      unsaid++;
      return;
    }
    const template = body === undefined ? undefined : sourceLineOf(source, body);
    problems.push({ file, detail, line: { rendered, ...(template !== undefined ? { template } : {}) } });
  };
  text.split('\n').forEach((raw, index) => {
    const notValue = raw.includes(NOT_A_VALUE) ? raw.split(NOT_A_VALUE) : undefined; // split only where it is (the hot path)
    if (notValue && notValue.length > 2) {
      refuse(notValue[1]!, index + 1);
      return;
    }
    const trimmed = raw.trim();
    // Most lines come out of a template with single spaces already: fold only when there is something to fold.
    const body = /\s\s|[^ \S]/.test(trimmed) ? asBody(trimmed) : trimmed;
    if (body === '') return;
    const problem = checkRuleBody(body);
    if (problem) refuse(problem, index + 1, body);
    else bodies.push(body);
  });
  if (problems.length > 0) {
    const [first, ...others] = problems;
    throw new TemplateError(file, first!.detail, first!.line, others, unsaid);
  }
  return bodies;
}
