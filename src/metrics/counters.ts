/**
 * Kernel counters → Prometheus counters. Rule and set counters are joined to what they mean (a pair of zones
 * and an action, or a VLAN's NAT) through the rule hashes and set members of the last applied desired state,
 * so labels are VLAN names, never rule text. Kernel counters restart at zero when a chain is rewritten, so
 * increments are taken per kernel counter (MonotonicCounters), then added up per label set. Pure.
 */
import type { SavedTable, TableName } from '../observe/facts.js';
import { forEachIpsetMember } from '../observe/parse-ipset.js';
import { commentHashOf, parseSave } from '../observe/parse-save.js';
import { memberSetOf } from '../plan/diff.js';
import type { Desired, Plan } from '../plan/types.js';

/** One kernel counter (a rule, or a set member) and the labels it counts for. */
export interface Sample {
  /**
   * Identifies the counter across readings: a rule's hash (it covers table, chain and body), or a set member
   * (each (net, NIC) member is in exactly one accounting set). Strings the desired state already holds: at 100
   * VLANs there are about 11,000 of them (10,000 members), and the collector keeps one reading per source.
   */
  readonly source: string;
  readonly metric: 'forwarded' | 'nat' | 'dropped';
  readonly labels: Readonly<Record<string, string>>;
  readonly packets: number;
  readonly bytes: number;
}

export function ruleSamples(desired: Desired, tables: Readonly<Record<TableName, SavedTable>>): Sample[] {
  const samples: Sample[] = [];
  for (const chain of desired.chains) {
    const saved = tables[chain.table].rules.get(chain.name) ?? [];
    // Rules of one body in one chain share a hash (a rule written twice; the second matches nothing the first did
    // not take): one counter, the sum of theirs, one sample.
    const byHash = new Map<string, { packets: number; bytes: number }>();
    for (const r of saved) {
      if (!r.hash) continue;
      const seen = byHash.get(r.hash);
      byHash.set(r.hash, seen ? { packets: seen.packets + r.packets, bytes: seen.bytes + r.bytes } : r);
    }
    for (const rule of chain.rules) {
      const counters = byHash.get(rule.hash);
      if (!counters || !rule.meaning) continue;
      byHash.delete(rule.hash);
      const source = rule.hash;
      const { packets, bytes } = counters;
      const meaning = rule.meaning;
      samples.push(meaning.kind === 'forward'
        ? { source, metric: 'forwarded', labels: { from: meaning.from, to: meaning.to, action: meaning.action }, packets, bytes }
        : meaning.kind === 'nat'
          ? { source, metric: 'nat', labels: { vlan: meaning.vlan, kind: meaning.type }, packets, bytes }
          : { source, metric: 'dropped', labels: { reason: meaning.reason }, packets, bytes });
    }
  }
  return samples;
}

/** Per desired state: each accounting member's set and labels (made once, not at every reading). */
type MemberLabels = { set: string; member: string; labels: Readonly<Record<string, string>> };
const memberLabels = new WeakMap<Desired, Map<string, MemberLabels>>();

function labelsOf(desired: Desired): Map<string, MemberLabels> {
  let map = memberLabels.get(desired);
  if (!map) {
    map = new Map();
    for (const set of desired.sets) {
      for (const m of set.members) {
        // A NIC set's members count nothing (no from/to).
        if (m.from !== undefined && m.to !== undefined) map.set(m.member, { set: set.name, member: m.member, labels: { from: m.from, to: m.to, action: 'accept' } });
      }
    }
    memberLabels.set(desired, map);
  }
  return map;
}

/**
 * The accounting sets' counters in an `ipset save` text, joined to their pair of zones, one visit per member (no
 * array of 10,000 samples per reading). A member in a set other than the one the desired state puts it in is not
 * ours to count. Returns whether our sets hold exactly the desired members, no more and no fewer: a supervisor's
 * passes take that as known (KnownSets) and count on this reading to say when it is not so.
 */
export function forEachSetSample(desired: Desired, ipsetSave: string, visit: (sample: Sample) => void): { exact: boolean } {
  const reader = setSampleReader(desired, visit);
  reader.read(ipsetSave, 0, Infinity);
  return { exact: reader.exact() };
}

/**
 * forEachSetSample a part at a time: `read` visits the members of the lines from offset `from` (a line's start) that
 * start before `from + limit`, and returns where the next line starts; once the whole text is read, `exact` says
 * what forEachSetSample returns. At 100 VLANs the text is 10,000 lines: the stats collector reads it in parts, and
 * lets the HTTP endpoints answer between them.
 */
export function setSampleReader(desired: Desired, visit: (sample: Sample) => void): { read(text: string, from: number, limit: number): number; exact(): boolean } {
  const labels = labelsOf(desired);
  const wanted = wantedMembers(desired);
  let matched = 0;
  let stray = 0;
  const member = (set: string, member: string, packets: number, bytes: number) => {
    const members = wanted.sets.get(set);
    if (members) {
      if (members.has(member)) matched++;
      else stray++;
    }
    const known = labels.get(member);
    // The desired state's own string as the key: the parsed one would keep the whole text it was cut from alive.
    if (known?.set === set) visit({ source: known.member, metric: 'forwarded', labels: known.labels, packets, bytes });
  };
  return {
    read: (text, from, limit) => forEachIpsetMember(text, member, from, limit),
    exact: () => stray === 0 && matched === wanted.total,
  };
}

const wantedOf = new WeakMap<Desired, { sets: Map<string, ReadonlySet<string>>; total: number }>();
function wantedMembers(desired: Desired): { sets: Map<string, ReadonlySet<string>>; total: number } {
  let wanted = wantedOf.get(desired);
  if (!wanted) {
    const sets = new Map(desired.sets.map((s) => [s.name, memberSetOf(s)]));
    wanted = { sets, total: [...sets.values()].reduce((n, m) => n + m.size, 0) };
    wantedOf.set(desired, wanted);
  }
  return wanted;
}

