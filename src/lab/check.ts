/**
 * `lab check`: real packets through the router, compared with what the config allows (expect.ts).
 *
 * What is probed, per ordered pair of zones (each VLAN's client, and the Internet host on the uplink side):
 * - ping, tcp/22 and tcp/80 between VLAN clients, from the Internet host into each VLAN, and ping, tcp/80 from each
 *   VLAN to the Internet host (the baseline);
 * - for every forwarding rule, from and to the hosts it names: the ports it names (a range by its first and last
 *   port), a port just outside each range, and the other transport on its first port (a rule without ports: a
 *   usual port of its protocol, tcp/22 or udp/53; a rule for every protocol: ping, tcp/22 and udp/53). A rule that
 *   names an address or a prefix is probed from / to a lab host it covers (topology.ts gives the clients those
 *   addresses), or reported as not probed when the lab can have no host there (the gateway, the router's NIC);
 * - every port forward, from the Internet host to the router's uplink address.
 * Probes are deduplicated, and at most MAX_PROBES run (the baseline first, then each rule's named ports, the
 * ports outside them, the other transport): the check says how many it left out.
 *
 * Agents serve every probed TCP and UDP port on the namespaces probed. The connect probes of one namespace run
 * from one agent process, a limited number in flight; pings run as processes, as many at once. The agents' replies
 * say which source the server saw and on which address:port it was reached, so the check also proves the NAT:
 * between VLANs and from the uplink the source is unchanged, the Internet host sees the masquerade / snat address
 * (or the VLAN host's own, without NAT), and a port forward lands on its target host.
 * planLabProbes is the plan as data (pure); labCheck runs it and always stops its agents.
 */
import type { Config, ForwardingRule } from '../config/schema.js';
import { parsePorts } from '../config/validate.js';
import type { CommandRunner } from '../exec/runner.js';
import { contains, parseAddress, parseCidr } from '../net/ipv4.js';
import type { AgentSocket } from './agent.js';
import { expectedPortForwardVerdict, expectedUplinkNat, expectedVerdict, zoneOfAddress, type ProbeProto, type Verdict } from './expect.js';
import { mapLimit, runProbe, runProbeBatch, startAgent, type ProbeOutcome, type ProbeSpec, type RunningAgent } from './probe.js';
import type { LabTopology } from './topology.js';

/** The column / row name of the Internet side. */
export const INTERNET = 'internet';
/** At most this many probes per check. */
export const MAX_PROBES = 200;

export interface PlannedProbe {
  readonly from: string;
  readonly to: string;
  /** "ping", "tcp/22", "udp/53", "fwd tcp/2222", with " from A", " to B" or " from A to B" when it is sent from or
   *  to another host than the zone's own (an address a rule names). */
  readonly probe: string;
  readonly proto: ProbeProto;
  readonly port?: number;
  /** "from A", "to B", "from A to B" or "" (the zones' own hosts). */
  readonly hosts: string;
  /** A port forward's probe. */
  readonly forward?: boolean;
  readonly spec: ProbeSpec;
  readonly expected: Verdict;
  /** When the probe passes: the source the server must see, and the address:port it must be reached on. */
  readonly expectedPeer?: string;
  readonly expectedLocal?: string;
  readonly note?: string;
}

export interface LabProbePlan {
  readonly probes: readonly PlannedProbe[];
  /** Rules the lab cannot probe, each said with why. */
  readonly notProbed: readonly string[];
  /** How many probes were planned before the cap (equal to probes.length when none was left out). */
  readonly planned: number;
}

