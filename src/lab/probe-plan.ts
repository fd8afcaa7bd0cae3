/**
 * What `lab check` sends, and what it expects of each probe (expect.ts).
 *
 * What is probed, per ordered pair of zones (each VLAN's client, and the Internet host on the uplink side):
 * - ping, tcp/22 and tcp/80 between VLAN clients, from the Internet host into each VLAN, and ping, tcp/80 from each
 *   VLAN to the Internet host (the baseline);
 * - for every forwarding rule, from and to the hosts it names: the ports it names (a range by its first and last
 *   port), a port just outside each range, and the other transport on its first port (a rule without ports: a
 *   usual port of its protocol, tcp/22 or udp/53; a rule for every protocol: ping, tcp/22 and udp/53). A rule that
 *   names an address or a prefix is probed from / to a lab host it covers (topology.ts gives the clients those
 *   addresses), or reported as not probed when the lab can have no host there (the gateway, the router's NIC);
 * - every port forward, from the Internet host to the router's uplink address: its port, or a range by its first
 *   and last port and one port just outside it (no forward takes that one: the router itself refuses it, though the
 *   forward's host listens there too, so a DNAT wider than the range would be seen).
 * Probes are deduplicated, and at most MAX_PROBES run: the rules' probes first (what the user wrote and wants tried:
 * the ports they name, then those just outside them, then the other transport), then the baseline; the check says
 * how many it left out, and of which rules (from 8 VLANs on, the baseline alone is more than the cap).
 *
 * Agents serve every probed TCP and UDP port on the namespaces probed. The connect probes of one namespace run
 * from one agent process, a limited number in flight; pings run as processes, as many at once. The agents' replies
 * say which source the server saw and on which address:port it was reached, so the check also proves the NAT:
 * between VLANs and from the uplink the source is unchanged, the Internet host sees the masquerade / snat address
 * (or the VLAN host's own, without NAT), and a port forward lands on its target host. Since every probed port is
 * served, a probe that is blocked was stopped on the way: it must be stopped as the config says, refused by a
 * `reject` (a TCP reset, an ICMP port unreachable) and by the router itself on a port no forward takes, and with no answer by
 * a `drop` or a default.
 * Pure: the plan as data. labCheck (check.ts) runs it and always stops its agents; matrix.ts prints the result.
 */
import { forwardedRange, type Config, type ForwardingRule, type PortForward } from '../config/schema.js';
import { parsePorts } from '../config/validate.js';
import { contains, parseAddress, parseCidr } from '../net/ipv4.js';
import type { AgentSocket } from './agent.js';
import {
  expectedPortForwardVerdict, expectedStop, expectedUplinkNat, forwardedToPort, forwardTaking, zoneOfAddress, type ProbeProto, type Stop, type Verdict,
} from './expect.js';
import type { ProbeSpec } from './probe.js';
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
  /** When it is blocked: how (a reject is refused, a drop and the defaults get no answer). */
  readonly expectedStop?: Stop;
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
  /** Rules some of whose probes the cap left out, each with those probes: a check that says OK has not tried them. */
  readonly capped: readonly string[];
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
  /** 0 what a rule names, 1 just outside its ports, 2 the other transport, 3 the baseline. The cap keeps lower first. */
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
    for (const [low, high] of ranges) for (const port of low === high ? [low] : [low, high]) out.push({ proto, port, tier: 0 });
    for (const [low, high] of ranges) {
      const outside = [high + 1, low - 1].find((p) => p >= 1 && p <= 65535 && !inside(p));
      if (outside !== undefined) out.push({ proto, port: outside, tier: 1 });
    }
    out.push({ proto: proto === 'tcp' ? 'udp' : 'tcp', port: ranges[0]![0], tier: 2 });
    return out;
  }
  switch (proto) {
    case 'tcp': return [{ proto: 'tcp', port: TCP_PORT, tier: 0 }, { proto: 'udp', port: UDP_PORT, tier: 2 }];
    case 'udp': return [{ proto: 'udp', port: UDP_PORT, tier: 0 }, { proto: 'tcp', port: TCP_PORT, tier: 2 }];
    case 'icmp': return [{ proto: 'icmp', tier: 0 }, { proto: 'tcp', port: TCP_PORT, tier: 2 }];
    default: return [{ proto: 'icmp', tier: 0 }, { proto: 'tcp', port: TCP_PORT, tier: 0 }, { proto: 'udp', port: UDP_PORT, tier: 0 }];
  }
}

/**
 * The ports of the uplink address to probe for one port forward: its port; for a range its first and last port and
 * one just outside it that no forward takes (after the range, else before it), when there is one. Pure.
 */
