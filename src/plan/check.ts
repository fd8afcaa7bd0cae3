/**
 * Checks on the rendered rules before the kernel sees them. `iptables-restore --test` accepts a jump to a chain
 * that does not exist (it may be a target extension), so every jump is checked here: to one of our chains
 * declared in the same table, or to a standard target. Pure.
 */
import { OUR_PREFIX, STANDARD_TARGETS } from './chains.js';
import type { DesiredChain } from './types.js';
import { verdictOf } from './rule-text.js';

export class PlanError extends Error {
  override readonly name = 'PlanError';
}

export function checkJumpTargets(chains: readonly DesiredChain[], sources: ReadonlyMap<string, string> = new Map()): void {
  const declared = new Set(chains.map((c) => `${c.table}/${c.name}`));
  const problems: string[] = [];
  for (const chain of chains) {
    chain.rules.forEach((rule, index) => {
      const target = verdictOf(rule.line);
      if (target === undefined) return;
      const ok = target.startsWith(OUR_PREFIX) ? declared.has(`${chain.table}/${target}`) : STANDARD_TARGETS.has(target);
      if (ok) return;
      const where = sources.get(chain.name) ? ` (from ${sources.get(chain.name)})` : '';
      problems.push(`${chain.table} ${chain.name} rule ${index + 1}${where} jumps to ${target}, which is ${
        target.startsWith(OUR_PREFIX) ? `not a chain declared in the ${chain.table} table` : 'neither one of our chains nor a standard target'}`);
    });
  }
  if (problems.length > 0) throw new PlanError(problems.join('\n'));
}