export interface CheckRow {
  readonly from: string;
  readonly to: string;
  readonly probe: string;
  readonly proto: ProbeProto;
  readonly port?: number;
  readonly hosts: string;
  readonly forward?: boolean;
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

/** A place probes are sent from or to: a VLAN client's address (its own, or one a rule names), or the Internet host. */
interface Endpoint {
  /** The zone as expect.ts names it: a VLAN name or "uplink". */
  readonly zone: string;
  /** Its row / column in the matrix: a VLAN name or INTERNET. */
  readonly column: string;
  readonly namespace: string;
  readonly address: string;
  /** The zone's own host (the client's address, the Internet host), not an address a rule names. */
  readonly own: boolean;
}

interface Wanted {
  readonly proto: ProbeProto;
  readonly port?: number;
  /** 0 the baseline, 1 what a rule names, 2 just outside it, 3 the other transport. The cap keeps lower first. */
  readonly tier: 0 | 1 | 2 | 3;
}

const UPLINK = 'uplink';
const TCP_PORT = 22;
const UDP_PORT = 53;

/**
 * What to send for one forwarding rule: the ports it names (first and last of a range), one just outside each
 * range (not a catch-all: it has ports), and the other transport on its first port. Without ports, a usual port of
 * its protocol and another protocol; for every protocol, one of each. Pure.
 */
export function ruleProbes(rule: ForwardingRule): Wanted[] {
  const proto = rule.proto ?? 'all';
  if (rule.ports !== undefined && (proto === 'tcp' || proto === 'udp')) {
    const ranges = parsePorts(rule.ports);
    const inside = (p: number) => ranges.some(([low, high]) => p >= low && p <= high);
    const out: Wanted[] = [];
    for (const [low, high] of ranges) for (const port of low === high ? [low] : [low, high]) out.push({ proto, port, tier: 1 });
    for (const [low, high] of ranges) {
      const outside = [high + 1, low - 1].find((p) => p >= 1 && p <= 65535 && !inside(p));
      if (outside !== undefined) out.push({ proto, port: outside, tier: 2 });
    }
    out.push({ proto: proto === 'tcp' ? 'udp' : 'tcp', port: ranges[0]![0], tier: 3 });
    return out;
  }
  switch (proto) {
    case 'tcp': return [{ proto: 'tcp', port: TCP_PORT, tier: 1 }, { proto: 'udp', port: UDP_PORT, tier: 3 }];
    case 'udp': return [{ proto: 'udp', port: UDP_PORT, tier: 1 }, { proto: 'tcp', port: TCP_PORT, tier: 3 }];
    case 'icmp': return [{ proto: 'icmp', tier: 1 }, { proto: 'tcp', port: TCP_PORT, tier: 3 }];
    default: return [{ proto: 'icmp', tier: 1 }, { proto: 'tcp', port: TCP_PORT, tier: 1 }, { proto: 'udp', port: UDP_PORT, tier: 1 }];
  }
}

export function planLabProbes(topology: LabTopology, config: Config, timeoutMs = 1500, maxProbes = MAX_PROBES): LabProbePlan {
  const u = topology.uplink;
  const internet: Endpoint = { zone: UPLINK, column: INTERNET, namespace: topology.inet, address: u.internetHost, own: true };
  const ownHost = (v: LabTopology['vlans'][number]): Endpoint => ({ zone: v.name, column: v.name, namespace: v.client.namespace, address: v.client.address, own: true });
  const vlanOwn = topology.vlans.map(ownHost);

  /** The host a rule's from / to is probed at, or why there is none. */
  const endpointOf = (ref: string): Endpoint | string => {
    if (ref === UPLINK) return internet;
    const named = topology.vlans.find((v) => v.name === ref);
    if (named) return ownHost(named);
    const cidr = ref.includes('/') ? parseCidr(ref) : parseCidr(`${ref}/32`);
    const vlan = topology.vlans.find((v) => cidr !== undefined && contains(parseCidr(v.subnet)!, cidr.network));
    if (cidr === undefined || vlan === undefined) return `${ref} is in no VLAN of the lab`;
    const hosts = [vlan.client.address, ...vlan.client.extraAddresses];
    const host = hosts.find((h) => contains(cidr, parseAddress(h)!));
    if (host !== undefined) return { zone: vlan.name, column: vlan.name, namespace: vlan.client.namespace, address: host, own: host === vlan.client.address };
    const n = cidr.prefix === 32 ? cidr.network : undefined;
    const why = n === parseAddress(vlan.gateway) ? `it is ${vlan.name}'s gateway address, the router itself`
      : n === parseAddress(vlan.routerAddress) ? `it is the address the lab gives the router's NIC on ${vlan.name}`
      : cidr.prefix === 32 ? `the lab has no host at ${ref} (not a host address of ${vlan.subnet}, or more rule addresses in ${vlan.name} than the lab hosts)`
      : `the lab has no host in ${ref}`;
    return why;
  };

  const candidates = new Map<string, { from: Endpoint; to: Endpoint; want: Wanted; order: number }>();
  const want = (from: Endpoint, to: Endpoint, w: Wanted) => {
    const key = `${from.address}|${to.address}|${w.proto}|${w.port ?? ''}`;
    const seen = candidates.get(key);
    if (seen === undefined) candidates.set(key, { from, to, want: w, order: candidates.size });
    else if (w.tier < seen.want.tier) candidates.set(key, { ...seen, want: w });
  };

  for (const a of vlanOwn) {
    for (const b of vlanOwn) {
      if (a === b) continue;
      for (const w of [{ proto: 'icmp', tier: 0 }, { proto: 'tcp', port: 22, tier: 0 }, { proto: 'tcp', port: 80, tier: 0 }] as const) want(a, b, w);
    }
    for (const w of [{ proto: 'icmp', tier: 0 }, { proto: 'tcp', port: 80, tier: 0 }] as const) want(a, internet, w);
  }
  for (const b of vlanOwn) {
    for (const w of [{ proto: 'icmp', tier: 0 }, { proto: 'tcp', port: 22, tier: 0 }, { proto: 'tcp', port: 80, tier: 0 }] as const) want(internet, b, w);
  }

  const notProbed: string[] = [];
  config.forwarding.rules.forEach((rule, index) => {
    const from = endpointOf(rule.from);
    const to = endpointOf(rule.to);
    const why = [from, to].filter((e): e is string => typeof e === 'string');
    if (typeof from === 'string' || typeof to === 'string') {
      notProbed.push(`forwarding.rules[${index}] (from ${rule.from} to ${rule.to}): ${why.join('; ')}`);
      return;
    }
    for (const w of ruleProbes(rule)) want(from, to, w);
  });

  // The cap keeps the baseline, then what the rules name, and so on, in config order within each tier.
  const all = [...candidates.values()];
  const kept = [...all].sort((x, y) => x.want.tier - y.want.tier || x.order - y.order).slice(0, Math.max(0, maxProbes - config.portForwards.length));
  const columns = [...topology.vlans.map((v) => v.name), INTERNET];
  const hostsOf = (from: Endpoint, to: Endpoint) => {
    const parts = [...(from.own ? [] : [`from ${from.address}`]), ...(to.own ? [] : [`to ${to.address}`])];
    return parts.join(' ');
  };
  const protoRank = { icmp: 0, tcp: 1, udp: 2 } as const;
  kept.sort((x, y) => columns.indexOf(x.from.column) - columns.indexOf(y.from.column)
    || columns.indexOf(x.to.column) - columns.indexOf(y.to.column)
    || Number(!x.from.own) - Number(!y.from.own) || Number(!x.to.own) - Number(!y.to.own)
    || hostsOf(x.from, x.to).localeCompare(hostsOf(y.from, y.to))
    || protoRank[x.want.proto] - protoRank[y.want.proto] || (x.want.port ?? 0) - (y.want.port ?? 0));

  const probes: PlannedProbe[] = kept.map(({ from, to, want: w }) => {
    const hosts = hostsOf(from, to);
    const label = `${w.proto === 'icmp' ? 'ping' : `${w.proto}/${w.port}`}${hosts ? ` ${hosts}` : ''}`;
    const expected = expectedVerdict(config, from.zone, to.zone, w.proto, w.port, to.address, from.address);
    const fromInternet = from === internet;
    const spec: ProbeSpec = {
      namespace: from.namespace,
      kind: w.proto === 'icmp' ? 'ping' : w.proto,
      target: to.address,
      ...(w.port === undefined ? {} : { port: w.port }),
      // The Internet host and a rule's address are secondary addresses of their namespace: sent from them.
      ...(fromInternet || !from.own ? { localAddress: from.address } : {}),
      timeoutMs,
    };
    const base = { from: from.column, to: to.column, probe: label, proto: w.proto, ...(w.port === undefined ? {} : { port: w.port }), hosts, spec, expected };
    if (w.proto === 'icmp') return base;
    const expectedLocal = `${to.address}:${w.port}`;
    if (to.zone !== UPLINK) return { ...base, expectedPeer: from.address, expectedLocal }; // no NAT between VLANs, nor inbound
    const nat = expectedUplinkNat(config, from.zone);
    const seenAs = nat === 'masquerade' ? u.routerAddress : nat === 'snat' ? config.uplink.snatTo! : from.address;
    return { ...base, expectedPeer: seenAs, expectedLocal };
  });

  for (const forward of config.portForwards) {
    const toPort = forward.toPort ?? forward.port;
    probes.push({
      from: INTERNET,
      to: zoneOfAddress(config, forward.to) ?? forward.to,
      probe: `fwd ${forward.proto}/${forward.port}`,
      proto: forward.proto,
      port: forward.port,
      hosts: '',
      forward: true,
      spec: { namespace: topology.inet, kind: forward.proto, target: u.routerAddress, port: forward.port, localAddress: u.internetHost, timeoutMs },
      expected: expectedPortForwardVerdict(config, forward, u.internetHost),
      expectedPeer: u.internetHost,
      expectedLocal: `${forward.to}:${toPort}`,
      note: `to ${forward.to}:${toPort}`,
    });
  }
  return { probes, notProbed, planned: all.length + config.portForwards.length };
}

/** What each namespace's agent serves: every TCP and UDP port probed there, and each port forward's target. TCP
 *  listens on every address; UDP binds the probed address itself, so that replies leave from the address the
 *  probe (and any NAT) expects. */
export function planLabAgents(topology: LabTopology, config: Config, probes: readonly PlannedProbe[] = planLabProbes(topology, config).probes): Map<string, AgentSocket[]> {
  const agents = new Map<string, AgentSocket[]>();
  const add = (ns: string, socket: AgentSocket) => {
    const list = agents.get(ns) ?? [];
    if (!list.some((s) => s.proto === socket.proto && s.port === socket.port && (s.address === socket.address || s.address === '0.0.0.0'))) list.push(socket);
    agents.set(ns, list);
  };
  const namespaceOf = (address: string) => (address === topology.uplink.internetHost ? topology.inet
    : topology.vlans.find((v) => v.client.address === address || v.client.extraAddresses.includes(address))?.client.namespace);
  for (const p of probes) {
    if (p.forward || p.port === undefined || p.spec.kind === 'ping') continue;
    const ns = namespaceOf(p.spec.target);
    if (ns === undefined) continue;
    add(ns, { proto: p.spec.kind, address: p.spec.kind === 'tcp' ? '0.0.0.0' : p.spec.target, port: p.port });
  }
  for (const forward of config.portForwards) {
    const vlan = topology.vlans.find((v) => v.name === zoneOfAddress(config, forward.to));
    if (vlan === undefined) continue;
    const address = forward.proto === 'tcp' ? '0.0.0.0' : forward.to;
    add(vlan.client.namespace, { proto: forward.proto, address, port: forward.toPort ?? forward.port });
  }
  return agents;
}

export async function labCheck(runner: CommandRunner, topology: LabTopology, config: Config, options: CheckOptions = {}): Promise<CheckResult> {
  const started = Date.now();
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
      const detail = [p.note, outcome.detail].filter(Boolean).join('; ');
      return {
        from: p.from, to: p.to, probe: p.probe, proto: p.proto, ...(p.port === undefined ? {} : { port: p.port }), hosts: p.hosts,
        ...(p.forward ? { forward: true } : {}), expected: p.expected, actual: outcome.actual,
        ...(p.expectedPeer ? { expectedPeer: p.expectedPeer } : {}), ...(peer ? { peer } : {}),
        ok: outcome.actual === p.expected && landed, detail,
      };
    });
    const notes = plan.notProbed.map((n) => `not probed: ${n}`);
    if (plan.planned > probes.length) notes.push(`${plan.planned - probes.length} of ${plan.planned} planned probes left out (at most ${MAX_PROBES} per check; the baseline and the ports rules name come first)`);
    const zones = [...topology.vlans.map((v) => v.name), INTERNET];
    return { lab: topology.name, zones, rows, notes, ok: rows.every((r) => r.ok), durationMs: Date.now() - started };
  } finally {
    await Promise.allSettled(agents.map((a) => a.stop()));
  }
}