/** Where a kernel counter stands. */
export interface Count {
  readonly packets: number;
  readonly bytes: number;
}
export const ZERO: Count = { packets: 0, bytes: 0 };

/**
 * Where the counters of the rules a restore of `text` writes stand after it, by rule hash (Sample.source): a
 * payload's rules count from zero (a chain is written whole); an undo's (`[packets:bytes] -A …`) hold again what
 * the pass read before its write (zero where it planned from the tables a supervisor knew), which is not what the
 * last reading found. Rules of one hash in one chain are one counter, as in ruleSamples.
 */
export function countersAfterRestore(text: string): Map<string, Count> {
  const counts = new Map<string, Count>();
  for (const table of parseSave(text).values()) {
    for (const rules of table.rules.values()) {
      for (const rule of rules) {
        if (!rule.hash) continue;
        const seen = counts.get(rule.hash);
        counts.set(rule.hash, { packets: (seen?.packets ?? 0) + rule.packets, bytes: (seen?.bytes ?? 0) + rule.bytes });
      }
    }
  }
  return counts;
}

/**
 * The same for a payload, whose rules all count from zero: only their hashes are needed, so the text is scanned
 * for them instead of parsed (a 10,000-rule payload parses in 25-50 ms, in the middle of the apply).
 */
export function countersAfterPayload(text: string): Map<string, Count> {
  const counts = new Map<string, Count>();
  for (let at = 0; at < text.length;) {
    let end = text.indexOf('\n', at);
    if (end === -1) end = text.length;
    if (text.startsWith('-A ', at)) {
      const hash = commentHashOf(text.slice(at, end));
      if (hash) counts.set(hash, ZERO);
    }
    at = end + 1;
  }
  return counts;
}

/**
 * The accounting members a pass that applied `plan` added: they count from zero. Keys as Sample.source, which names
 * a member without its set: only the accounting sets' members are samples, and another set may hold the same text
 * (VGW-NICS-0's `0.0.0.0/1,eth1` is also uplink → eth1's member in VGW-PAIRS-0), whose restart is not theirs.
 */
export function membersAddedBy(plan: Plan): string[] {
  return plan.steps.flatMap((step) => (step.kind === 'set-update' && step.role === 'accounting' ? step.add : []));
}

/**
 * Successive absolute readings → increments; a reading below the last one means the source was reset. Each key
 * is one kernel counter, and a supervisor runs for months while its rules change: `sweep` forgets the keys a
 * whole reading did not visit (rules and members no longer desired), so the map holds one reading's keys.
 */
export class MonotonicCounters {
  private readonly last = new Map<string, { value: number; reading: number }>();
  private readonly lastPair = new Map<string, { packets: number; bytes: number; reading: number }>();
  private reading = 0;

  delta(key: string, value: number): number {
    const previous = this.last.get(key);
    this.last.set(key, { value, reading: this.reading });
    return increment(previous?.value, value);
  }

  /** A packets and bytes pair under one key (one entry per rule or set member, not two). */
  deltas(key: string, packets: number, bytes: number): [number, number] {
    const previous = this.lastPair.get(key);
    if (previous) {
      const result: [number, number] = [increment(previous.packets, packets), increment(previous.bytes, bytes)];
      previous.packets = packets;
      previous.bytes = bytes;
      previous.reading = this.reading;
      return result;
    }
    this.lastPair.set(key, { packets, bytes, reading: this.reading });
    return [packets, bytes];
  }

  /**
   * Counters known to have been set since the last reading (a chain rewritten, a member added: to zero; a rewrite
   * rolled back: to what the pass planned from): the next reading counts from there. Without this, a reading at or
   * above the last one was taken for growth, and what it held before the rewrite was lost; and a rollback to a value
   * below the last reading was taken for a restart at zero, and that value counted again.
   * From the lower of the two, where the last reading is lower: a rollback puts back what its pass read (or zero), and
   * read after the last reading it holds traffic since then that no reading has counted yet.
   */
  restarted(counts: ReadonlyMap<string, Count>): void {
    for (const [key, count] of counts) {
      const pair = this.lastPair.get(key);
      if (pair) {
        pair.packets = Math.min(pair.packets, count.packets);
        pair.bytes = Math.min(pair.bytes, count.bytes);
      }
    }
  }

  /**
   * A reading of a counter that a write set to `start` while the reading ran (before or after the kernel was read,
   * nobody knows): not counted; the next reading counts from `start`, or from the last reading if lower (restarted).
   */
  observe(key: string, start: Count): void {
    const pair = this.lastPair.get(key);
    this.lastPair.set(key, {
      packets: Math.min(start.packets, pair?.packets ?? Infinity), bytes: Math.min(start.bytes, pair?.bytes ?? Infinity), reading: this.reading,
    });
  }

  /**
   * Ends a complete reading: the keys it did not visit are forgotten, except those `keep` still wants (a NIC that
   * is only unbound for a moment keeps its last reading: counted again in full when it is back, it would count
   * twice). Call only after a reading that visited everything it could; a failed one forgets nothing.
   */
  sweep(keep: (key: string) => boolean = () => false): void {
    for (const map of [this.last, this.lastPair]) {
      for (const [key, entry] of map) if (entry.reading !== this.reading && !keep(key)) map.delete(key);
    }
    this.reading++;
  }

  get size(): number {
    return this.last.size + this.lastPair.size;
  }
}

const increment = (previous: number | undefined, reading: number) =>
  (previous === undefined ? reading : reading >= previous ? reading - previous : reading);
