/** Plain-text tables of the results, the ratios, and the targets with a clear met / MISSED verdict. */
import type { ApplyResult } from './apply-bench.js';
import { pairsOf, type ContainerStartResult } from './container-start.js';
import type { Condition, ForwardingResult } from './forwarding-bench.js';
import { ms, ratio, type Stats } from './measure.js';
import type { ProfileResult } from './profile.js';
import type { StartupRow } from './startup.js';
import type { SupervisorResult } from './supervisor-bench.js';

const n = (x: number) => Math.round(x).toLocaleString('en-US');

function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>, rightFrom = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: readonly string[]) => r.map((c, i) => (i >= rightFrom ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)].join('\n');
}

/** A size's label, marked when ipset accounting had to be off. */
const tag = (r: ApplyResult) => `${r.label}${r.ipset ? '' : ' (ipset off)'}`;

const timeRow = (what: string, s: Stats): string[] => [what, ms(s.median), ms(s.min), ms(s.max), String(s.n)];
const TIME_HEADER = ['what (milliseconds)', 'median', 'min', 'max', 'n'];

export function applyTable(r: ApplyResult): string {
  const { shape } = r;
  const tables = Object.entries(r.ruleLines.byTable).map(([t, c]) => `${t} ${n(c)}`).join(', ');
  const title = `Apply, ${r.label}${r.ipset ? '' : ' (ipset accounting OFF)'}: ${shape.vlans} VLANs${shape.uplink ? ' + uplink' : ''}, ${shape.partners} partner VLAN(s) × `
    + `${shape.rulesPerPair} forwarding rules each = ${n(r.config.forwarding.rules.length)} config rules → ${n(r.ruleLines.total)} rule lines (${tables})`;
  const p = r.fullParts;
  const rows: string[][] = [
    timeRow('(a) full apply into an empty namespace (`vlan-gateway apply`: read while the config file loads, then reconcileOnce)', r.full),
    timeRow('(a′) the same as a restarted container\'s start: the rendered state from its plan cache', r.fullCached),
    timeRow('(a″) the same as a new container\'s start (the supervisor loads its config file, then reads)', r.fullStart),
    timeRow('      config load: the YAML read, parsed and validated, the templates (as `vlan-gateway apply` / `run`)', p.load),
    timeRow('      observe after the load: 4 reads in parallel (ip, cat, *-save, ipset save), rendering beside them', p.observe),
    timeRow('      parse + plan after the last read (pure JS, until the first write)', p.plan),
    timeRow('      writes, wall time (independent ones side by side)', p.writes),
    timeRow(`        busy: iptables-nft-restore × ${p.restores.median}`, p.restore),
    timeRow(`        busy: ipset restore × ${p.ipsets.median}`, p.ipset),
    timeRow('        busy: other writes (ip -batch, sysctl)', p.otherWrites),
    timeRow(`(b) raw iptables-nft-restore --noflush --wait=10 × ${Object.keys(r.ruleLines.byTable).length} (same payloads, interleaved with (a))`, r.raw),
  ];
  if (r.rawSets) rows.push(timeRow(`    + raw ipset restore of the same set (${n(r.rawSets.members)} members; before (b), timed apart)`, r.rawSets.stats));
  if (r.perRule) rows.push(timeRow(`(c) one iptables-nft process per line (${n(r.perRule.calls)} calls)`, r.perRule.stats));
  rows.push(
    timeRow(`(d) no-op supervisor pass that reads the tables (${r.noopRestores} restores incl. ipset, ${r.noopSteps} steps)`, r.noop),
    timeRow('      observe: 4 reads in parallel (*-save parsed as it comes, ip, cat, ipset list -t)', r.noopParts.observe),
    timeRow('      parse + plan after the last read', r.noopParts.plan),
    timeRow('(d) one iptables-nft-save -c of the applied namespace (each right after a pass)', r.save),
    timeRow('(d) each reading pass minus the save after it', r.noopOverSave),
    timeRow(`(d) no-op supervisor pass, tables known (the save before it found them as planned; ${r.noopKnownSaves} saves)`, r.noopKnown),
    timeRow('      observe: 3 reads in parallel (ip, cat, ipset list -t)', r.noopKnownParts.observe),
    timeRow('      parse + plan after the last read', r.noopKnownParts.plan),
    timeRow('(d) `vlan-gateway apply` with nothing to do (as a new process: config file, every set member read, the plan cache)', r.noopCli),
    timeRow('(d) the same without the plan cache (the YAML parsed, a cold render, as with VLAN_GATEWAY_PLAN_CACHE=off)', r.noopCliCold),
  );
  if (r.noopProcess) {
    rows.push(
      timeRow('(d) the whole `vlan-gateway apply` process with nothing to do (bundle: Node, config load, plan cache)', r.noopProcess.cached),
      timeRow('(d) the same, VLAN_GATEWAY_PLAN_CACHE=off (the YAML parsed and validated, a cold render)', r.noopProcess.off),
    );
  }
  if (r.change) {
    for (const [what, c] of [['a supervisor\'s reload reading the tables', r.change.read], ['a supervisor\'s reload, tables known', r.change.known]] as const) {
      rows.push(
        timeRow(`(e) one-VLAN change, ${what} (${r.change.vlan}: ${c.chains} chain(s) rewritten, ${c.restores} restore, ${c.saves} saves)`, c.stats),
        timeRow('      config load (the changed file)', c.parts.load),
        timeRow('      observe', c.parts.observe),
        timeRow('      parse + plan', c.parts.plan),
        timeRow('      iptables-nft-restore', c.parts.restore),
        timeRow('      ipset restore', c.parts.ipset),
      );
    }
  }
  return `${title}\n${table(TIME_HEADER, rows)}`;
}