/** Wider than this, the matrix is printed as one line per pair of zones. */
const MATRIX_WIDTH = 120;

/**
 * A pair's probes in a few words: grouped by the hosts they were sent between, then by protocol and result, ports
 * joined: "ping ✓ tcp/22,80 ✓ tcp/23 ✗ [from 192.168.10.50] tcp/22 ✗". A `!` marks a result the config does not
 * allow, and the Internet column says which source the Internet host saw ("as 203.0.113.2").
 */
function pairText(rows: readonly CheckRow[], toInternet: boolean): string {
  const groups = new Map<string, { hosts: string; head: string; ports: number[]; mark: string }>();
  for (const r of rows) {
    const mark = `${r.actual === 'pass' ? '✓' : '✗'}${r.ok ? '' : '!'}`;
    const head = r.forward ? `fwd ${r.proto}` : r.proto === 'icmp' ? 'ping' : r.proto;
    const key = `${r.hosts}|${head}|${mark}`;
    const group = groups.get(key) ?? { hosts: r.hosts, head, ports: [], mark };
    if (r.port !== undefined) group.ports.push(r.port);
    groups.set(key, group);
  }
  const parts: string[] = [];
  let hosts = '';
  // The zones' own hosts first (port forwards included), then each pair of hosts a rule names.
  for (const g of [...groups.values()].sort((x, y) => Number(x.hosts !== '') - Number(y.hosts !== ''))) {
    if (g.hosts !== hosts) {
      parts.push(`[${g.hosts}]`);
      hosts = g.hosts;
    }
    parts.push(`${g.head}${g.ports.length > 0 ? `/${portList(g.ports)}` : ''} ${g.mark}`);
  }
  const seen = toInternet ? rows.find((r) => r.peer !== undefined && r.hosts === '')?.peer : undefined;
  return seen ? `${parts.join(' ')} as ${seen}` : parts.join(' ');
}

