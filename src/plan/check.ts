/**
 * Checks on the rendered rules before the kernel sees them, so that a bad template is a config error (exit 2,
 * nothing applied) rather than a failed restore. `iptables-restore --test` accepts a jump to a chain that does
 * not exist (it may be a target extension), and the kernel refuses some targets only at commit time, so we check:
 * every jump goes to one of our chains declared in the same table, or to a standard target valid in that table
 * and hook (no DNAT in POSTROUTING, no DROP in nat, …); and our chains jump to each other without a loop. Pure.
 */
import { OUR_PREFIX, POSTROUTING_CHAIN, PREROUTING_CHAIN, STANDARD_TARGETS } from './chains.js';
import type { DesiredChain } from './types.js';
import { verdictOf } from './rule-text.js';

export class PlanError extends Error {
  override readonly name = 'PlanError';
}

const NAT_ONLY = new Set(['SNAT', 'DNAT', 'MASQUERADE', 'REDIRECT', 'NETMAP']);
const NOT_IN_NAT = new Set(['DROP', 'REJECT']);
const SOURCE_NAT = new Set(['SNAT', 'MASQUERADE']);
const DEST_NAT = new Set(['DNAT', 'REDIRECT']);

export function checkJumpTargets(chains: readonly DesiredChain[], sources: ReadonlyMap<string, string> = new Map()): void {
  const byName = new Map(chains.map((c) => [`${c.table}/${c.name}`, c]));
  const problems: string[] = [];
  const where = (chain: DesiredChain, index: number) =>
    `${chain.table} ${chain.name} rule ${index + 1}${sources.get(chain.name) ? ` (from ${sources.get(chain.name)})` : ''}`;

  // The nat hooks each chain is reachable from decide which NAT targets it may use.
  const hooks = new Map<string, Set<string>>();
  const reach = (name: string, hook: string, seen: Set<string>) => {
    const chain = byName.get(`nat/${name}`);
    if (!chain || seen.has(name)) return;
    seen.add(name);
    (hooks.get(name) ?? hooks.set(name, new Set()).get(name)!).add(hook);
    for (const rule of chain.rules) {
      const target = verdictOf(rule.line);
      if (target?.startsWith(OUR_PREFIX)) reach(target, hook, seen);
    }
  };
  reach(PREROUTING_CHAIN, 'PREROUTING', new Set());
  reach(POSTROUTING_CHAIN, 'POSTROUTING', new Set());

  for (const chain of chains) {
    chain.rules.forEach((rule, index) => {
      const target = verdictOf(rule.line);
      if (target === undefined) return;
      if (target.startsWith(OUR_PREFIX)) {
        if (!byName.has(`${chain.table}/${target}`)) {
          problems.push(`${where(chain, index)} jumps to ${target}, which is not a chain declared in the ${chain.table} table`);
        }
        return;
      }
      if (!STANDARD_TARGETS.has(target)) {
        problems.push(`${where(chain, index)} jumps to ${target}, which is neither one of our chains nor a standard target`);
      } else if (chain.table === 'filter' && NAT_ONLY.has(target)) {
        problems.push(`${where(chain, index)} uses ${target}, which belongs in the nat table`);
      } else if (chain.table === 'nat' && NOT_IN_NAT.has(target)) {
        problems.push(`${where(chain, index)} uses ${target}, which the nat table does not allow (filter in the forward template instead)`);
      } else if (chain.table === 'nat') {
        const from = hooks.get(chain.name) ?? new Set();
        if (SOURCE_NAT.has(target) && from.has('PREROUTING')) problems.push(`${where(chain, index)} uses ${target} in PREROUTING; source NAT belongs in POSTROUTING`);
        if (DEST_NAT.has(target) && from.has('POSTROUTING')) problems.push(`${where(chain, index)} uses ${target} in POSTROUTING; destination NAT belongs in PREROUTING`);
      }
    });
  }

  // Loops: the kernel refuses a ruleset in which a chain can reach itself.
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (key: string, path: string[]): void => {
    if (state.get(key) === 'done') return;
    if (state.get(key) === 'visiting') {
      const cycle = [...path.slice(path.indexOf(key)), key].map((k) => k.split('/')[1]!);
      const files = [...new Set(cycle.map((c) => sources.get(c)).filter(Boolean))];
      problems.push(`jump loop: ${cycle.join(' -> ')}${files.length > 0 ? ` (from ${files.join(', ')})` : ''}`);
      return;
    }
    state.set(key, 'visiting');
    const chain = byName.get(key)!;
    for (const rule of chain.rules) {
      const target = verdictOf(rule.line);
      const next = `${chain.table}/${target}`;
      if (target?.startsWith(OUR_PREFIX) && byName.has(next)) visit(next, [...path, key]);
    }
    state.set(key, 'done');
  };
  for (const key of byName.keys()) visit(key, []);

  if (problems.length > 0) throw new PlanError(problems.join('\n'));
}
