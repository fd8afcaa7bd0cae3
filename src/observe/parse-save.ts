/**
 * Parser for `iptables-save -c` output. We never parse rules back into structure: a rule is its text plus,
 * for ours, the content hash in its `vgw:` comment (Calico's habit), which is all drift detection needs. Pure.
 */
import { BUILTIN_CHAINS } from '../plan/chains.js';
import type { SavedRule, SavedTable, TableName } from './facts.js';

/** The hash in a `--comment vgw:<hash>` (quoted or not), or undefined. Hot at 10,000 rules: indexOf, no regex. */
export function commentHashOf(body: string): string | undefined {
  let at = body.indexOf('--comment vgw:');
  if (at !== -1) at += '--comment vgw:'.length;
  else {
    at = body.indexOf('--comment "vgw:');
    if (at === -1) return undefined;
    at += '--comment "vgw:'.length;
  }
  let end = at;
  while (end < body.length && HASH_CHAR[body.charCodeAt(end)]) end++;
  return end > at ? body.slice(at, end) : undefined;
}

/** [A-Za-z0-9_-] by character code. */
const HASH_CHAR = Array.from({ length: 128 }, (_, c) => /[A-Za-z0-9_-]/.test(String.fromCharCode(c)));

const SPACE = 32;
const DIGIT_0 = 48;