export function ratioTable(results: readonly ApplyResult[]): string {
  const cell = (f: (r: ApplyResult) => number | undefined) => results.map((r) => {
    const x = f(r);
    return x === undefined ? '—' : ratio(x);
  });
  const rows: string[][] = [
    ['full apply / raw restore', ...cell((r) => r.full.median / r.raw.median)],
    ['full apply with the plan cache (a restart) / raw restore', ...cell((r) => r.fullCached.median / r.raw.median)],
    ['full apply / (raw restore + raw ipset restore)', ...cell((r) => (r.rawSets ? r.full.median / (r.raw.median + r.rawSets.stats.median) : undefined))],
    ['writes (wall) inside full apply / raw restore', ...cell((r) => r.fullParts.writes.median / r.raw.median)],
    ['restores (busy) inside full apply / raw restore', ...cell((r) => r.fullParts.restore.median / r.raw.median)],
    ['per-rule processes / raw restore', ...cell((r) => (r.perRule ? r.perRule.stats.median / r.raw.median : undefined))],
    ['per-rule processes / full apply', ...cell((r) => (r.perRule ? r.perRule.stats.median / r.full.median : undefined))],
    ['no-op supervisor pass reading the tables / one save', ...cell((r) => r.noop.median / r.save.median)],
    ['no-op supervisor pass, tables known / one save', ...cell((r) => r.noopKnown.median / r.save.median)],
    ['no-op `vlan-gateway apply` / one save', ...cell((r) => r.noopCli.median / r.save.median)],
    ['no-op `vlan-gateway apply`, plan cache off / one save', ...cell((r) => r.noopCliCold.median / r.save.median)],
    ['one-VLAN change, supervisor reading the tables / its full apply (a″)', ...cell((r) => (r.change ? r.change.read.stats.median / r.fullStart.median : undefined))],
    ['one-VLAN change, supervisor, tables known / its full apply (a″)', ...cell((r) => (r.change ? r.change.known.stats.median / r.fullStart.median : undefined))],
    ['one-VLAN change reading the tables / full apply (a)', ...cell((r) => (r.change ? r.change.read.stats.median / r.full.median : undefined))],
  ];
  return `Ratios (of medians)\n${table(['ratio', ...results.map(tag)], rows)}`;
}

export interface Verdict {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean;
}

