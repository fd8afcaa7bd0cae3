/**
 * Apply benchmark for one config size, every figure timed inside this process, each in namespaces of its own:
 *   (a) our full apply into an empty namespace, as `vlan-gateway apply` makes it: the namespace read while the config
 *       file loads as the product loads it (read, parsed, validated, its templates; readWhileLoading), then
 *       reconcileOnce (the real ExecaRunner inside the namespace), split into load / observe / parse+plan /
 *       addresses / restores by a command-timing wrapper; (a′) a restarted container's start, which reads after the
 *       load (the supervisor's start pass does), with its plan cache; (a″) a new container's start, the same without
 *       a plan cache;
 *   (b) raw `iptables-nft-restore --noflush --wait` (the product's flags) of exactly the plan's table payloads,
 *       same runner, a namespace made as (a)'s, interleaved with (a);
 *   (c) one `iptables-nft` process per rule line (same rules), from one shell inside a fresh namespace;
 *   (a), (b) and (c) are checked to leave the same rules, chains, sets and set members;
 *   (d) a no-op apply (second reconcile: must run zero restores) vs one `iptables-nft-save -c`, reading the tables
 *       and, as a supervisor whose stats collector found them as planned, not reading them; and as the CLI's
 *       `apply` (a new process), with its plan cache and without, in-process and as the whole process;
 *   (e) a one-VLAN change (one VLAN's forwarding rules, a new set of ports each time, loaded from its file), a
 *       supervisor's reload, vs the supervisor's own full apply (a″), and the chains it rewrote.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump as stringify } from 'js-yaml';
import { setCreate } from '../src/apply/ipsets.js';
import type { ApplyObserver } from '../src/apply/observer.js';
import { readWhileLoading, templatesOf } from '../src/cli/context.js';
import { loadConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { inNamespace, type CommandRunner } from '../src/exec/runner.js';
import type { Facts, KnownSets, KnownTables } from '../src/observe/facts.js';
import { restoreCommand, saveCommand, type StagedFacts } from '../src/observe/read.js';
import { parseSave, tableOf } from '../src/observe/parse-save.js';
import { tablesAfter } from '../src/plan/after.js';
import { tablesInSync } from '../src/plan/diff.js';
import { computeCodeIdentity, PlanCache } from '../src/cli/plan-cache.js';
import { forgetRenderedChains, useDesiredStore, type Templates } from '../src/plan/desired.js';
import type { Plan } from '../src/plan/types.js';
import { knownSetsAfter, reconcileOnce } from '../src/reconcile/once.js';
import { generateConfig, nicBatch, type ConfigShape } from './configs.js';
import { breakdown, RecordingRunner, repeat, stats, WithoutIpset, type Breakdown, type Stats } from './measure.js';
import type { Namespaces } from './netns.js';
import { ensureBundle } from './startup.js';

export interface ApplyOptions {
  readonly label: string;
  readonly shape: ConfigShape;
  readonly perRule: boolean;
  readonly oneVlanChange: boolean;
  /** false: hide the ipset tool from the product (accounting off); see WithoutIpset. */
  readonly ipset?: boolean;
}

export interface Payload {
  readonly table: string;
  readonly text: string;
}

interface ChangeResult {
  readonly stats: Stats;
  readonly parts: Record<keyof Breakdown, Stats>;
  readonly chains: number;
  readonly restores: number;
  /** Table saves per pass, at most (the known-tables passes must make none). */
  readonly saves: number;
}