function forwardProbePorts(config: Config, forward: PortForward): number[] {
  const [low, high] = forwardedRange(forward.port);
  if (low === high) return [low];
  const outside = [high + 1, low - 1].find((p) => p >= 1 && p <= 65535 && forwardTaking(config, forward.proto, p) === undefined);
  return outside === undefined ? [low, high] : [low, high, outside];
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
  const want = (from: Endpoint, to: Endpoint, w: Wanted): string => {
    const key = `${from.address}|${to.address}|${w.proto}|${w.port ?? ''}`;
    const seen = candidates.get(key);
    if (seen === undefined) candidates.set(key, { from, to, want: w, order: candidates.size });
    else if (w.tier < seen.want.tier) candidates.set(key, { ...seen, want: w });
    return key;
  };

  for (const a of vlanOwn) {
    for (const b of vlanOwn) {
      if (a === b) continue;
      for (const w of [{ proto: 'icmp', tier: 3 }, { proto: 'tcp', port: 22, tier: 3 }, { proto: 'tcp', port: 80, tier: 3 }] as const) want(a, b, w);
    }
    for (const w of [{ proto: 'icmp', tier: 3 }, { proto: 'tcp', port: 80, tier: 3 }] as const) want(a, internet, w);
  }
  for (const b of vlanOwn) {
    for (const w of [{ proto: 'icmp', tier: 3 }, { proto: 'tcp', port: 22, tier: 3 }, { proto: 'tcp', port: 80, tier: 3 }] as const) want(internet, b, w);
  }

  const notProbed: string[] = [];
  /** Each probed rule's probes (candidate keys), to say which the cap left out. */
  const ruleKeys: Array<{ rule: string; keys: string[] }> = [];
  config.forwarding.rules.forEach((rule, index) => {
    const from = endpointOf(rule.from);
    const to = endpointOf(rule.to);
    const why = [from, to].filter((e): e is string => typeof e === 'string');
    if (typeof from === 'string' || typeof to === 'string') {
      notProbed.push(`forwarding.rules[${index}] (from ${rule.from} to ${rule.to}): ${why.join('; ')}`);
      return;
    }
    ruleKeys.push({ rule: `forwarding.rules[${index}] (from ${rule.from} to ${rule.to})`, keys: ruleProbes(rule).map((w) => want(from, to, w)) });
  });

  // The cap keeps what the rules name, the ports outside them, the other transport, then the baseline; config order within each.
  // Each port forward's probes, from the Internet host to the router's uplink address; never left out.
  const forwardProbes: PlannedProbe[] = config.portForwards.flatMap((forward) => forwardProbePorts(config, forward).map((port) => {
    const taking = forwardTaking(config, forward.proto, port);
    const base = {
      from: INTERNET,
      to: zoneOfAddress(config, forward.to) ?? forward.to,
      probe: `fwd ${forward.proto}/${port}`,
      proto: forward.proto,
      port,
      hosts: '',
      forward: true,
      spec: { namespace: topology.inet, kind: forward.proto, target: u.routerAddress, port, localAddress: u.internetHost, timeoutMs },
    } as const;
    // No forward takes it: the router itself, where nothing listens, refuses it.
    if (taking === undefined) return { ...base, expected: 'blocked', expectedStop: 'refused', note: `just outside ${forward.port}: not forwarded` } as const;
    const landing = `${taking.to}:${forwardedToPort(taking, port)}`;
    return { ...base, expected: expectedPortForwardVerdict(config, taking, u.internetHost), expectedPeer: u.internetHost, expectedLocal: landing, note: `to ${landing}` };
  }));

  const all = [...candidates.values()];
  const kept = [...all].sort((x, y) => x.want.tier - y.want.tier || x.order - y.order).slice(0, Math.max(0, maxProbes - forwardProbes.length));
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

  const labelOf = (from: Endpoint, to: Endpoint, w: Wanted) => {
    const hosts = hostsOf(from, to);
    return `${w.proto === 'icmp' ? 'ping' : `${w.proto}/${w.port}`}${hosts ? ` ${hosts}` : ''}`;
  };
  const keptSet = new Set(kept);
  const capped = ruleKeys.flatMap(({ rule, keys }) => {
    const missed = keys.map((k) => candidates.get(k)!).filter((c) => !keptSet.has(c));
    return missed.length === 0 ? [] : [`${rule}: ${missed.map((c) => labelOf(c.from, c.to, c.want)).join(', ')}`];
  });

  const probes: PlannedProbe[] = kept.map(({ from, to, want: w }) => {
    const hosts = hostsOf(from, to);
    const label = labelOf(from, to, w);
    const stop = expectedStop(config, from.zone, to.zone, w.proto, w.port, to.address, from.address);
    const expected: Verdict = stop === undefined ? 'pass' : 'blocked';
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
    const base = {
      from: from.column, to: to.column, probe: label, proto: w.proto, ...(w.port === undefined ? {} : { port: w.port }), hosts, spec, expected,
      ...(stop === undefined ? {} : { expectedStop: stop }),
    };
    if (w.proto === 'icmp') return base;
    const expectedLocal = `${to.address}:${w.port}`;
    if (to.zone !== UPLINK) return { ...base, expectedPeer: from.address, expectedLocal }; // no NAT between VLANs, nor inbound
    const nat = expectedUplinkNat(config, from.zone);
    const seenAs = nat === 'masquerade' ? u.routerAddress : nat === 'snat' ? config.uplink.snatTo! : from.address;
    return { ...base, expectedPeer: seenAs, expectedLocal };
  });

  probes.push(...forwardProbes);
  return { probes, notProbed, planned: all.length + forwardProbes.length, capped };
}

/** What each namespace's agent serves: every TCP and UDP port probed there, and each port forward's target (on
 *  the ports its probes would reach it on, the one just outside a range included). TCP
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
    for (const port of forwardProbePorts(config, forward)) {
      const taking = forwardTaking(config, forward.proto, port);
      add(vlan.client.namespace, { proto: forward.proto, address, port: taking === undefined ? port : forwardedToPort(taking, port) });
    }
  }
  return agents;
}