export function verdicts(results: readonly ApplyResult[]): Verdict[] {
  const out: Verdict[] = [];
  for (const r of results) {
    const limit = 1.3 * r.raw.median;
    out.push({
      target: `${tag(r)}: full apply ≤ 1.3× raw restore`,
      measured: `${ratio(r.full.median / r.raw.median)} (${ms(r.full.median)} ms vs ${ms(r.raw.median)} ms; limit ${ms(limit)} ms)`,
      met: r.full.median <= limit,
    });
    out.push({
      target: `${tag(r)}: the same, a restarted container's (rendered state from its plan cache) [beyond the issue]`,
      measured: `${ratio(r.fullCached.median / r.raw.median)} (${ms(r.fullCached.median)} ms vs ${ms(r.raw.median)} ms)`,
      met: r.fullCached.median <= limit,
    });
    out.push({
      target: `${tag(r)}: no-op apply runs zero restores (and no other write)`,
      measured: `${r.noopRestores} restores, ${r.noopWrites} other writes, ${r.noopSteps} steps`,
      met: r.noopRestores === 0 && r.noopWrites === 0,
    });
    out.push({
      target: `${tag(r)}: no-op apply ≤ one save + 20 ms (supervisor, reading the tables)`,
      measured: `${ms(r.noop.median)} ms vs ${ms(r.save.median)} + 20 ms`,
      met: r.noop.median <= r.save.median + 20,
    });
    out.push({
      target: `${tag(r)}: no-op apply ≤ one save + 20 ms (supervisor, tables known)`,
      measured: `${ms(r.noopKnown.median)} ms vs ${ms(r.save.median)} + 20 ms (${r.noopKnownSaves} saves)`,
      met: r.noopKnown.median <= r.save.median + 20 && r.noopKnownSaves === 0,
    });
    out.push({
      target: `${tag(r)}: no-op apply ≤ one save + 20 ms (\`vlan-gateway apply\`)`,
      measured: `${ms(r.noopCli.median)} ms vs ${ms(r.save.median)} + 20 ms`,
      met: r.noopCli.median <= r.save.median + 20,
    });
    out.push({
      target: `${tag(r)}: no-op apply ≤ one save + 20 ms (\`vlan-gateway apply\`, plan cache off)`,
      measured: `${ms(r.noopCliCold.median)} ms vs ${ms(r.save.median)} + 20 ms`,
      met: r.noopCliCold.median <= r.save.median + 20,
    });
    if (r.change) {
      for (const [what, c] of [['reading the tables', r.change.read], ['supervisor, tables known', r.change.known]] as const) {
        out.push({
          // The issue names the change at 10k; at 1k it is measured as well.
          // A supervisor's reload against the supervisor's own full apply, a new container's start pass (a″).
          target: `${tag(r)}: one-VLAN change ≤ 0.5× full apply (${what}; vs the supervisor's start)${r.label === '10k' ? '' : ' [beyond the issue]'}`,
          measured: `${ratio(c.stats.median / r.fullStart.median)} (${ms(c.stats.median)} ms vs ${ms(r.fullStart.median)} ms)`,
          met: c.stats.median <= 0.5 * r.fullStart.median,
        });
      }
    }
  }
  return out;
}

export function verdictTable(v: readonly Verdict[]): string {
  return `Targets\n${table(['target', 'measured', 'verdict'], v.map((x) => [x.target, x.measured, x.met ? 'met' : 'MISSED']), 99)}`;
}

const LABELS: Record<Condition, (f: ForwardingResult) => string> = {
  none: () => '(i) no rules',
  notrack: () => '(i) control: only raw CT --notrack (used by the worst path)',
  linear: () => '(iii) 1,000 linear non-matching FORWARD rules',
  ours: (f) => `(ii) our rules, ${f.shape.vlans} VLANs (data packets ESTABLISHED: source check, then accepted)`,
  'ours-new': (f) => `(ii) our rules, ${f.shape.vlans} VLANs, worst path (notrack: ${f.worstPathRules} rules/packet)`,
};

