/**
 * `lab check`: real packets through the router, compared with what the config allows (expect.ts).
 *
 * Agents serve TCP 22 and 80 on every VLAN client and on the Internet host (plus each port forward's target
 * port on its VLAN host). Then, a few at a time: every client pings and connects (tcp/22, tcp/80) to every
 * other client, pings and connects (tcp/80) to the Internet host, and the Internet host connects to the
 * router's uplink address for each port forward. The agents' replies say which source the server saw and on
 * which address:port it was reached, so the check also proves the NAT: between VLANs the source is unchanged,
 * the Internet host sees the masquerade / snat address, and a port forward lands on its target host.
 * planLabProbes is the plan as data (pure); labCheck runs it and always stops its agents.
 */
import type { Config } from '../config/schema.js';
import type { CommandRunner } from '../exec/runner.js';
import type { AgentSocket } from './agent.js';
import { expectedPortForwardVerdict, expectedUplinkNat, expectedVerdict, zoneOfAddress, type Verdict } from './expect.js';
import { mapLimit, runProbe, startAgent, type ProbeSpec, type RunningAgent } from './probe.js';
import type { LabTopology } from './topology.js';

/** The column / row name of the Internet side. */
export const INTERNET = 'internet';

export interface PlannedProbe {
  readonly from: string;
  readonly to: string;
  /** "ping", "tcp/22", "fwd tcp/2222". */
  readonly probe: string;
  readonly spec: ProbeSpec;
  readonly expected: Verdict;
  /** When the probe passes: the source the server must see, and the address:port it must be reached on. */
  readonly expectedPeer?: string;
  readonly expectedLocal?: string;
  readonly note?: string;
}

