/**
 * Parser for `iptables-save -c` output. We never parse rules back into structure: a rule is its text plus,
 * for ours, the content hash in its `vgw:` comment (Calico's habit), which is all drift detection needs. Pure.
 */
import type { SavedRule, SavedTable, TableName } from './facts.js';

/** The hash in a `--comment vgw:<hash>` (quoted or not), or undefined. Hot at 10,000 rules: indexOf, no regex. */
function hashOf(body: string): string | undefined {
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
 * Line by line with indexOf and character codes, no regular expression and no array of lines: a pass at 10,000
 * rules parses this right after the save, so it is on the path of every pass. A rule line is
 * `[packets:bytes] -A CHAIN BODY` (counters only with -c); lines are trimmed as they are read.
 */
export function parseSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let chains = new Set<string>();
  let rules = new Map<string, SavedRule[]>();
  let current: string | undefined;
  let lastChain = '';
  let lastList: SavedRule[] | undefined;
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    const next = end + 1;
    while (start < end && text.charCodeAt(start) <= SPACE) start++;
    while (end > start && text.charCodeAt(end - 1) <= SPACE) end--;
    const first = text.charCodeAt(start);
    if (start === end || first === 35 /* # */) {
      start = next;
      continue;
    }
    if (first === 42 /* * */) {
      current = text.slice(start + 1, end);
      chains = new Set();
      rules = new Map();
      lastList = undefined;
    } else if (end - start === 6 && text.startsWith('COMMIT', start)) {
      if (current) tables.set(current, { chains, rules });
      current = undefined;
    } else if (first === 58 /* : */) {
      const space = text.indexOf(' ', start);
      chains.add(text.slice(start + 1, space === -1 || space > end ? end : space));
    } else {
      let at = start;
      let packets = 0;
      let bytes = 0;
      if (first === 91 /* [ */) {
        const colon = text.indexOf(':', at);
        const close = text.indexOf(']', at);
        if (colon === -1 || close === -1 || close > end || colon > close || text.charCodeAt(close + 1) !== SPACE) {
          start = next;
          continue;
        }
        packets = decimal(text, at + 1, colon);
        bytes = decimal(text, colon + 1, close);
        if (packets < 0 || bytes < 0) {
          start = next;
          continue;
        }
        at = close + 2;
      }
      if (!text.startsWith('-A ', at)) {
        start = next;
        continue;
      }
      at += 3;
      let space = text.indexOf(' ', at);
      if (space === -1 || space > end) space = end;
      if (space === at) {
        start = next;
        continue;
      }
      // Rules come chain by chain: the chain's name and list are reused while it lasts.
      if (!lastList || space - at !== lastChain.length || !text.startsWith(lastChain, at)) {
        lastChain = text.slice(at, space);
        lastList = rules.get(lastChain);
        if (!lastList) rules.set(lastChain, (lastList = []));
      }
      const body = space < end ? text.slice(space + 1, end) : '';
      const hash = hashOf(body);
      lastList.push(hash ? { body, packets, bytes, hash } : { body, packets, bytes });
    }
    start = next;
  }
  return tables;
}

export function tableOf(tables: Map<string, SavedTable>, name: TableName): SavedTable {
  return tables.get(name) ?? { chains: new Set(), rules: new Map() };
}

/** True when a save holds any chain of ours (used to pick, or refuse, a backend). */
export function hasOurChains(tables: Map<string, SavedTable>): boolean {
  for (const table of tables.values()) for (const chain of table.chains) if (chain.startsWith('VGW-')) return true;
  return false;
}

/** True when a save holds any rule or non-built-in chain at all (where the namespace's rules live). */
export function hasAnyRules(tables: Map<string, SavedTable>): boolean {
  for (const table of tables.values()) if (table.rules.size > 0) return true;
  return false;
}