export interface ApplyResult {
  readonly label: string;
  readonly ipset: boolean;
  readonly shape: ConfigShape;
  readonly ruleLines: { readonly total: number; readonly byTable: Record<string, number> };
  readonly full: Stats;
  readonly fullParts: Record<keyof Breakdown, Stats>;
  /**
   * (a′) The same full apply as a restarted container's start pass makes it: the rendered state read from the plan
   * cache its last run left (a new container has none: (a) is the case). Interleaved with (a).
   */
  readonly fullCached: Stats;
  /**
   * (a″) The same full apply as a new container's start pass makes it: the config file loaded, then the namespace read
   * (the supervisor does not read while it loads). Interleaved with (a). The supervisor's one-VLAN changes (e) are
   * compared with it: the same program's full apply.
   */
  readonly fullStart: Stats;
  readonly raw: Stats;
  /** `ipset restore` of the plan's sets into a fresh namespace (done before (b) and (c), timed apart). */
  readonly rawSets?: { readonly stats: Stats; readonly members: number };
  readonly perRule?: { readonly stats: Stats; readonly calls: number };
  /** No-op passes that read the tables (as `vlan-gateway apply` does). */
  readonly noop: Stats;
  readonly noopParts: Record<keyof Breakdown, Stats>;
  /** No-op passes of a supervisor whose stats collector found the tables as planned: the tables are not read. */
  readonly noopKnown: Stats;
  readonly noopKnownParts: Record<keyof Breakdown, Stats>;
  /** Restores, ipset writes and steps of every no-op pass of either kind (must be 0). */
  readonly noopRestores: number;
  /** Other writes (`ip` changing something, `sysctl -w`) of every no-op pass (must be 0). */
  readonly noopWrites: number;
  readonly noopSteps: number;
  /** Table saves by the passes that planned from known tables (must be 0). */
  readonly noopKnownSaves: number;
  /**
   * `vlan-gateway apply` with nothing to do, timed in-process as a new process would run it: no memory (the backend
   * found again, every set member read) and nothing rendered in memory; the desired state from the plan cache
   * the apply before it left.
   */
  readonly noopCli: Stats;
  /** The same without the plan cache (VLAN_GATEWAY_PLAN_CACHE=off, or the first run after a change). */
  readonly noopCliCold: Stats;
  /** The whole `vlan-gateway apply` process with nothing to do (bundle: start-up and config load included). */
  readonly noopProcess?: { readonly cached: Stats; readonly off: Stats };
  readonly save: Stats;
  /** Per interleaved round: the reading no-op pass minus the save that followed it. */
  readonly noopOverSave: Stats;
  readonly saveText: string;
  /** (e), reading the tables (as `vlan-gateway apply` does), and as a supervisor's reload (tables known). */
  readonly change?: { readonly read: ChangeResult; readonly known: ChangeResult; readonly vlan: string };
  readonly config: Config;
  readonly factsAfter: Facts;
}

export const tablePayloads = (plan: Plan): Payload[] =>
  plan.steps.flatMap((s) => (s.kind === 'table' ? [{ table: s.table, text: s.payload }] : []));

/** `ipset restore` input creating the plan's sets as apply does (the table payloads match on them). */
/** The plan's sets as one `ipset restore` script, created as the product creates them (setCreate). */
export const setScript = (plan: Plan): string => plan.steps.flatMap((s) => (s.kind === 'set-update'
  ? [...(s.create ? [setCreate(s.set, s.type, s.add)] : []), ...s.add.map((m) => `add ${s.set} ${m} -exist`)]
  : [])).map((l) => `${l}\n`).join('');

const ruleLineCount = (text: string) => text.split('\n').filter((l) => /^-[AI] /.test(l)).length;

function partStats(parts: readonly Breakdown[]): Record<keyof Breakdown, Stats> {
  const keys = Object.keys(parts[0]!) as Array<keyof Breakdown>;
  return Object.fromEntries(keys.map((k) => [k, stats(parts.map((p) => p[k]))])) as Record<keyof Breakdown, Stats>;
}

/** One reconcile through a recording runner: its wall time, breakdown and plan. */
/**
 * What a supervisor passes to its later passes: the backend its first pass found, and what its last good pass left
 * in our sets (updated after each pass, as the supervisor does).
 */
class SupervisorMemory {
  knownSets: KnownSets | undefined;
  /** What the last pass read of the tables, or left in them (tablesAfter), as the supervisor keeps it. */
  knownTables: KnownTables | undefined;
  /** When a save (the stats collector's reading) last found the tables as planned. */
  confirmedAt: number | undefined;

  options(tables: 'read' | 'known'): Parameters<typeof reconcileOnce>[3] {
    // As cli/drift-schedule.ts sets it for the default stats interval (5 s): two readings and a second.
    const fresh = this.confirmedAt !== undefined && performance.now() - this.confirmedAt <= 11_000;
    const knownTables = tables === 'known' && fresh ? this.knownTables : undefined;
    return {
      backend: 'nft',
      memory: { ...(this.knownSets ? { knownSets: this.knownSets } : {}), ...(knownTables ? { knownTables } : {}) },
    };
  }

