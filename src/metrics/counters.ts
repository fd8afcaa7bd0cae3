/**
 * Kernel counters → Prometheus counters. Rule and set counters are joined to what they mean (a pair of zones
 * and an action, or a VLAN's NAT) through the rule hashes and set members of the last applied desired state,
 * so labels are VLAN names, never rule text. Kernel counters restart at zero when a chain is rewritten, so
 * increments are taken per kernel counter (MonotonicCounters), then added up per label set. Pure.
 */
import type { SavedSet, SavedTable, TableName } from '../observe/facts.js';
import type { Desired } from '../plan/types.js';

/** One kernel counter (a rule, or a set member) and the labels it counts for. */
export interface Sample {
  /** Identifies the counter across readings: table/chain/hash, or set/member. */
  readonly source: string;
  readonly metric: 'forwarded' | 'nat';
  readonly labels: Readonly<Record<string, string>>;
  readonly packets: number;
  readonly bytes: number;
}

export function ruleSamples(desired: Desired, tables: Readonly<Record<TableName, SavedTable>>, sets?: ReadonlyMap<string, SavedSet>): Sample[] {
  const samples: Sample[] = [];
  for (const chain of desired.chains) {
    const saved = tables[chain.table].rules.get(chain.name) ?? [];
    const byHash = new Map(saved.filter((r) => r.hash).map((r) => [r.hash!, r]));
    for (const rule of chain.rules) {
      const counters = byHash.get(rule.hash);
      if (!counters || !rule.meaning) continue;
      const source = `${chain.table}/${chain.name}/${rule.hash}`;
      const { packets, bytes } = counters;
      samples.push(rule.meaning.kind === 'forward'
        ? { source, metric: 'forwarded', labels: { from: rule.meaning.from, to: rule.meaning.to, action: rule.meaning.action }, packets, bytes }
        : { source, metric: 'nat', labels: { vlan: rule.meaning.vlan, kind: rule.meaning.type }, packets, bytes });
    }
  }
  for (const set of desired.sets) {
    const saved = sets?.get(set.name);
    if (!saved) continue;
    for (const member of set.members) {
      const counters = saved.members.get(member.member);
      if (!counters) continue;
      samples.push({
        source: `set/${set.name}/${member.member}`, metric: 'forwarded',
        labels: { from: member.from, to: member.to, action: 'accept' }, packets: counters.packets, bytes: counters.bytes,
      });
    }
  }
  return samples;
}

/** Successive absolute readings → increments; a reading below the last one means the source was reset. */
export class MonotonicCounters {
  private readonly last = new Map<string, number>();

  delta(key: string, reading: number): number {
    const previous = this.last.get(key);
    this.last.set(key, reading);
    if (previous === undefined) return reading;
    return reading >= previous ? reading - previous : reading;
  }
}
