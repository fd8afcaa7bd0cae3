/**
 * Reads kernel counters on a timer (never inside a scrape): rule and set counters for the forwarding and NAT
 * series, NIC statistics for the VLANs' interfaces, and conntrack occupancy. One `iptables-save -c`, one
 * `ipset save` (read line by line, never kept), one `ip -s link` and one `sysctl` per tick, whatever the number
 * of VLANs. Reading every rule and set member anyway, it also tells the supervisor whether our tables are as
 * planned (its later passes then need not read them: KnownTables) and when our sets do not hold the desired
 * members, which its passes otherwise only check by count (KnownSets).
 */
import type { CommandRunner } from '../exec/runner.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { Backend, Link } from '../observe/facts.js';
import { parseIpAddr } from '../observe/parse-ip.js';
import { parseSave, tableOf } from '../observe/parse-save.js';
import { readSetsText, saveCommand } from '../observe/read.js';
import { tablesInSync } from '../plan/diff.js';
import type { Desired } from '../plan/types.js';
import type { Counter } from 'prom-client';
import { MonotonicCounters, ruleSamples, setSampleReader, type Count, type Sample } from './counters.js';
import type { Metrics } from './metrics.js';

export interface CollectorState {
  readonly desired?: Desired;
  readonly backend?: Backend;
  /** Called when our sets do not hold exactly the desired state's members. */
  readonly setsDrifted?: () => void;
  /** Called after each read of the tables: do they hold exactly the desired chains and jumps? */
  readonly tablesChecked?: (inSync: boolean) => void;
  /** Called when a sysctl the desired state sets (ip_forward) reads otherwise: forwarding is off until a pass. */
  readonly sysctlsDrifted?: () => void;
  /** Counters (Sample.source) that writes done before this reading began set, and where they start again. */
  readonly restarted?: ReadonlyMap<string, Count>;
  /** The same, of writes done since this reading began: asked after it read the kernel (resolves once a pass
   *  running then has ended, so that a write and its rollback are both known). */
  readonly restartedSince?: () => Promise<ReadonlyMap<string, Count>>;
}

const NOTHING: ReadonlyMap<string, Count> = new Map();

/** How much of `ipset save` the collector reads before it lets the event loop run (about 1,000 members: 1-2 ms). */
const SET_TEXT_PART = 64 * 1024;

export class StatsCollector {
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  private readonly mono = new MonotonicCounters();
  private readonly failureLog: RateLimitedLog;

  constructor(
    private readonly runner: CommandRunner,
    private readonly metrics: Metrics,
    log: Logger,
    private readonly intervalMs: number,
    private readonly state: () => CollectorState,
  ) {
    this.failureLog = new RateLimitedLog(log);
  }