  after(result: { plan: Plan; facts: Facts }): void {
    this.knownSets = knownSetsAfter(result.plan);
    const wrote = result.plan.steps.some((s) => s.kind === 'table');
    this.knownTables = { backend: result.facts.backend, tables: wrote ? tablesAfter(result.facts.tables, result.plan) : result.facts.tables };
  }

  /** The collector's check, on a save it made (not timed: the collector reads anyway, for the counters). */
  check(saveText: string, plan: Plan): void {
    const parsed = parseSave(saveText);
    const inSync = tablesInSync(plan.desired, { filter: tableOf(parsed, 'filter'), nat: tableOf(parsed, 'nat') });
    this.confirmedAt = inSync ? performance.now() : undefined;
  }
}

/**
 * The `arping -U` of each address a pass added, which apply/announce.ts leaves running after the pass returns (about 1 s
 * each, 8 at a time): the next sample waits for them (quiet()), so that their spawns do not fall on its time.
 */
class Announcements {
  private seen = 0;
  private expected = 0;
  private wake: (() => void) | undefined;
  readonly observer: ApplyObserver = {
    announced: () => {
      this.seen++;
      this.wake?.();
    },
  };

  expect(plan: Plan): void {
    this.expected = plan.steps.filter((s) => s.kind === 'address-add').length;
  }

  async quiet(): Promise<void> {
    const deadline = performance.now() + 30_000;
    while (this.seen < this.expected) {
      if (performance.now() > deadline) throw new Error(`${this.expected - this.seen} address announcements still running after 30 s`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 200);
      });
    }
  }
}

/**
 * What a pass starts from: a config object (a supervisor's pass with the config it holds), or a config file, read,
 * parsed and validated and its templates loaded as `vlan-gateway apply`, `run` and a reload do (loadChecked), with
 * the plan cache's validated configs where the product has them. A user pays that load: it is timed with the pass.
 */
type Source = Config | {
  readonly path: string;
  readonly cache?: PlanCache;
  /** As `vlan-gateway apply` and `plan` do: the namespace read while the file loads (readWhileLoading). */
  readonly readAhead?: boolean;
};

/** A config file loaded as the product loads it (cli/load-checked.ts): read, parsed, validated, its templates. */
export async function loadAsProduct(path: string, cache?: PlanCache): Promise<{ config: Config; templates: Templates }> {
  const loaded = await loadConfig(path, cache?.config);
  return { config: loaded.config, templates: await templatesOf(loaded) };
}

async function timedReconcile(runner: CommandRunner, source: Source, templates: Templates, supervisor?: SupervisorMemory, tables: 'read' | 'known' = 'read') {
  const recorder = new RecordingRunner(runner);
  const announcements = new Announcements();
  const start = performance.now();
  let config: Config;
  let reading: StagedFacts | undefined;
  if ('path' in source) {
    const load = () => loadAsProduct(source.path, source.cache);
    ({ loaded: { config, templates }, reading } = source.readAhead ? await readWhileLoading(recorder, load) : { loaded: await load(), reading: undefined });
  } else {
    config = source;
  }
  const loadedAt = performance.now();
  const result = await reconcileOnce(recorder, config, templates, { ...supervisor?.options(tables), observer: announcements.observer, ...(reading ? { reading } : {}) });
  supervisor?.after(result);
  const end = performance.now();
  announcements.expect(result.plan);
  return {
    ms: end - start,
    value: { parts: breakdown(recorder.records, loadedAt, end, loadedAt - start), plan: result.plan, facts: result.facts, recorder, quiet: () => announcements.quiet() },
  };
}

/** What a namespace holds: rule lines and VGW- chains (iptables-nft-save), sets and set members (ipset save). */
interface Holdings {
  readonly rules: number;
  readonly chains: number;
  readonly sets: number;
  readonly members: number;
}

const countLines = (text: string, pattern: RegExp) => text.split('\n').filter((l) => pattern.test(l)).length;