/** Ports as written in a rule: "22,80,9000-9011" (three or more in a row as a range). */
function portList(ports: readonly number[]): string {
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    if (j - i >= 2) out.push(`${sorted[i]}-${sorted[j]}`);
    else out.push(...sorted.slice(i, j + 1).map(String));
    i = j + 1;
  }
  return out.join(',');
}

/** A matrix (rows: from, columns: to), or one line per pair when that is too wide, the mismatches spelled out,
 *  what was not probed, and a summary line. */
export function formatMatrix(result: CheckResult): string {
  const zones = result.zones;
  const cell = (from: string, to: string): string => {
    if (from === to) return '·';
    const rows = result.rows.filter((r) => r.from === from && r.to === to);
    return rows.length === 0 ? '' : pairText(rows, to === INTERNET);
  };
  const header = ['from \\ to', ...zones];
  const table = zones.map((from) => [from, ...zones.map((to) => cell(from, to))]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [`lab ${result.lab}: ✓ passed, ✗ blocked, ! not what the config allows`];
  const matrix = [line(header), ...table.filter((row) => row.slice(1).some((c) => c !== '' && c !== '·')).map(line)];
  if (matrix.every((l) => l.length <= MATRIX_WIDTH)) {
    out.push(...matrix);
  } else {
    const pairs = zones.flatMap((from) => zones.filter((to) => to !== from).map((to) => [`${from} → ${to}`, cell(from, to)] as const)).filter(([, c]) => c !== '');
    const width = Math.max(...pairs.map(([p]) => p.length));
    out.push(...pairs.map(([p, c]) => `${p.padEnd(width)}  ${c}`));
  }
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
  if (result.notes.length > 0) out.push('', ...result.notes);
  const seconds = (result.durationMs / 1000).toFixed(1);
  out.push('', result.ok
    ? `${result.rows.length} probes, all as the config allows (${seconds} s): OK`
    : `${result.rows.length} probes, ${bad.length} not as the config allows (${seconds} s): MISMATCH`);
  return out.join('\n');
}
