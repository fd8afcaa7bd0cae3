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
  /**
   * Identifies the counter across readings: a rule's hash (it covers table, chain and body), or a set member
   * (each (net, NIC) member is in exactly one accounting set). Strings the desired state already holds: at 100
   * VLANs there are 19,000 of them, and the collector keeps one reading per source.
   */
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
      const source = rule.hash;
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
      if (!counters || member.from === undefined || member.to === undefined) continue; // a NIC set counts nothing
      samples.push({
        source: member.member, metric: 'forwarded',
        labels: { from: member.from, to: member.to, action: 'accept' }, packets: counters.packets, bytes: counters.bytes,
      });
    }
  }
  return samples;
}

/** Successive absolute readings → increments; a reading below the last one means the source was reset. */
export class MonotonicCounters {
  private readonly last = new Map<string, number>();
  private readonly lastPair = new Map<string, { packets: number; bytes: number }>();

  delta(key: string, reading: number): number {
    const previous = this.last.get(key);
    this.last.set(key, reading);
    return increment(previous, reading);
  }

  /** A packets and bytes pair under one key (one entry per rule or set member, not two). */
  deltas(key: string, packets: number, bytes: number): [number, number] {
    const previous = this.lastPair.get(key);
    if (previous) {
      const result: [number, number] = [increment(previous.packets, packets), increment(previous.bytes, bytes)];
      previous.packets = packets;
      previous.bytes = bytes;
      return result;
    }
    this.lastPair.set(key, { packets, bytes });
    return [packets, bytes];
  }
}

const increment = (previous: number | undefined, reading: number) =>
  (previous === undefined ? reading : reading >= previous ? reading - previous : reading);