async function holdings(ns: CommandRunner): Promise<Holdings> {
  const save = (await ns.run(['iptables-nft-save'])).stdout;
  const sets = (await ns.run(['ipset', 'save'], { allowFailure: true }).catch(() => ({ stdout: '' }))).stdout;
  return { rules: countLines(save, /^-A /), chains: countLines(save, /^:VGW-/), sets: countLines(sets, /^create /), members: countLines(sets, /^add /) };
}

/** What the payloads and the set script make in an empty namespace. */
export const holdingsOf = (payloads: readonly Payload[], sets: string): Holdings => ({
  rules: payloads.reduce((n, p) => n + ruleLineCount(p.text), 0),
  chains: payloads.reduce((n, p) => n + countLines(p.text, /^:VGW-/), 0),
  sets: countLines(sets, /^create /),
  members: countLines(sets, /^add /),
});

/** The benchmark compares like with like: each way must leave what the product's full apply left, or it stops. */
export function sameHoldings(what: string, got: Holdings, want: Holdings): void {
  const show = (h: Holdings) => `${h.rules} rules, ${h.chains} VGW- chains, ${h.sets} sets, ${h.members} set members`;
  if (show(got) !== show(want)) throw new Error(`${what} left ${show(got)}, where the payloads make ${show(want)}: not the same work`);
}

/** The payloads as one `iptables-nft` command per line: chain declarations become -N, rules stay -A / -I. */
export function perRuleScript(payloads: readonly Payload[]): { script: string; calls: number } {
  const lines: string[] = ['set -e'];
  for (const { table, text } of payloads) {
    for (const line of text.split('\n')) {
      if (line.startsWith(':')) lines.push(`iptables-nft -w -t ${table} -N ${line.slice(1).split(' ')[0]}`);
      else if (/^-[AI] /.test(line)) lines.push(`iptables-nft -w -t ${table} ${line}`);
      else if (line !== '' && !line.startsWith('*') && line !== 'COMMIT') throw new Error(`unexpected payload line: ${line}`);
    }
  }
  return { script: `${lines.join('\n')}\n`, calls: lines.length - 1 };
}

