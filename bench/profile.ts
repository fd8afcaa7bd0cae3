/**
 * Where the in-process time goes, without the kernel: the pure steps of a reconcile timed one by one on the
 * facts a real namespace produced (parse of `iptables-nft-save -c`, planDesired, diff), and a CPU profile of
 * planDesired (node:inspector) summarised as the functions of src/ with the most time, inclusive and self.
 */
import { Session } from 'node:inspector/promises';
import type { Config } from '../src/config/schema.js';
import { EMPTY_TABLE, type Facts } from '../src/observe/facts.js';
import { parseSave } from '../src/observe/parse-save.js';
import { forgetRenderedChains, planDesired, type Templates } from '../src/plan/desired.js';
import { diff } from '../src/plan/diff.js';
import { repeat, type Stats } from './measure.js';

interface ProfileEntry {
  readonly fn: string;
  readonly inclusiveMs: number;
  readonly selfMs: number;
}

export interface ProfileResult {
  readonly parseSave: Stats;
  readonly planDesired: Stats;
  readonly diffFull: Stats;
  readonly diffNoop: Stats;
  readonly zones: number;
  readonly forwardingRules: number;
  /** Iterations of planDesired's (from zone × to zone × forwarding rule) loop. */
  readonly loopIterations: number;
  readonly profiledMs: number;
  readonly top: readonly ProfileEntry[];
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

const sync = <T>(fn: () => T) => async () => {
  const start = performance.now();
  const value = fn();
  return { ms: performance.now() - start, value };
};

/** Aggregates a CPU profile by function (name and file), for frames from src/, plus regex and GC. */
function summarise(profile: CpuProfile): ProfileEntry[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const timeAt = new Map<number, number>();
  profile.samples.forEach((id, i) => timeAt.set(id, (timeAt.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000));
  const keyOf = (id: number): string | undefined => {
    const { functionName, url } = byId.get(id)!.callFrame;
    const src = /\/src\/(.+)$/.exec(url)?.[1];
    if (src) return `${functionName || '(anonymous)'} (src/${src})`;
    if (functionName.startsWith('RegExp:') || functionName === '(garbage collector)') return functionName;
    return undefined;
  };
  const inclusive = new Map<string, number>();
  const self = new Map<string, number>();
  for (const [id, ms] of timeAt) {
    const own = keyOf(id);
    if (own) self.set(own, (self.get(own) ?? 0) + ms);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const key = keyOf(cur);
      if (key && !seen.has(key)) {
        seen.add(key);
        inclusive.set(key, (inclusive.get(key) ?? 0) + ms);
      }
    }
  }
  return [...new Set([...inclusive.keys(), ...self.keys()])]
    .map((fn) => ({ fn, inclusiveMs: inclusive.get(fn) ?? 0, selfMs: self.get(fn) ?? 0 }))
    .sort((x, y) => y.inclusiveMs - x.inclusiveMs || y.selfMs - x.selfMs);
}

export async function profilePlan(config: Config, factsAfter: Facts, saveText: string, templates: Templates): Promise<ProfileResult> {
  const empty: Facts = { ...factsAfter, tables: { filter: EMPTY_TABLE, nat: EMPTY_TABLE } };
  const slow = { runs: 5, slowRuns: 2, slowMs: 1000 };
  const parse = await repeat({ runs: 5 }, sync(() => parseSave(saveText)));
  // A fresh copy each time, and no rendered chains remembered: the planner remembers its result per config object
  // (a supervisor's no-op pass) and each chain by its inputs (a reload), neither of which a new process has.
  const desired = await repeat(slow, sync(() => {
    forgetRenderedChains();
    return planDesired(structuredClone(config), empty, templates);
  }));
  const d = desired.values[0]!;
  const diffFull = await repeat({ runs: 5 }, sync(() => diff(d, empty)));
  const diffNoop = await repeat({ runs: 5 }, sync(() => diff(d, factsAfter)));

  const session = new Session();
  session.connect();
  let profile: CpuProfile;
  let profiledMs: number;
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 200 });
    forgetRenderedChains();
    await session.post('Profiler.start');
    const start = performance.now();
    planDesired(structuredClone(config), empty, templates);
    profiledMs = performance.now() - start;
    ({ profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile });
    await session.post('Profiler.disable');
  } finally {
    session.disconnect();
  }

  const zones = d.vlans.filter((v) => v.nic).length + (d.uplink.nic ? 1 : 0);
  const forwardingRules = config.forwarding.rules.length;
  return {
    parseSave: parse.stats,
    planDesired: desired.stats,
    diffFull: diffFull.stats,
    diffNoop: diffNoop.stats,
    zones,
    forwardingRules,
    loopIterations: zones * (zones - 1) * forwardingRules,
    profiledMs,
    top: summarise(profile).slice(0, 10),
  };
}