export function forwardingTable(f: ForwardingResult): string {
  const none = f.byCondition.none.forwarded;
  const k = (x: number) => `${(x / 1000).toFixed(1)}k`;
  const pct = (x: number, base: number) => `${(100 * x / base).toFixed(0)}%`;
  const rows = (['none', 'notrack', 'ours', 'ours-new', 'linear'] as const).map((c) => {
    const s = f.byCondition[c];
    return [LABELS[c](f), k(s.forwarded.median), `${k(s.forwarded.min)}–${k(s.forwarded.max)}`,
      pct(s.forwarded.median, none.median), pct(s.forwarded.max, none.max), k(s.sent.median), k(s.received.median)];
  });
  return `Forwarding${f.ipset ? '' : ' (ipset accounting OFF)'}: 64-byte UDP, A (v${f.shape.vlans}) → router → B (v${f.shape.vlans - 1}), `
    + `iperf3 -u -l 64 -b 0 -t ${f.seconds}, ${none.n} interleaved rounds; fwd pps = router egress NIC tx counter / iperf3 seconds\n`
    + `${table(['condition', 'fwd pps', 'min–max', 'median vs none', 'best vs none', 'sent pps', 'recv pps'], rows)}\n`
    + `worst path vs its control (same notrack rule, no other rules): ${pct(f.byCondition['ours-new'].forwarded.median, f.byCondition.notrack.forwarded.median)} (medians)\n`
    + `worst-path check: ${f.pairChainName}'s last rule counted ${n(f.pairChainPackets)} packets in the last worst-path run`;
}

export function startupTable(rows: readonly StartupRow[]): string {
  return `Process start-up (not included in the in-process figures above)\n${table(TIME_HEADER, rows.map((r) => timeRow(r.what, r.stats)))}`;
}

export function profileTable(label: string, p: ProfileResult): string {
  const rows = [
    timeRow('parseSave of the applied namespace\'s iptables-nft-save -c', p.parseSave),
    timeRow('planDesired (render + hash all chains)', p.planDesired),
    timeRow('diff against an empty namespace', p.diffFull),
    timeRow('diff against the applied namespace (no-op)', p.diffNoop),
  ];
  const top = p.top.map((e) => [e.fn, ms(e.inclusiveMs), ms(e.selfMs), `${(100 * e.inclusiveMs / p.profiledMs).toFixed(0)}%`]);
  return `In-process profile, ${label} (no kernel; facts from the applied namespace)\n${table(TIME_HEADER, rows)}\n`
    + `${p.zones} zones, ${n(p.forwardingRules)} forwarding rules (each filed under its one zone pair in a single pass)\n`
    + `CPU profile of one planDesired (${ms(p.profiledMs)} ms wall), functions of src/ by inclusive time:\n`
    + table(['function', 'incl ms', 'self ms', 'of run'], top);
}

export function supervisorTable(s: SupervisorResult): string {
  const readyRows = s.ready.map((r) => timeRow(`start to /readyz, ${r.vlans} VLANs (fresh namespace${r.codeCache ? '' : ', no code cache'}${r.planCache ? ', the plan cache of the start before' : ''})`, r.stats));
  const cached = s.ready.find((r) => r.vlans === 2 && r.codeCache && !r.planCache);
  const cold = s.ready.find((r) => r.vlans === 2 && !r.codeCache);
  const restarted = s.ready.find((r) => r.vlans === 100 && r.planCache);
  const fresh = s.ready.find((r) => r.vlans === 100 && r.codeCache && !r.planCache);
  const targets = [
    // Judged by a new container's start (no plan cache): a restarted container's is the faster case.
    ...s.ready.filter((r) => r.codeCache && !r.planCache).map((r) => ({ target: `ready ≤ 1 s (${r.vlans} VLANs)`, measured: `${ms(r.stats.median)} ms`, met: r.stats.median <= 1000 })),
    { target: `scrape ≤ 10 ms (${s.scrape.vlans} VLANs)`, measured: `${ms(s.scrape.stats.median)} ms median, ${ms(s.scrape.p99)} ms p99`, met: s.scrape.stats.median <= 10 },
    {
      target: 'RSS ≤ 80 MB, running (after 2 stats readings and 2,000 scrapes)',
      measured: `${s.rssMb.steady.toFixed(1)} MB (${s.rssMb.afterStart.toFixed(1)} after start, ${s.rssMb.after1000Scrapes.toFixed(1)} after the first 1,000 scrapes)`,
      met: s.rssMb.steady <= 80,
    },
    { target: 'hot-plug ≤ 1 s (NIC moved in → gateway answers ping)', measured: `${ms(s.hotplug.median)} ms`, met: s.hotplug.median <= 1000 },
  ];
  return [
    'Supervisor (vlan-gateway run, bundled CLI, --netns)',
    table(TIME_HEADER, [
      ...readyRows,
      timeRow(`GET /metrics, ${s.scrape.vlans} VLANs, ${s.scrape.series} series (client-side)`, s.scrape.stats),
      timeRow('hot-plug: NIC moved in → its gateway address answers ping', s.hotplug),
    ]),
    ...(cached && cold ? [`ready at 2 VLANs with the code cache / without it: ${(cached.stats.median / cold.stats.median).toFixed(2)}×`] : []),
    ...(restarted && fresh ? [`ready at 100 VLANs with the plan cache of the start before / without it: ${(restarted.stats.median / fresh.stats.median).toFixed(2)}×`] : []),
    '',
    verdictTable(targets),
  ].join('\n');
}