export async function applyBench(runner: CommandRunner, namespaces: Namespaces, templates: Templates, options: ApplyOptions,
  log: (line: string) => void): Promise<ApplyResult> {
  const { shape } = options;
  const ipset = options.ipset ?? true;
  /** The runner the product gets inside a namespace. */
  const product = (ns: string): CommandRunner => (ipset ? inNamespace(runner, ns) : new WithoutIpset(inNamespace(runner, ns)));
  const config = generateConfig(shape);
  const nics = nicBatch(shape);
  const made: string[] = [];
  const fresh = async (label: string, withNics: boolean) => {
    const ns = await namespaces.create(label);
    made.push(ns);
    if (withNics) await namespaces.batch(ns, nics);
    return ns;
  };
  // The config as a user gives it: a file, which each full apply, CLI apply and reload reads, parses and validates.
  const configDir = await mkdtemp(join(tmpdir(), 'vgwbench-config-'));
  const yaml = join(configDir, 'gateway.yaml');
  await writeFile(yaml, stringify(config));

  try {
    // (a) full apply into an empty namespace that has the VLAN NICs, as `vlan-gateway apply` makes it, and after each,
    // interleaved so that the machine's noise falls on both alike, (b) the raw restore of the same payloads.
    log(`  (a) full apply ×N, (b) raw iptables-nft-restore ×N, interleaved`);
    let payloads: Payload[] = [];
    let sets = '';
    let lastNs = '';
    let lastKnown: KnownSets | undefined;
    // (a′), after each (a): a new process's PlanCache (the code's identity digested once), the state the run before
    // left in it, a fresh namespace.
    const restartCacheDir = await mkdtemp(join(tmpdir(), 'vgwbench-restart-cache-'));
    const restartApply = async () => {
      const ns = await fresh(`${options.label}-a2`, true);
      forgetRenderedChains();
      let code: string | undefined;
      const cache = new PlanCache(restartCacheDir, () => (code ??= computeCodeIdentity()));
      useDesiredStore(cache.desired);
      try {
        const sample = await timedReconcile(product(ns), { path: yaml, cache }, templates);
        cache.flush(); // after the pass, as the supervisor does
        await sample.value.quiet();
        return { sample, found: cache.hits.desired > 0 };
      } finally {
        useDesiredStore(undefined);
      }
    };
    // (b) and (c) start from what (a) starts from: a new namespace with the VLAN NICs. The payloads match on our
    // ipsets, so the sets are created first, timed apart.
    const setTimes: number[] = [];
    const withSets = async (label: string) => {
      const ns = inNamespace(runner, await fresh(label, true));
      if (sets !== '') {
        const start = performance.now();
        await ns.run(['ipset', 'restore'], { input: sets });
        setTimes.push(performance.now() - start);
      }
      return ns;
    };
    // One process per table as apply does, with the product's flags (--noflush --wait).
    const rawTimes: number[] = [];
    const rawRestore = async () => {
      const ns = await withSets(`${options.label}-b`);
      const start = performance.now();
      for (const p of payloads) await ns.run(restoreCommand('nft'), { input: p.text });
      rawTimes.push(performance.now() - start);
      return ns;
    };
    const fullCached: number[] = [];
    const fullStart: number[] = [];
    const full = await repeat({ runs: 5, slowRuns: 3, slowMs: 3000 }, async (index) => {
      if (index === 0) await restartApply(); // the run before: renders, and leaves the config and the state in the cache
      const ns = await fresh(`${options.label}-a`, true);
      lastNs = ns;
      // No rendered chains: the planner remembers each chain by its inputs, which a new process would not have (the
      // config loaded from its file is a new object each time).
      forgetRenderedChains();
      const sample = await timedReconcile(product(ns), { path: yaml, readAhead: true }, templates);
      lastKnown = knownSetsAfter(sample.value.plan);
      const these = tablePayloads(sample.value.plan);
      if (payloads.length === 0) {
        payloads = these;
        sets = setScript(sample.value.plan);
      } else if (JSON.stringify(these) !== JSON.stringify(payloads)) {
        throw new Error(`(a) wrote other payloads in ${ns} than in its first run: the raw restores would not be its work`);
      }
      const waiting = sample.value.plan.desired.vlans.filter((v) => !v.nic).length;
      if (waiting > 0) throw new Error(`${waiting} VLANs found no NIC in ${ns}`);
      await sample.value.quiet();
      const rawNs = await rawRestore();
      if (index === 0) {
        const want = holdingsOf(payloads, sets);
        sameHoldings(`(a) in ${ns}`, await holdings(inNamespace(runner, ns)), want);
        sameHoldings('(b) the raw restores', await holdings(rawNs), want);
      }
      const restarted = await restartApply();
      if (!restarted.found) throw new Error('(a′) did not find the rendered state in the plan cache');
      fullCached.push(restarted.sample.ms);
      // (a″) a new container's start pass: the supervisor loads its config file, then reads (no read-ahead), nothing
      // rendered, no plan cache.
      const startNs = await fresh(`${options.label}-a3`, true);
      forgetRenderedChains();
      const start = await timedReconcile(product(startNs), { path: yaml }, templates);
      if (JSON.stringify(tablePayloads(start.value.plan)) !== JSON.stringify(payloads)) throw new Error(`(a″) wrote other payloads in ${startNs} than (a)`);
      await start.value.quiet();
      fullStart.push(start.ms);
      return sample;
    });
    await rm(restartCacheDir, { recursive: true, force: true });
    const byTable = Object.fromEntries(payloads.map((p) => [p.table, ruleLineCount(p.text)]));
    const total = Object.values(byTable).reduce((a, b) => a + b, 0);
    const raw = { stats: stats(rawTimes) };
    const rawSets = setTimes.length > 0 ? { stats: stats(setTimes), members: sets.split('\n').filter((l) => l.startsWith('add ')).length } : undefined;

    // (c) one process per rule, from one shell inside the namespace (no per-call namespace switch).
    let perRule: ApplyResult['perRule'];
    if (options.perRule) {
      log(`  (c) one iptables-nft per rule ×N`);
      const { script, calls } = perRuleScript(payloads);
      const r = await repeat({ runs: 3 }, async (index) => {
        const ns = await withSets(`${options.label}-c`);
        const start = performance.now();
        await ns.run(['sh', '-e'], { input: script });
        const ms = performance.now() - start;
        if (index === 0) sameHoldings('(c) the per-rule commands', await holdings(ns), holdingsOf(payloads, sets));
        return { ms, value: null };
      });
      perRule = { stats: r.stats, calls };
    }
    // (d) no-op apply on the last fully applied namespace, vs one save of its tables.
    log(`  (d) no-op apply ×N (reading the tables, and not), iptables-nft-save -c ×N`);
    const inLast = inNamespace(runner, lastNs);
    const productLast = product(lastNs);
    // As the supervisor that made the last full apply (a) would run its next passes.
    const supervisor = new SupervisorMemory();
    supervisor.knownSets = lastKnown;
    // Interleaved, a pass that reads the tables, a save, a pass that does not, so that the machine's noise (other
    // work on the 2 cores, the kernel still tearing down the namespaces of (a) and (b)) falls on all alike. The
    // save is also the stats collector's reading that confirms the tables for the pass after it.
    let saveText = '';
    const saves: number[] = [];
    const known: Array<Awaited<ReturnType<typeof timedReconcile>>> = [];
    const cli: Array<Awaited<ReturnType<typeof timedReconcile>>> = [];
    const cliCold: Array<Awaited<ReturnType<typeof timedReconcile>>> = [];
    const noop = await repeat({ runs: 15, slowRuns: 3, slowMs: 3000 }, async () => {
      const pass = await timedReconcile(productLast, config, templates, supervisor, 'read');
      const start = performance.now();
      saveText = (await inLast.run(saveCommand('nft'))).stdout;
      saves.push(performance.now() - start);
      supervisor.check(saveText, pass.value.plan);
      known.push(await timedReconcile(productLast, config, templates, supervisor, 'known'));
      return pass;
    });
    // The CLI's apply on its own (its cold render leaves garbage that would land in the passes after it). As a new
    // process: the config file loaded (read, parsed and validated, or, with the plan cache, found by its text),
    // nothing rendered in memory, the code's identity computed once; with the plan cache (the default: the config
    // and the state the apply before it left in the file), and without it (VLAN_GATEWAY_PLAN_CACHE=off, or the
    // first apply after a change: the YAML parsed, a cold render), alternating. Node's start-up is measured apart.
    const cacheDir = await mkdtemp(join(tmpdir(), 'vgwbench-plan-cache-'));
    const cliRun = async (cached: boolean) => {
      forgetRenderedChains();
      let code: string | undefined;
      const store = cached ? new PlanCache(cacheDir, () => (code ??= computeCodeIdentity())) : undefined;
      useDesiredStore(store?.desired);
      try {
        const start = performance.now();
        const result = await timedReconcile(productLast, { path: yaml, readAhead: true, ...(store ? { cache: store } : {}) }, templates);
        store?.flush();
        return { ...result, ms: performance.now() - start };
      } finally {
        useDesiredStore(undefined);
      }
    };
    // Then the whole process as a user runs it (the bundle, --netns): Node's start-up, loading the bundle, reading
    // and validating the YAML config, the pass; with the plan cache (the run before left the config and the state
    // in it) and without (VLAN_GATEWAY_PLAN_CACHE=off), alternating.
    const processes = { cached: [] as number[], off: [] as number[] };
    try {
      await cliRun(true); // the apply before: renders, and leaves the state in the cache
      for (let i = 0; i < 7; i++) {
        cli.push(await cliRun(true));
        cliCold.push(await cliRun(false));
      }
      if (ipset) {
        log(`  (d) the whole vlan-gateway apply process ×N, plan cache on and off`);
        const bundle = await ensureBundle(runner);
        const yaml = join(cacheDir, 'gateway.yaml');
        await writeFile(yaml, stringify(config));
        const whole = async (cache: string) => {
          const start = performance.now();
          const r = await runner.run(['env', `VLAN_GATEWAY_PLAN_CACHE=${cache}`, process.execPath, bundle, 'apply', '--netns', lastNs, '--config', yaml], { timeoutMs: 60_000 });
          if (!/No changes/.test(r.stdout)) throw new Error(`vlan-gateway apply changed something:\n${r.stdout}`);
          return performance.now() - start;
        };
        const cache = join(cacheDir, 'plan-cache');
        await whole(cache); // the run before, which leaves the config and the state in the cache
        for (let i = 0; i < 5; i++) {
          processes.cached.push(await whole(cache));
          processes.off.push(await whole('off'));
        }
      }
    } finally {
      await rm(cacheDir, { recursive: true, force: true });
    }
    const passes = [...noop.values, ...known.map((k) => k.value), ...[...cli, ...cliCold].map((c) => c.value)];
    const noopRestores = Math.max(...passes.map((v) => v.recorder.count('restore') + v.recorder.count('ipset')));
    const noopWrites = Math.max(...passes.map((v) => v.recorder.count('address') + v.recorder.count('write')));
    const noopSteps = Math.max(...passes.map((v) => v.plan.steps.length));
    const noopKnownSaves = Math.max(...known.map((k) => k.value.recorder.count('save')));
    const save = { stats: stats(saves) };
    const noopOverSave = stats(noop.samples.map((ms, i) => ms - saves[i]!));

    // (e) one VLAN's forwarding rules changed, each time to ports it has not had before (a chain rendered for an
    // earlier sample would be found in the planner's memory, which a new policy's is not): reading the tables, then
    // as a supervisor's reload (the tables known: what the last reading found, or the last pass wrote, while the
    // collector confirms them). A reload reads, parses and validates the changed file: timed with the pass.
    let change: ApplyResult['change'];
    if (options.oneVlanChange) {
      log(`  (e) one-VLAN change ×N, reading the tables and not`);
      const vlan = Math.ceil(shape.vlans / 2);
      const variants = async (first: number) => {
        const paths: string[] = [];
        for (let v = first; v < first + 7; v++) {
          paths.push(join(configDir, `change-${v}.yaml`));
          await writeFile(paths.at(-1)!, stringify(generateConfig(shape, vlan, v)));
        }
        return paths;
      };
      const changes = async (tables: 'read' | 'known', first: number): Promise<ChangeResult> => {
        const paths = await variants(first);
        const r = await repeat({ runs: 7, slowRuns: 3, slowMs: 3000 },
          (i) => timedReconcile(productLast, { path: paths[i]! }, templates, supervisor, tables));
        if (r.values.some((v) => v.recorder.count('restore') === 0)) throw new Error('(e) a one-VLAN change wrote no table: not a change');
        await timedReconcile(productLast, config, templates, supervisor, tables); // back at the base config
        const tableSteps = r.values.flatMap((v) => v.plan.steps.filter((s) => s.kind === 'table'));
        return {
          stats: r.stats,
          parts: partStats(r.values.map((v) => v.parts)),
          chains: Math.max(...tableSteps.map((s) => s.chains.length)),
          restores: Math.max(...r.values.map((v) => v.recorder.count('restore'))),
          saves: Math.max(...r.values.map((v) => v.recorder.count('save'))),
        };
      };
      const read = await changes('read', 1);
      // The collector's reading of what the reading passes left, as (d) does before its known passes.
      supervisor.check((await inLast.run(['iptables-nft-save', '-c'])).stdout, (await timedReconcile(productLast, config, templates, supervisor, 'read')).value.plan);
      change = { read, known: await changes('known', 8), vlan: `v${vlan}` };
    }
    const factsAfter = noop.values[noop.values.length - 1]!.facts;

    return {
      label: options.label, ipset, shape, ruleLines: { total, byTable },
      full: full.stats, fullParts: partStats(full.values.map((v) => v.parts)), fullCached: stats(fullCached), fullStart: stats(fullStart),
      raw: raw.stats, ...(rawSets ? { rawSets } : {}), ...(perRule ? { perRule } : {}),
      noop: noop.stats, noopParts: partStats(noop.values.map((v) => v.parts)),
      noopKnown: stats(known.map((k) => k.ms)), noopKnownParts: partStats(known.map((k) => k.value.parts)), noopRestores, noopWrites, noopSteps, noopKnownSaves,
      noopCli: stats(cli.map((c) => c.ms)),
      noopCliCold: stats(cliCold.map((c) => c.ms)),
      ...(processes.cached.length > 0 ? { noopProcess: { cached: stats(processes.cached), off: stats(processes.off) } } : {}),
      save: save.stats, noopOverSave, saveText, ...(change ? { change } : {}), config, factsAfter,
    };
  } finally {
    for (const ns of made) await namespaces.remove(ns);
    await rm(configDir, { recursive: true, force: true });
  }
}
