/**
 * `lab check`: the probes planned (probe-plan.ts) sent through the router as real packets, from agents in the lab's
 * namespaces, and compared with what the config allows. The agents are always stopped.
 */
import type { Config } from '../config/schema.js';
import type { CommandRunner } from '../exec/runner.js';
import type { Stop, Verdict } from './expect.js';
import { mapLimit, runProbe, runProbeBatch, startAgent, type ProbeOutcome, type RunningAgent } from './probe.js';
import type { LabTopology } from './topology.js';
import { INTERNET, MAX_PROBES, planLabAgents, planLabProbes, type PlannedProbe } from './probe-plan.js';

/** A probe as planned (its send spec and note aside), with what happened to it. */
export interface CheckRow extends Omit<PlannedProbe, 'spec' | 'note'> {
  readonly actual: Verdict;
  /** The source address the server saw (tcp/udp probes that passed). */
  readonly peer?: string;
  /** How a blocked probe was stopped, when it could tell. */
  readonly stop?: Stop;
  readonly ok: boolean;
  readonly detail: string;
}

export interface CheckResult {
  readonly lab: string;
  readonly zones: readonly string[];
  readonly rows: readonly CheckRow[];
  /** Rules not probed, and probes left out by the cap, said for the user. */
  readonly notes: readonly string[];
  readonly ok: boolean;
  readonly durationMs: number;
}

export interface CheckOptions {
  /** Probes in flight at once, per namespace (default 16). */
  readonly concurrency?: number;
  /** Per-probe timeout (default 1500 ms; ping rounds it to whole seconds). */
  readonly timeoutMs?: number;
}

export async function labCheck(runner: CommandRunner, topology: LabTopology, config: Config, options: CheckOptions = {}): Promise<CheckResult> {
  const started = performance.now();
  const timeoutMs = options.timeoutMs ?? 1500;
  const concurrency = options.concurrency ?? 16;
  const plan = planLabProbes(topology, config, timeoutMs);
  const probes = plan.probes;
  const ttlSeconds = 30 + Math.ceil((probes.length * (timeoutMs + 1000)) / concurrency / 1000);
  const agents: RunningAgent[] = [];
  try {
    const starting = [...planLabAgents(topology, config, probes)].map(([ns, sockets]) => startAgent(runner, ns, sockets, ttlSeconds));
    const settled = await Promise.allSettled(starting);
    for (const s of settled) if (s.status === 'fulfilled') agents.push(s.value);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;

    // Pings as processes, a limited number at once; TCP and UDP as one batch per source namespace.
    const outcomes = new Array<ProbeOutcome>(probes.length);
    const pings = probes.flatMap((p, i) => (p.spec.kind === 'ping' ? [i] : []));
    const bySource = new Map<string, number[]>();
    probes.forEach((p, i) => {
      if (p.spec.kind !== 'ping') bySource.set(p.spec.namespace, [...(bySource.get(p.spec.namespace) ?? []), i]);
    });
    await Promise.all([
      mapLimit(pings, concurrency, async (i) => { outcomes[i] = await runProbe(runner, probes[i]!.spec); }),
      ...[...bySource].map(async ([ns, indexes]) => {
        const batch = indexes.map((i) => {
          const { kind, target, port, localAddress } = probes[i]!.spec;
          return { kind: kind as 'tcp' | 'udp', target, port: port!, ...(localAddress ? { localAddress } : {}) };
        });
        const results = await runProbeBatch(runner, ns, batch, { timeoutMs, limit: concurrency });
        indexes.forEach((i, k) => { outcomes[i] = results[k]!; });
      }),
    ]);

    const rows = probes.map((p, i): CheckRow => {
      const outcome = outcomes[i]!;
      const peer = outcome.reply?.peer;
      const landed = outcome.actual !== 'pass' || (
        (p.expectedPeer === undefined || peer === p.expectedPeer)
        && (p.expectedLocal === undefined || outcome.reply === undefined || outcome.reply.local === p.expectedLocal));
      // A reject that drops leaves its clients waiting for a timeout; a drop that answers tells a scanner what is there.
      const stoppedAsSaid = outcome.actual !== 'blocked' || p.expectedStop === undefined || outcome.stop === undefined || outcome.stop === p.expectedStop;
      const detail = [p.note, outcome.detail].filter(Boolean).join('; ');
      const { spec: _spec, note: _note, ...planned } = p;
      return {
        ...planned, actual: outcome.actual, ...(peer ? { peer } : {}), ...(outcome.stop ? { stop: outcome.stop } : {}),
        ok: outcome.actual === p.expected && landed && stoppedAsSaid, detail,
      };
    });
    const notes = plan.notProbed.map((n) => `not probed: ${n}`);
    if (plan.planned > probes.length) {
      notes.push(`${plan.planned - probes.length} of ${plan.planned} planned probes left out (at most ${MAX_PROBES} per check, kept in this order: the ports rules name, the ports just outside them, the other transport, then the baseline of ping, tcp/22 and tcp/80 between every pair)`);
      notes.push(...plan.capped.map((c) => `left out: ${c}`));
    }
    const zones = [...topology.vlans.map((v) => v.name), INTERNET];
    return { lab: topology.name, zones, rows, notes, ok: rows.every((r) => r.ok), durationMs: Math.round(performance.now() - started) };
  } finally {
    await Promise.allSettled(agents.map((a) => a.stop()));
  }
}