/**
 * The container-like starts (container-start.ts), with the 2-VLAN fresh-namespace figure of supervisorTable when it
 * was measured in this run (at --log-level warn, not interleaved with these).
 */
export function containerStartTable(r: ContainerStartResult, before?: SupervisorResult): string {
  type Case = ContainerStartResult['rows'][number]['case'];
  const what = (c: Case) => (c.ipForward === 0
    ? 'ip_forward=0 at start (the gateway turns it on), NICs only'
    : `ip_forward=1 (--sysctl) + Docker's DNS rule, ${pairsOf(c) === 0 ? 'NICs only' : `${c.hosts[0]} + ${c.hosts[1]} hosts sending via the gateway's MAC: ${pairsOf(c)} pairs`}`);
  const short = (c: Case) => `ip_forward=${c.ipForward}${c.ipForward === 0 ? '' : `, ${pairsOf(c) === 0 ? 'no flows' : `${pairsOf(c)} pairs`}`}`;
  const rows: string[][] = [];
  for (const row of r.rows) {
    rows.push(timeRow(`start to /readyz, ${what(row.case)}${row.tracked > 0 ? ` (${row.tracked} flows tracked)` : ''}`, row.ready));
    rows.push(timeRow('      start pass, to its record (its durationMs; ends after the clear)', row.pass));
    if (row.clear) rows.push(timeRow(`      /readyz seen 200 → 'cleared ${n(row.cleared.median)} flows' logged (the clear, after ready; ${row.clear.min > 0 ? 'in every start' : 'NOT in every start'})`, row.clear));
  }
  const find = (f: (c: ContainerStartResult['rows'][number]) => boolean) => r.rows.find(f);
  const off = find((x) => x.case.ipForward === 0);
  const on = find((x) => x.case.ipForward === 1 && pairsOf(x.case) === 0);
  const most = [...r.rows].sort((a, b) => pairsOf(b.case) - pairsOf(a.case))[0];
  const reference = before?.ready.find((x) => x.vlans === r.vlans && x.codeCache && !x.planCache);
  const notes = [
    ...(reference ? [`(the ${r.vlans}-VLAN fresh-namespace start above, at --log-level warn, measured apart: ${ms(reference.stats.median)} ms median)`] : []),
    ...r.rows.filter((x) => x !== off && off).map((x) => `ready, ${short(x.case)} / ${short(off!.case)}: ${ratio(x.ready.median / off!.ready.median)}; start pass ${ms(x.pass.median)} vs ${ms(off!.pass.median)} ms`),
    ...(on && most && pairsOf(most.case) > 0
      ? [`the clear's deletes at ${pairsOf(most.case)} pairs (${pairsOf(most.case)} × conntrack -D): start pass ${ms(most.pass.median)} − ${ms(on.pass.median)} ms (no flows) = ${ms(most.pass.median - on.pass.median)} ms (medians), after /readyz 200`]
      : []),
  ];
  const targets = r.rows.filter((x) => x.case.ipForward === 1).map((x) => ({
    target: `ready ≤ 1 s (${r.vlans} VLANs, container-like: ${short(x.case)}) [beyond the issue]`, measured: `${ms(x.ready.median)} ms`, met: x.ready.median <= 1000,
  }));
  return [
    `Supervisor start as in a container (${r.vlans} VLANs, bundled CLI, --netns, --log-level info; the cases interleaved round by round, fresh namespaces each)`,
    table(TIME_HEADER, rows),
    ...notes,
    '',
    verdictTable(targets),
  ].join('\n');
}
