/**
 * The tables as a plan's table steps leave them, worked out rather than read back: what a supervisor knows of
 * its tables after its own write (KnownTables). A written chain holds exactly its desired rules, counted from zero
 * as the restore leaves them; a deleted chain is gone; a jump is inserted first in its hook, or removed. Rules
 * carry their body as we wrote it (iptables-save prints it back normalised, with the same hash). Pure.
 */
import type { Facts, Link, SavedRule, SavedTable } from '../observe/facts.js';
import { commentHashOf } from '../observe/parse-save.js';
import { OUR_ADDRESS_METRIC } from './chains.js';
import type { Plan, Step } from './types.js';

const savedRule = (body: string, hash: string | undefined): SavedRule =>
  (hash === undefined ? { body, packets: 0, bytes: 0 } : { body, hash, packets: 0, bytes: 0 });

export function tablesAfter(tables: Facts['tables'], plan: Plan): Facts['tables'] {
  const out = { ...tables };
  for (const step of plan.steps) {
    if (step.kind !== 'table') continue;
    const before: SavedTable = tables[step.table];
    const chains = new Set(before.chains);
    const rules = new Map(before.rules);
    const desired = new Map(plan.desired.chains.filter((c) => c.table === step.table).map((c) => [c.name, c]));
    for (const { chain, change } of step.chains) {
      if (change === 'delete') {
        chains.delete(chain);
        rules.delete(chain);
        continue;
      }
      chains.add(chain);
      rules.set(chain, desired.get(chain)!.rules.map((r) => savedRule(r.line, r.hash)));
    }
    // As the payload runs: removals by their place as found, the last first; then each add at the top.
    const removals = step.jumps.filter((j) => j.change === 'remove').sort((a, b) => (b.position ?? 0) - (a.position ?? 0));
    for (const jump of [...removals, ...step.jumps.filter((j) => j.change === 'add')]) {
      const list = [...(rules.get(jump.hook) ?? [])];
      if (jump.change === 'add') {
        list.unshift(savedRule(jump.body, commentHashOf(jump.body)));
      } else {
        const at = jump.position !== undefined ? jump.position - 1 : list.findIndex((r) => r.body === jump.body);
        if (at >= 0 && at < list.length) list.splice(at, 1);
      }
      rules.set(jump.hook, list);
    }
    // The built-in chains' policies as they were (a RETURN under FORWARD's DROP lets nothing past our jump: diffTable).
    out[step.table] = before.policies ? { chains, rules, policies: before.policies } : { chains, rules };
  }
  return out;
}

/**
 * The links as a plan's address steps leave them: what `/status` and `vlan_up` show after a pass, rather than what
 * the pass read before it wrote. Pure.
 */
export function linksAfter(links: readonly Link[], steps: readonly Step[]): Link[] {
  const touched = new Map<string, Link>();
  const get = (name: string) => touched.get(name) ?? links.find((l) => l.name === name);
  for (const step of steps) {
    if (step.kind !== 'link-up' && step.kind !== 'address-add' && step.kind !== 'address-del') continue;
    const link = get(step.nic);
    if (!link) continue;
    if (step.kind === 'link-up') touched.set(link.name, { ...link, up: true, carrier: true }); // if not, the link event that follows brings a pass that reads it
    else if (step.kind === 'address-add') {
      touched.set(link.name, { ...link, addresses: [...link.addresses, { address: step.address, prefix: step.prefix, metric: OUR_ADDRESS_METRIC }] });
    } else {
      touched.set(link.name, { ...link, addresses: link.addresses.filter((a) => !(a.address === step.address && a.prefix === step.prefix)) });
    }
  }
  return touched.size === 0 ? [...links] : links.map((l) => touched.get(l.name) ?? l);
}