export interface CheckRow {
  readonly from: string;
  readonly to: string;
  readonly probe: string;
  readonly expected: Verdict;
  readonly actual: Verdict;
  readonly expectedPeer?: string;
  /** The source address the server saw (tcp/udp probes that passed). */
  readonly peer?: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface CheckResult {
  readonly lab: string;
  readonly zones: readonly string[];
  readonly rows: readonly CheckRow[];
  readonly ok: boolean;
  readonly durationMs: number;
}

export interface CheckOptions {
  /** Probes in flight at once (default 4). */
  readonly concurrency?: number;
  /** Per-probe timeout (default 1500 ms; ping rounds it to whole seconds). */
  readonly timeoutMs?: number;
}

const VLAN_PORTS = [22, 80] as const;
const INTERNET_PORTS = [80] as const;

export function planLabProbes(topology: LabTopology, config: Config, timeoutMs = 1500): PlannedProbe[] {
  const probes: PlannedProbe[] = [];
  const u = topology.uplink;
  for (const a of topology.vlans) {
    const ns = a.client.namespace;
    for (const b of topology.vlans) {
      if (b === a) continue;
      const dst = b.client.address;
      probes.push({
        from: a.name, to: b.name, probe: 'ping', spec: { namespace: ns, kind: 'ping', target: dst, timeoutMs },
        expected: expectedVerdict(config, a.name, b.name, 'icmp', undefined, dst, a.client.address),
      });
      for (const port of VLAN_PORTS) {
        probes.push({
          from: a.name, to: b.name, probe: `tcp/${port}`, spec: { namespace: ns, kind: 'tcp', target: dst, port, timeoutMs },
          expected: expectedVerdict(config, a.name, b.name, 'tcp', port, dst, a.client.address),
          expectedPeer: a.client.address, // no NAT between VLANs
          expectedLocal: `${dst}:${port}`,
        });
      }
    }
    const nat = expectedUplinkNat(config, a.name);
    const seenAs = nat === 'masquerade' ? u.routerAddress : nat === 'snat' ? config.uplink.snatTo : undefined;
    const toInternet = (proto: 'icmp' | 'tcp', port?: number) => {
      const verdict = expectedVerdict(config, a.name, 'uplink', proto, port, u.internetHost, a.client.address);
      // Without NAT the Internet host sees a private source it has no route back to: nothing comes back.
      return verdict === 'pass' && nat === 'none' ? 'blocked' : verdict;
    };
    const note = nat === 'none' ? 'not NATed, so the Internet host cannot answer' : undefined;
    probes.push({
      from: a.name, to: INTERNET, probe: 'ping', spec: { namespace: ns, kind: 'ping', target: u.internetHost, timeoutMs },
      expected: toInternet('icmp'), ...(note ? { note } : {}),
    });
    for (const port of INTERNET_PORTS) {
      probes.push({
        from: a.name, to: INTERNET, probe: `tcp/${port}`, spec: { namespace: ns, kind: 'tcp', target: u.internetHost, port, timeoutMs },
        expected: toInternet('tcp', port),
        ...(seenAs ? { expectedPeer: seenAs } : {}),
        expectedLocal: `${u.internetHost}:${port}`,
        ...(note ? { note } : {}),
      });
    }
  }
  for (const forward of config.portForwards) {
    const toPort = forward.toPort ?? forward.port;
    probes.push({
      from: INTERNET,
      to: zoneOfAddress(config, forward.to) ?? forward.to,
      probe: `fwd ${forward.proto}/${forward.port}`,
      spec: { namespace: topology.inet, kind: forward.proto, target: u.routerAddress, port: forward.port, localAddress: u.internetHost, timeoutMs },
      expected: expectedPortForwardVerdict(config, forward, u.internetHost),
      expectedPeer: u.internetHost,
      expectedLocal: `${forward.to}:${toPort}`,
      note: `to ${forward.to}:${toPort}`,
    });
  }
  return probes;
}

/** What each namespace's agent serves: tcp/22 and tcp/80 everywhere, plus each port forward's target. */
export function planLabAgents(topology: LabTopology, config: Config): Map<string, AgentSocket[]> {
  const agents = new Map<string, AgentSocket[]>();
  const add = (ns: string, socket: AgentSocket) => {
    const list = agents.get(ns) ?? [];
    if (!list.some((s) => s.proto === socket.proto && s.port === socket.port && (s.address === socket.address || s.address === '0.0.0.0'))) list.push(socket);
    agents.set(ns, list);
  };
  for (const v of topology.vlans) for (const port of VLAN_PORTS) add(v.client.namespace, { proto: 'tcp', address: '0.0.0.0', port });
  for (const port of VLAN_PORTS) add(topology.inet, { proto: 'tcp', address: '0.0.0.0', port });
  for (const forward of config.portForwards) {
    const vlan = topology.vlans.find((v) => v.name === zoneOfAddress(config, forward.to));
    if (vlan === undefined) continue;
    // UDP binds the target address itself, so that replies leave from the address the DNAT expects.
    const address = forward.proto === 'tcp' ? '0.0.0.0' : forward.to;
    add(vlan.client.namespace, { proto: forward.proto, address, port: forward.toPort ?? forward.port });
  }
  return agents;
}

export async function labCheck(runner: CommandRunner, topology: LabTopology, config: Config, options: CheckOptions = {}): Promise<CheckResult> {
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 1500;
  const concurrency = options.concurrency ?? 4;
  const probes = planLabProbes(topology, config, timeoutMs);
  const ttlSeconds = 30 + Math.ceil((probes.length * (timeoutMs + 1000)) / concurrency / 1000);
  const agents: RunningAgent[] = [];
  try {
    const starting = [...planLabAgents(topology, config)].map(([ns, sockets]) => startAgent(runner, ns, sockets, ttlSeconds));
    const settled = await Promise.allSettled(starting);
    for (const s of settled) if (s.status === 'fulfilled') agents.push(s.value);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;

    const rows = await mapLimit(probes, concurrency, async (p): Promise<CheckRow> => {
      const outcome = await runProbe(runner, p.spec);
      const peer = outcome.reply?.peer;
      const landed = outcome.actual !== 'pass' || (
        (p.expectedPeer === undefined || peer === p.expectedPeer)
        && (p.expectedLocal === undefined || outcome.reply === undefined || outcome.reply.local === p.expectedLocal));
      const detail = [p.note, outcome.detail].filter(Boolean).join('; ');
      return {
        from: p.from, to: p.to, probe: p.probe, expected: p.expected, actual: outcome.actual,
        ...(p.expectedPeer ? { expectedPeer: p.expectedPeer } : {}), ...(peer ? { peer } : {}),
        ok: outcome.actual === p.expected && landed, detail,
      };
    });
    const zones = [...topology.vlans.map((v) => v.name), INTERNET];
    return { lab: topology.name, zones, rows, ok: rows.every((r) => r.ok), durationMs: Date.now() - started };
  } finally {
    await Promise.allSettled(agents.map((a) => a.stop()));
  }
}

/** A matrix (rows: from, columns: to), the mismatches spelled out, and a summary line. */
export function formatMatrix(result: CheckResult): string {
  const zones = result.zones;
  const cell = (from: string, to: string): string => {
    if (from === to) return '·';
    const rows = result.rows.filter((r) => r.from === from && r.to === to);
    if (rows.length === 0) return '';
    const marks = rows.map((r) => `${r.probe} ${r.actual === 'pass' ? '✓' : '✗'}${r.ok ? '' : '!'}`).join(' ');
    const seen = to === INTERNET ? rows.find((r) => r.peer !== undefined)?.peer : undefined;
    return seen ? `${marks} as ${seen}` : marks;
  };
  const header = ['from \\ to', ...zones];
  const table = zones.map((from) => [from, ...zones.map((to) => cell(from, to))]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [
    `lab ${result.lab}: ✓ passed, ✗ blocked, ! not what the config allows`,
    line(header),
    ...table.filter((row) => row.slice(1).some((c) => c !== '' && c !== '·')).map(line),
  ];
  const bad = result.rows.filter((r) => !r.ok);
  if (bad.length > 0) {
    out.push('', 'mismatches:');
    for (const r of bad) {
      const why = r.actual !== r.expected
        ? `the config says ${r.expected}, got ${r.actual}`
        : `passed, but not as configured (expected the server to see ${r.expectedPeer ?? 'the sender'})`;
      out.push(`  ${r.from} → ${r.to} ${r.probe}: ${why} (${r.detail})`);
    }
  }
  const seconds = (result.durationMs / 1000).toFixed(1);
  out.push('', result.ok
    ? `${result.rows.length} probes, all as the config allows (${seconds} s): OK`
    : `${result.rows.length} probes, ${bad.length} not as the config allows (${seconds} s): MISMATCH`);
  return out.join('\n');
}