  start(): void {
    this.timer = setInterval(() => void this.collect(), this.intervalMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.reading;
  }

  /** One reading; overlapping calls share the one in flight. */
  collect(): Promise<void> {
    this.reading ??= this.readOnce().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readOnce(): Promise<void> {
    const { desired, backend, setsDrifted, tablesChecked, sysctlsDrifted, restarted, restartedSince } = this.state();
    if (!desired || !backend) return;
    if (restarted) this.mono.restarted(restarted);
    if (desired !== this.prunedFor) await this.pruneZones(desired);
    try {
      const [save, sets, links, sysctlOut] = await Promise.all([
        this.runner.run(saveCommand(backend)),
        readSetsText(this.runner),
        this.runner.run(['ip', '-json', '-s', 'link', 'show']),
        // By name (no -n): a key that is missing (conntrack not loaded yet) prints nothing, and must not shift the others.
        this.runner.run(['sysctl', ...Object.keys(desired.sysctls), 'net.netfilter.nf_conntrack_count', 'net.netfilter.nf_conntrack_max'], { allowFailure: true }),
      ]);
      const parsed = parseSave(save.stdout);
      const tables = { filter: tableOf(parsed, 'filter'), nat: tableOf(parsed, 'nat') };
      tablesChecked?.(tablesInSync(desired, tables));
      const m = this.metrics;
      // Written while this reading ran: whether it saw them before or after the write (or between a write and its
      // rollback), it is not counted; the next reading counts from where the writes left them.
      const uncertain = (await restartedSince?.()) ?? NOTHING;
      const add = (sample: Sample) => {
        const start = uncertain.get(sample.source);
        if (start) return this.mono.observe(sample.source, start);
        const [packets, bytes] = (sample.metric === 'forwarded' ? [m.forwardedPackets, m.forwardedBytes]
          : sample.metric === 'nat' ? [m.natPackets, m.natBytes] : [m.droppedPackets, m.droppedBytes]) as Counter<string>[];
        const [dp, db] = this.mono.deltas(sample.source, sample.packets, sample.bytes);
        // Series appear with their first packet: a 100-VLAN mesh would otherwise export 10,000 zero series.
        if (dp > 0 || db > 0) {
          packets!.inc(sample.labels, dp);
          bytes!.inc(sample.labels, db);
        }
      };
      for (const sample of ruleSamples(desired, tables)) add(sample);
      if (sets !== undefined) {
        // 10,000 members at 100 VLANs (about 550 kB of text): read a part at a time, and between the parts the
        // event loop answers the HTTP endpoints (read at once, a scrape or /healthz waited 50-250 ms behind it).
        const reader = setSampleReader(desired, add);
        for (let at = 0; at < sets.length;) {
          at = reader.read(sets, at, SET_TEXT_PART);
          if (at < sets.length) await new Promise((resolve) => setImmediate(resolve));
        }
        if (!reader.exact()) setsDrifted?.();
      }
      const linkList = parseIpAddr(links.stdout);
      this.interfaces(desired, linkList);
      const sysctls = new Map(sysctlOut.stdout.split('\n').map((l) => l.split(' = ')).filter((kv) => kv.length === 2).map(([k, v]) => [k!.trim(), v!.trim()]));
      const count = Number(sysctls.get('net.netfilter.nf_conntrack_count') ?? NaN);
      const max = Number(sysctls.get('net.netfilter.nf_conntrack_max') ?? NaN);
      if (Number.isFinite(count) && Number.isFinite(max)) {
        m.conntrackEntries.set(count);
        m.conntrackLimit.set(max);
      }
      // ip_forward switched off behind our back stops all forwarding: repaired now, not at the next schedule.
      if (Object.entries(desired.sysctls).some(([key, value]) => sysctls.has(key) && sysctls.get(key) !== value)) sysctlsDrifted?.();
      // A whole reading: what it did not visit is no longer ours (a NIC's counters stay while the NIC exists).
      const present = new Set(linkList.map((l) => `if/${l.index}/${l.name}/`));
      this.mono.sweep((key) => key.startsWith('if/') && present.has(key.slice(0, key.lastIndexOf('/') + 1)));
      this.failureLog.reset();
    } catch (error) {
      this.metrics.statsErrors.inc();
      // Counted every time; logged at most once per 30 s while it keeps failing (every 5 s otherwise).
      this.failureLog.warn((error as Error)?.message ?? String(error), { err: error }, 'reading kernel counters failed');
    }
    this.metrics.changed();
  }

  private prunedFor: Desired | undefined;

  /**
   * A VLAN taken out of the config takes its traffic series with it, and a forwarding series nothing counts any
   * more (its rule removed: `{from="lab", to="office", action="drop"}`) goes too, as does a NAT series no rule counts
   * any more (`uplink.nat` turned from masquerade to snat or none, a VLAN's `masquerade: false`, its port forwards
   * removed). A zone that is only waiting for its NIC keeps its series, and so do the NAT series while the uplink
   * waits (no NAT rule is written then). Run when the desired state changes, not at every reading.
   */
  private async pruneZones(desired: Desired): Promise<void> {
    this.prunedFor = desired;
    const zones = new Set([...desired.vlans.map((b) => b.vlan.name), 'uplink']);
    const waiting = new Set([...desired.vlans.filter((b) => !b.nic).map((b) => b.vlan.name), ...(desired.uplink.nic ? [] : ['uplink'])]);
    const counted = new Set<string>();
    const natCounted = new Set<string>();
    for (const chain of desired.chains) {
      for (const rule of chain.rules) {
        if (rule.meaning?.kind === 'forward') counted.add(`${rule.meaning.from} ${rule.meaning.to} ${rule.meaning.action}`);
        else if (rule.meaning?.kind === 'nat') natCounted.add(`${rule.meaning.vlan} ${rule.meaning.type}`);
      }
    }
    for (const set of desired.sets) for (const m of set.members) if (m.from !== undefined && m.to !== undefined) counted.add(`${m.from} ${m.to} accept`);
    const stale = (v: Record<string, string | number | undefined>) => (v.from !== undefined
      ? !counted.has(`${v.from} ${v.to} ${v.action}`) && !waiting.has(String(v.from)) && !waiting.has(String(v.to))
      : v.vlan !== undefined && !natCounted.has(`${v.vlan} ${v.kind}`) && !waiting.has(String(v.vlan)) && !waiting.has('uplink'));
    const m = this.metrics;
    const counters: Array<[Counter<string>, readonly string[]]> = [
      [m.forwardedPackets, ['from', 'to']], [m.forwardedBytes, ['from', 'to']], [m.natPackets, ['vlan']], [m.natBytes, ['vlan']],
    ];
    for (const [counter, keys] of counters) {
      for (const { labels } of (await counter.get()).values) {
        const values = labels as Record<string, string | number | undefined>;
        if (keys.some((k) => values[k] !== undefined && !zones.has(String(values[k]))) || stale(values)) counter.remove(values as Record<string, string>);
      }
    }
  }

  /** The label sets of the NIC series exported now: a VLAN that moved NIC or left the config has its series removed. */
  private ifSeries = new Map<string, { vlan: string; interface: string }>();

  private interfaces(desired: Desired, links: Link[]): void {
    const m = this.metrics;
    const series = new Map<string, { vlan: string; interface: string }>();
    for (const binding of desired.vlans) {
      const link = binding.nic && links.find((l) => l.name === binding.nic!.name);
      if (!link?.stats) continue;
      const labels = { vlan: binding.vlan.name, interface: link.name };
      series.set(`${labels.vlan} ${labels.interface}`, labels);
      const s = link.stats;
      for (const [counter, value, key] of [
        [m.rxBytes, s.rxBytes, 'rxb'], [m.rxPackets, s.rxPackets, 'rxp'], [m.rxDrops, s.rxDropped, 'rxd'],
        [m.txBytes, s.txBytes, 'txb'], [m.txPackets, s.txPackets, 'txp'], [m.txDrops, s.txDropped, 'txd'],
      ] as const) {
        // Keyed by ifindex: a NIC re-attached under the same name starts from zero again.
        counter.inc(labels, this.mono.delta(`if/${link.index}/${link.name}/${key}`, value));
      }
    }
    for (const [key, labels] of this.ifSeries) {
      if (series.has(key)) continue;
      for (const counter of [m.rxBytes, m.rxPackets, m.rxDrops, m.txBytes, m.txPackets, m.txDrops]) counter.remove(labels);
    }
    this.ifSeries = series;
  }
}
