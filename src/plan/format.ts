/** A plan as a person reviews it: per VLAN its NIC or why it waits, then each change. Pure. */
import { describeClear } from './conntrack.js';
import type { Plan, Step } from './types.js';

/**
 * A rule as a person compares it: without our hash comment, which we write first and iptables-save prints back
 * quoted after `-p` (a changed rule would otherwise show its two versions in two different shapes).
 */
const HASH_COMMENT = /(?:^| )-m comment --comment "?vgw:[\w-]+"?(?= |$)/;
const bare = (rule: string) => rule.replace(HASH_COMMENT, '').trim();

/** A chain's removed and added rules as shown: bare, unless that makes a removed and an added one look the same. */
function shownRules(removed: readonly string[], added: readonly string[]): { removed: string[]; added: string[] } {
  const addedBare = new Set(added.map(bare));
  const removedBare = new Set(removed.map(bare));
  return {
    removed: removed.map((r) => (addedBare.has(bare(r)) ? r : bare(r))),
    added: added.map((r) => (removedBare.has(bare(r)) ? r : bare(r))),
  };
}

function stepLines(step: Step): string[] {
  switch (step.kind) {
    case 'link-up': return [`~ link ${step.nic}: up (vlan ${step.vlan})`];
    case 'address-add': return [`+ address ${step.address}/${step.prefix} on ${step.nic} (vlan ${step.vlan})`];
    case 'address-del': return [`- address ${step.address}/${step.prefix} on ${step.nic} (${step.vlan ? `vlan ${step.vlan}` : 'no longer configured'})`];
    case 'route': return [`~ route default via ${step.gateway}${step.dev ? ` dev ${step.dev}` : ''} (was: ${step.previous?.gateway && !step.previous.tos ? `via ${step.previous.gateway}` : step.previous?.spec ?? 'none'})`];
    case 'set-update': return [
      `${step.create ? '+' : '~'} ipset ${step.set} (${step.type})${step.remake !== undefined ? `: made again with hashsize ${step.remake}, members and counters kept${step.full ? ' (its buckets are at the kernel\'s limit: it takes no more members)' : ''}` : ''}`,
      ...step.del.map((m) => `    - ${m}`),
      ...step.add.map((m) => `    + ${m}`),
    ];
    case 'set-destroy': return [`- ipset ${step.set} (${step.members.length} member${step.members.length === 1 ? '' : 's'})`];
    case 'sysctl': return [`~ sysctl ${step.key}: ${step.previous ?? '?'} -> ${step.value}`];
    case 'conntrack-clear': return [describeClear(step)];
    case 'table': {
      const lines = [`~ table ${step.table}:`];
      for (const c of step.chains) {
        const sign = c.change === 'create' ? '+' : c.change === 'delete' ? '-' : '~';
        const counts = c.order ? ' (the same rules, in a new order or without a duplicate; now:)' : ` (+${c.added.length} -${c.removed.length} rules)`;
        lines.push(`    ${sign} chain ${c.chain}${c.change === 'rewrite' ? counts : ''}`);
        const shown = shownRules(c.removed, c.added);
        for (const r of shown.removed) lines.push(`        - ${r}`);
        for (const r of shown.added) lines.push(`        + ${r}`);
        for (const r of c.order ?? []) lines.push(`        = ${bare(r)}`);
      }
      for (const j of step.jumps) {
        const where = j.change === 'remove' && j.position !== undefined ? ` (rule ${j.position} of ${j.hook}${j.why ? `: ${j.why}` : ''})` : '';
        lines.push(`    ${j.change === 'add' ? '+' : '-'} jump ${j.hook} -> ${j.target}${where}`);
      }
      return lines;
    }
  }
}

/**
 * The changes a plan lists, each as a reviewer counts them: an address, a link, the route, a sysctl, a set, a
 * conntrack clear, and per table each chain created, rewritten or deleted and each jump added or removed. Counted as
 * steps, one table step with three chains rewritten and a jump added was "1 change pending".
 */
function changeCount(plan: Plan): number {
  let count = 0;
  for (const step of plan.steps) count += step.kind === 'table' ? Math.max(1, step.chains.length + step.jumps.length) : 1;
  return count;
}

export function formatPlan(plan: Plan): string {
  const out: string[] = [];
  for (const b of plan.desired.vlans) {
    const where = b.nic ? `on ${b.nic.name}` : b.note ?? 'waiting';
    out.push(`vlan ${b.vlan.name} (id ${b.vlan.id}, ${b.vlan.subnet}): ${where}${b.nic && b.note ? ` (${b.note})` : ''}`);
  }
  const { uplink } = plan.desired;
  out.push(`uplink: ${uplink.nic ? `on ${uplink.nic.name}${uplink.note ? ` (${uplink.note})` : ''}` : uplink.note ?? 'waiting'}`);
  if (plan.backend) out.push(`backend: iptables-${plan.backend.name}${plan.backend.why ? ` (${plan.backend.why})` : ''}`);
  for (const warning of plan.warnings ?? []) out.push(`warning: ${warning.text}`);
  out.push('');
  if (plan.steps.length === 0) {
    out.push('No changes: the namespace is in sync.');
  } else {
    // One line at a time: a step's lines as spread arguments were more than one call takes (512 VLANs' sets).
    for (const step of plan.steps) for (const line of stepLines(step)) out.push(line);
    out.push('');
    const count = changeCount(plan);
    out.push(`${count} change${count === 1 ? '' : 's'} pending.`);
  }
  return out.join('\n');
}

/** One line per step, for logs and /status. */
export function summarizeStep(step: Step): string {
  if (step.kind !== 'table') return stepLines(step)[0]!.trim();
  const chains = step.chains.map((c) => `${c.change === 'create' ? '+' : c.change === 'delete' ? '-' : '~'}${c.chain}`);
  const jumps = step.jumps.map((j) => `${j.change === 'add' ? '+' : '-'}jump ${j.hook}`);
  return `~ table ${step.table}: ${[...chains, ...jumps].join(' ')}`;
}