/** A decimal number of text[from, to), or -1 when that is not one. */
function decimal(text: string, from: number, to: number): number {
  if (to <= from) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const d = text.charCodeAt(i) - DIGIT_0;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/**
 * Parses `iptables-save` output as it arrives: `push` each piece (split anywhere), then `end`. Line by line with
 * indexOf and character codes, no regular expression and no array of lines: at 10,000 rules a pass reads this on
 * every pass, and parsing while iptables-save is still writing takes it off the pass's path. A rule line is
 * `[packets:bytes] -A CHAIN BODY` (counters only with -c); lines are trimmed as they are read.
 */
export class SaveParser {
  private readonly tables = new Map<string, SavedTable>();
  private chains = new Set<string>();
  private rules = new Map<string, SavedRule[]>();
  private policies = new Map<string, string>();
  private current: string | undefined;
  private lastChain = '';
  private lastList: SavedRule[] | undefined;
  /** The unfinished last line of the pieces so far. */
  private rest = '';
  /**
   * Tables iptables-nft-save left out, saying "# Table `filter' is incompatible, use 'nft' tool." (a rule there
   * was written by nft itself, or by a newer iptables): they are not empty, only unreadable.
   */
  readonly incompatible: string[] = [];

  push(piece: string): this {
    const text = this.rest === '' ? piece : this.rest + piece;
    const last = text.lastIndexOf('\n');
    if (last === -1) {
      this.rest = text;
      return this;
    }
    this.lines(text, last + 1);
    this.rest = text.slice(last + 1);
    return this;
  }

  end(): Map<string, SavedTable> {
    if (this.rest !== '') this.lines(this.rest, this.rest.length);
    this.rest = '';
    return this.tables;
  }

  /** The lines of text[0, limit). */
  private lines(text: string, limit: number): void {
    let start = 0;
    while (start < limit) {
      let end = text.indexOf('\n', start);
      if (end === -1 || end > limit) end = limit;
      this.line(text, start, end);
      start = end + 1;
    }
  }

  private line(text: string, start: number, end: number): void {
    while (start < end && text.charCodeAt(start) <= SPACE) start++;
    while (end > start && text.charCodeAt(end - 1) <= SPACE) end--;
    const first = text.charCodeAt(start);
    if (start === end) return;
    if (first === 35 /* # */) {
      const table = /^# Table `(\S+)' is incompatible/.exec(text.slice(start, end))?.[1];
      if (table) this.incompatible.push(table);
      return;
    }
    if (first === 42 /* * */) {
      this.current = text.slice(start + 1, end);
      this.chains = new Set();
      this.rules = new Map();
      this.policies = new Map();
      this.lastList = undefined;
    } else if (end - start === 6 && text.startsWith('COMMIT', start)) {
      if (this.current) {
        this.tables.set(this.current, this.policies.size > 0
          ? { chains: this.chains, rules: this.rules, policies: this.policies }
          : { chains: this.chains, rules: this.rules });
      }
      this.current = undefined;
    } else if (first === 58 /* : */) {
      // `:NAME POLICY [packets:bytes]`, the policy `-` for a chain of one's own.
      const space = text.indexOf(' ', start);
      const name = text.slice(start + 1, space === -1 || space > end ? end : space);
      this.chains.add(name);
      if (space !== -1 && space < end) {
        const after = text.indexOf(' ', space + 1);
        const policy = text.slice(space + 1, after === -1 || after > end ? end : after);
        if (policy !== '-' && policy !== 'ACCEPT') this.policies.set(name, policy);
      }
    } else {
      this.rule(text, start, end, first);
    }
  }

  private rule(text: string, start: number, end: number, first: number): void {
    let at = start;
    let packets = 0;
    let bytes = 0;
    if (first === 91 /* [ */) {
      const colon = text.indexOf(':', at);
      const close = text.indexOf(']', at);
      if (colon === -1 || close === -1 || close > end || colon > close || text.charCodeAt(close + 1) !== SPACE) return;
      packets = decimal(text, at + 1, colon);
      bytes = decimal(text, colon + 1, close);
      if (packets < 0 || bytes < 0) return;
      at = close + 2;
    }
    if (!text.startsWith('-A ', at)) return;
    at += 3;
    let space = text.indexOf(' ', at);
    if (space === -1 || space > end) space = end;
    if (space === at) return;
    // Rules come chain by chain: the chain's name and list are reused while it lasts.
    let list = this.lastList;
    if (!list || space - at !== this.lastChain.length || !text.startsWith(this.lastChain, at)) {
      this.lastChain = text.slice(at, space);
      list = this.rules.get(this.lastChain);
      if (!list) this.rules.set(this.lastChain, (list = []));
      this.lastList = list;
    }
    const body = space < end ? text.slice(space + 1, end) : '';
    const hash = commentHashOf(body);
    list.push(hash ? { body, packets, bytes, hash } : { body, packets, bytes });
  }
}

export function parseSave(text: string): Map<string, SavedTable> {
  return new SaveParser().push(text).end();
}

export function tableOf(tables: Map<string, SavedTable>, name: TableName): SavedTable {
  return tables.get(name) ?? { chains: new Set(), rules: new Map() };
}

/** True when a save holds any chain of ours (used to pick, or refuse, a backend). */
export function hasOurChains(tables: Map<string, SavedTable>): boolean {
  for (const table of tables.values()) for (const chain of table.chains) if (chain.startsWith('VGW-')) return true;
  return false;
}

/** True when a save holds any rule, chain of its own or policy other than ACCEPT (where the namespace's rules live). */
export function hasAnyRules(tables: Map<string, SavedTable>): boolean {
  for (const table of tables.values()) {
    if (table.rules.size > 0 || (table.policies?.size ?? 0) > 0) return true;
    for (const chain of table.chains) if (!BUILTIN_CHAINS.has(chain)) return true;
  }
  return false;
}

/**
 * Whether a filter table's FORWARD chain drops every packet that none of its rules accepts. Walked in order, as the
 * kernel walks it, the first rule that takes every packet (no match, a comment aside) decides: DROP or REJECT is a
 * drop; ACCEPT is none (a `-j DROP` after it, or the DROP policy, never sees a packet); a jump into a chain of the
 * operator's decides as that chain does for every packet. None deciding (or a RETURN of every packet), the policy
 * does. What rules with a match accept before that is the operator's policy. Pure.
 */
export function forwardDropsTheRest(filter: SavedTable | undefined): boolean {
  if (!filter) return false;
  const verdict = everyPacket(filter, 'FORWARD', new Set());
  return verdict === 'drop' || (verdict !== 'accept' && filter.policies?.get('FORWARD') === 'DROP');
}

/** A rule that takes every packet: `-j`/`-g TARGET`, after nothing but a comment. */
const EVERY_PACKET = /^(?:-m comment --comment (?:"(?:[^"\\]|\\.)*"|\S+) )?-([jg]) (\S+)/;

/**
 * What `chain` does with every packet: accept, drop, return (a RETURN, or the end of a chain gone to with -g), or
 * undefined (its end reached: on to the rule after the jump, or the policy).
 */
function everyPacket(filter: SavedTable, chain: string, seen: Set<string>): 'accept' | 'drop' | 'return' | undefined {
  if (seen.has(chain)) return undefined;
  seen.add(chain);
  for (const { body } of filter.rules.get(chain) ?? []) {
    const [, how, target] = EVERY_PACKET.exec(body) ?? [];
    if (target === undefined) continue; // a match: some packets only
    if (target === 'ACCEPT') return 'accept';
    if (target === 'DROP' || target === 'REJECT') return 'drop';
    if (target === 'RETURN') return 'return';
    if (BUILTIN_CHAINS.has(target) || !filter.chains.has(target)) continue; // LOG, MARK, …: on to the next rule
    const verdict = everyPacket(filter, target, seen);
    if (verdict === 'accept' || verdict === 'drop') return verdict;
    if (how === 'g') return 'return';
  }
  return undefined;
}
