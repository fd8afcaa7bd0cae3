/**
 * A Handlebars syntax error said in the template's terms, at the line to fix. Pure.
 *
 * Handlebars' parser names grammar tokens ("Expecting 'CLOSE_RAW_BLOCK', 'CLOSE', … got 'INVALID'") and the line its
 * lexer had reached: for a block left open that is the end of the file, and for a block closed by another name it is
 * the line of the opening tag. So the source is read again here, tag by tag (what the lexer reads as `{{ … }}`,
 * comments included), to find the tag at fault: the block left open, the closing tag that does not match, the `{{`
 * never closed. The message's own line number is kept where this finds nothing better.
 */
import { quoted } from '../config/problems.js';

interface Tag {
  /** The tag's text, from `{{` to `}}` (or to the end of the line where nothing closes it). */
  readonly text: string;
  /** 1-based, where its `{{` is. */
  readonly line: number;
  /** `#` or `^` (a block opens), `/` (one closes), `else`, or `` (anything else). */
  readonly kind: '#' | '^' | '/' | 'else' | '';
  /** A block's helper or name (`each` in `{{#each vlans}}`). */
  readonly name: string;
  /** Whether a `}}` closes it. */
  readonly closed: boolean;
}

/** The tags of a source, in order: a comment (`{{!-- … --}}`, `{{! … }}`) is one tag, its insides are not read. */
function tagsOf(source: string): Tag[] {
  const tags: Tag[] = [];
  let at = 0;
  // Lines counted as the scan goes (once through the source, however many tags).
  let line = 1;
  let counted = 0;
  const lineAt = (index: number) => {
    for (let i = source.indexOf('\n', counted); i >= 0 && i < index; i = source.indexOf('\n', i + 1)) line++;
    counted = Math.max(counted, index);
    return line;
  };
  for (;;) {
    const open = source.indexOf('{{', at);
    if (open < 0) return tags;
    // An escaped one (\{{) is text to Handlebars.
    if (open > 0 && source[open - 1] === '\\' && source[open - 2] !== '\\') {
      at = open + 2;
      continue;
    }
    const line = lineAt(open);
    const longComment = /^\{\{~?!--/.test(source.slice(open, open + 6));
    const end = longComment ? source.indexOf('--', source.indexOf('!--', open) + 3) : source.indexOf('}}', open + 2);
    const close = end < 0 ? -1 : source.indexOf('}}', end);
    if (close < 0) {
      const eol = source.indexOf('\n', open);
      tags.push({ text: source.slice(open, eol < 0 ? undefined : eol), line, kind: '', name: '', closed: false });
      return tags;
    }
    const text = source.slice(open, close + (source[close + 2] === '}' ? 3 : 2));
    const m = /^\{\{\{?~?\s*([#^/]|else\b)?\s*[*>]?\s*([\w$@.-]*)/.exec(text)!;
    // {{^}} alone is an {{else}}; {{^name}} opens a block, as {{#name}} does.
    const kind = m[1] === undefined ? '' : m[1].startsWith('else') || (m[1] === '^' && m[2] === '') ? 'else' : (m[1] as '#' | '^' | '/');
    tags.push({ text, line, kind, name: kind === 'else' ? '' : m[2]!, closed: true });
    at = close + 2;
  }
}

/** The blocks as Handlebars pairs them: the first closing tag that does not match, else the blocks left open. */
function pairBlocks(tags: readonly Tag[]): { mismatch?: { open: Tag; close: Tag }; stray?: Tag; open: Tag[] } {
  const open: Tag[] = [];
  for (const tag of tags) {
    if (tag.kind === '#' || tag.kind === '^') open.push(tag);
    else if (tag.kind === '/') {
      const top = open.pop();
      if (top === undefined) return { stray: tag, open };
      if (top.name !== tag.name) return { mismatch: { open: top, close: tag }, open };
    }
  }
  return { open };
}

const shown = (tag: Tag) => quoted(tag.text);
const sourceLine = (source: string, line: number) => quoted((source.split('\n')[line - 1] ?? '').trim());

/**
 * Handlebars' message for a template that does not parse, said plainly with the line to fix; undefined for a
 * message that is not a syntax error (rendering errors are said elsewhere).
 */
export function syntaxErrorText(message: string, source: string): string | undefined {
  // A block closed by another's name: Handlebars names the two and where the block opens ("each doesn't match if - 1:3").
  const mismatch = /^(\S+) doesn't match (\S+) - (\d+):\d+/.exec(message);
  const parse = /^Parse error on line (\d+):[\s\S]*?\nExpecting ([^\n]*), got '([^']*)'/.exec(message);
  const lexical = /^Lexical error on line (\d+)\./.exec(message);
  if (!mismatch && !parse && !lexical) return undefined;
  const at = Number((mismatch?.[3] ?? parse?.[1] ?? lexical?.[1])!);
  const tags = tagsOf(source);
  const blocks = pairBlocks(tags);
  if (mismatch) {
    const close = blocks.mismatch?.close;
    return close !== undefined
      ? `syntax error on template line ${close.line}: ${shown(close)} closes {{#${mismatch[1]}}}, opened on template line ${at}; close it with {{/${mismatch[1]}}}`
      : `syntax error on template line ${at}: {{#${mismatch[1]}}} is closed by {{/${mismatch[2]}}}`;
  }
  // A {{ with no }} after it is the last tag read; Handlebars stops at it or after it, never before.
  const unclosedTag = tags.find((t) => !t.closed && t.line <= at);
  if (lexical || parse?.[3] === 'INVALID' || unclosedTag !== undefined) {
    if (unclosedTag !== undefined) {
      const end = /^\{\{~?!--/.test(unclosedTag.text) ? '--}}' : '}}';
      return `syntax error on template line ${unclosedTag.line}: ${shown(unclosedTag)} has no closing ${end}`;
    }
    return `syntax error on template line ${at}, ${sourceLine(source, at)}: a {{ … }} there holds a character Handlebars does not read in one (a }} written as }?)`;
  }
  const got = parse![3]!;
  // A {{ inside another (`{{nic -j {{x}}`): the first was not closed.
  const nestedOpen = got.startsWith('OPEN') ? tags.find((t) => t.line <= at && !/^\{\{~?!/.test(t.text) && t.text.indexOf('{{', 2) > 0) : undefined;
  if (nestedOpen !== undefined) return `syntax error on template line ${nestedOpen.line}: ${shown(nestedOpen)} opens a {{ inside another; close the first with }}`;
  if (got === 'EOF') {
    const last = blocks.open.at(-1);
    if (last !== undefined) return `syntax error on template line ${last.line}: ${shown(last)} is never closed; end the block with {{/${last.name}}}`;
  }
  if (got === 'OPEN_ENDBLOCK' && blocks.stray !== undefined) {
    const none = blocks.stray.name === '' ? '' : ` (no {{#${blocks.stray.name}}} is open there)`;
    return `syntax error on template line ${blocks.stray.line}: ${shown(blocks.stray)} closes no block${none}`;
  }
  if (got === 'INVERSE' || got === 'OPEN_INVERSE' || got === 'OPEN_INVERSE_CHAIN') {
    return `syntax error on template line ${at}, ${sourceLine(source, at)}: an {{else}} (or {{^}}) outside an {{#if}}, {{#unless}} or {{#each}} block, or a second one in a block`;
  }
  if (got === 'CLOSE' || got === 'CLOSE_UNESCAPED') {
    return `syntax error on template line ${at}, ${sourceLine(source, at)}: a {{ }} with no name in it, or a {{{ closed by }} (or {{ by }}})`;
  }
  return `syntax error on template line ${at}, ${sourceLine(source, at)}: Handlebars cannot read this (it expected ${parse![2]}, got '${got}')`;
}
