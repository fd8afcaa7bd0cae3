/**
 * Parser for `iptables-save -c` output. We never parse rules back into structure: a rule is its text plus,
 * for ours, the content hash in its `vgw:` comment (Calico's habit), which is all drift detection needs. Pure.
 */
import type { SavedRule, SavedTable, TableName } from './facts.js';

const RULE = /^(?:\[(\d+):(\d+)\] )?-A (\S+) ?(.*)$/;

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

export function parseSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let chains = new Set<string>();
  let rules = new Map<string, SavedRule[]>();
  let current: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      current = line.slice(1);
      chains = new Set();
      rules = new Map();
    } else if (line === 'COMMIT') {
      if (current) tables.set(current, { chains, rules });
      current = undefined;
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      chains.add(name);
    } else {
      const m = RULE.exec(line);
      if (!m) continue;
      const chain = m[3]!;
      const body = m[4]!;
      const hash = hashOf(body);
      let list = rules.get(chain);
      if (!list) rules.set(chain, (list = []));
      const packets = Number(m[1] ?? 0);
      const bytes = Number(m[2] ?? 0);
      list.push(hash ? { body, packets, bytes, hash } : { body, packets, bytes });
    }
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
