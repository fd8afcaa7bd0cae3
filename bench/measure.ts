/** Timing and statistics: repeated samples, median/min/max, and a runner wrapper that times every command. */
import { CommandError, type Child, type CommandRunner, type RunOptions, type RunResult, type StartOptions } from '../src/exec/runner.js';

export interface Stats {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}

export function stats(samples: readonly number[]): Stats {
  if (samples.length === 0) throw new Error('no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]!, n: sorted.length };
}

/**
 * Repeats a measurement: `runs` times, or only `slowRuns` times when the first sample already took longer
 * than `slowMs` (so a slow path does not stretch the whole benchmark; a fast one still gets a good median).
 */
export async function repeat<T>(
  plan: { runs: number; slowRuns?: number; slowMs?: number },
  sample: (index: number) => Promise<{ ms: number; value: T }>,
): Promise<{ stats: Stats; samples: number[]; values: T[] }> {
  const samples: number[] = [];
  const values: T[] = [];
  let runs = plan.runs;
  for (let i = 0; i < runs; i++) {
    const { ms, value } = await sample(i);
    samples.push(ms);
    values.push(value);
    if (i === 0 && plan.slowRuns !== undefined && ms > (plan.slowMs ?? 2000)) runs = Math.min(runs, plan.slowRuns);
  }
  return { stats: stats(samples), samples, values };
}

export type CommandKind = 'read' | 'save' | 'restore' | 'ipset' | 'address' | 'write';

export interface CommandRecord {
  readonly argv: readonly string[];
  readonly kind: CommandKind;
  readonly start: number;
  readonly end: number;
  readonly ok: boolean;
}

/** Writes are recognised explicitly; anything else (ip -json, sysctl -n, *-save, cat /proc/…) is a read. */
function kindOf(argv: readonly string[]): CommandKind {
  const [file = '', ...rest] = argv;
  if (/^iptables(-(nft|legacy))?-restore$/.test(file)) return 'restore';
  if (/^iptables(-(nft|legacy))?-save$/.test(file)) return 'save';
  if (file === 'ipset') return rest[0] === 'save' || rest[0] === 'list' ? 'read' : 'ipset';
  if (file === 'ip' && rest[0] === 'addr' && (rest[1] === 'add' || rest[1] === 'del')) return 'address';
  if (file === 'ip' && rest[0] !== '-json' && !rest.includes('show') && !rest.includes('list')) return 'write';
  if (file === 'sysctl' && rest.includes('-w')) return 'write';
  if (/^iptables(-(nft|legacy))?$/.test(file) || file === 'nft') return 'write';
  return 'read';
}

/** Wraps a runner and records every command's kind and wall time (the product code is untouched). */
export class RecordingRunner implements CommandRunner {
  records: CommandRecord[] = [];

  constructor(private readonly inner: CommandRunner) {}

  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    const start = performance.now();
    try {
      const result = await this.inner.run(argv, options);
      this.records.push({ argv, kind: kindOf(argv), start, end: performance.now(), ok: true });
      return result;
    } catch (error) {
      this.records.push({ argv, kind: kindOf(argv), start, end: performance.now(), ok: false });
      throw error;
    }
  }

  start(argv: readonly string[], options?: StartOptions): Child {
    return this.inner.start(argv, options);
  }

  count(kind: CommandKind): number {
    return this.records.filter((r) => r.kind === kind).length;
  }

  reset(): void {
    this.records = [];
  }
}

/**
 * Where the time of one reconcile went, from its command records: observe (start until the last read ends; the
 * reads run in parallel, and the planner renders beside them once the interfaces are read; reads started while the
 * config file loaded count from `start`, the load's end), parse + plan (after
 * the last read until the first write starts: pure JS), the writes' wall time (first write to the end: the
 * apply's stages run independent writes side by side), and each kind's busy time within it (iptables restores,
 * ipset restores, `ip addr`, the rest), which add up to more than the wall time when they overlap. `load` is the
 * config file read, parsed and validated before the pass (0 where the pass was given a config object), and is
 * part of `total`.
 */
export interface Breakdown {
  readonly total: number;
  readonly load: number;
  readonly observe: number;
  readonly plan: number;
  readonly writes: number;
  readonly restore: number;
  readonly ipset: number;
  readonly address: number;
  readonly otherWrites: number;
  readonly restores: number;
  readonly ipsets: number;
  readonly addresses: number;
}

export function breakdown(records: readonly CommandRecord[], start: number, end: number, loadMs = 0): Breakdown {
  const reads = records.filter((r) => r.kind === 'read' || r.kind === 'save');
  const writes = records.filter((r) => r.kind !== 'read' && r.kind !== 'save');
  // Reads started before `start` (read while the config file loaded) and ended before it count as no time here.
  const observeEnd = Math.max(start, ...reads.map((r) => r.end));
  const firstWrite = writes.length > 0 ? Math.min(...writes.map((r) => r.start)) : end;
  const sum = (kind: CommandKind) => records.filter((r) => r.kind === kind).reduce((a, r) => a + (r.end - r.start), 0);
  return {
    total: loadMs + end - start,
    load: loadMs,
    observe: observeEnd - start,
    plan: firstWrite - observeEnd,
    writes: end - firstWrite,
    restore: sum('restore'),
    ipset: sum('ipset'),
    address: sum('address'),
    otherWrites: sum('write'),
    restores: records.filter((r) => r.kind === 'restore').length,
    ipsets: records.filter((r) => r.kind === 'ipset').length,
    addresses: records.filter((r) => r.kind === 'address').length,
  };
}

export const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
export const ratio = (x: number) => `${x.toFixed(2)}×`;

/**
 * Makes the `ipset` tool look absent (as on a host without it), which the product treats as "accounting off".
 * Used only to keep measuring when an apply with ipset fails; every figure taken so says so.
 */
export class WithoutIpset implements CommandRunner {
  constructor(private readonly inner: CommandRunner) {}

  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    if (argv[0] === 'ipset') return Promise.reject(new CommandError(argv, null, 'ipset hidden by the benchmark'));
    return this.inner.run(argv, options);
  }

  start(argv: readonly string[], options?: StartOptions): Child {
    return this.inner.start(argv, options);
  }
}
