/**
 * Drift: a change a reconcile makes although the desired state did not change since the last successful
 * apply — someone flushed a chain, deleted a jump, removed an address, reset a sysctl. Changes that follow
 * from a new desired state (a reload, a NIC that appeared) are not drift. Pure.
 */
import type { DriftKind } from '../metrics/metrics.js';
import type { Desired, Plan, Step } from '../plan/types.js';

const sameHashes = (a: Desired['chains'][number] | undefined, b: Desired['chains'][number] | undefined) =>
  a !== undefined && b !== undefined && a.rules.length === b.rules.length && a.rules.every((r, i) => r.hash === b.rules[i]!.hash);

function stepDrift(previous: Desired, next: Desired, step: Step): DriftKind[] {
  switch (step.kind) {
    case 'table': {
      const kinds: DriftKind[] = [];
      for (const change of step.chains) {
        const before = previous.chains.find((c) => c.table === step.table && c.name === change.chain);
        const now = next.chains.find((c) => c.table === step.table && c.name === change.chain);
        // Rewritten or re-created although we want what we wanted; or a chain of ours that we never wrote.
        if (change.change === 'delete' ? before === undefined : sameHashes(before, now)) kinds.push('rules');
      }
      // One repair per hook: a jump moved back to the top is a removal and an add of the same jump.
      const repaired = new Set<string>();
      for (const jump of step.jumps) {
        const wanted = (d: Desired) => d.jumps.some((j) => j.hook === jump.hook && j.target === jump.target);
        // Removing a jump is a config change only when we wanted it before and no longer do; a duplicate of a
        // wanted jump, or a stray jump into our chains, was put there by someone else.
        if (jump.change === 'add' ? wanted(previous) : wanted(next) || !wanted(previous)) repaired.add(jump.hook);
      }
      kinds.push(...Array.from(repaired, (): DriftKind => 'jump'));
      return kinds;
    }
    case 'address-add':
    case 'link-up':
      return previous.addresses.some((a) => a.nic === step.nic && next.addresses.some((b) => b.nic === a.nic && b.address === a.address))
        ? [step.kind === 'link-up' ? 'link' : 'address'] : [];
    case 'route':
      return previous.route?.gateway === step.gateway ? ['route'] : [];
    case 'sysctl':
      return previous.sysctls[step.key] === step.value ? ['sysctl'] : [];
    case 'set-update': {
      const before = previous.sets.find((s) => s.name === step.set);
      const now = next.sets.find((s) => s.name === step.set);
      const same = before && now && before.members.length === now.members.length && before.members.every((m, i) => m.member === now.members[i]!.member);
      return same ? ['set'] : [];
    }
    default:
      return [];
  }
}

export function driftOf(previous: Desired | undefined, plan: Plan): DriftKind[] {
  if (!previous) return [];
  return plan.steps.flatMap((step) => stepDrift(previous, plan.desired, step));
}
