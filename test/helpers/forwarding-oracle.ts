/**
 * An independent model of the forwarding policy, written from the README's Configuration section alone (it uses
 * neither src/lab/expect.ts, src/plan nor the config parser, so that a mistake shared by the product and the lab's
 * own expectations still shows): which new connections the gateway lets through, how it stops the others, and
 * which source the far end sees. It reads the config as written (YAML's plain data) and fills in the defaults the
 * README gives. Pure. test/kernel/forwarding-differential.test.ts checks real packets against it, and
 * test/unit/forwarding-oracle.test.ts checks it against src/lab/expect.ts.
 *
 * - forwarding.rules: first match wins. from / to: a VLAN's name, "uplink", or an address or prefix inside a VLAN
 *   (matched on the packet's address as it crosses the router: before source NAT, after a port forward's DNAT).
 *   proto omitted or "all": any; tcp, udp, icmp: that one; ports: a list of ports and ranges, tcp/udp only.
 *   accept passes; drop is silent; reject answers (a TCP reset, or an ICMP port unreachable).
 * - No rule: VLAN → VLAN follows forwarding.default (silent when drop); VLAN → uplink passes; uplink → VLAN is
 *   dropped, except port forwards.
 * - A port forward takes a connection arriving on the uplink for one of the gateway's own addresses, on its proto
 *   and port (a range keeps the port, one port goes to toPort, default port), and is always accepted. A port of
 *   the gateway that no forward takes is the gateway's own: nothing listens, so it is refused. No NAT reflection:
 *   a VLAN host that asks the uplink address is answered by the gateway itself.
 * - NAT: between VLANs and from the uplink the source is unchanged. Towards the uplink, a VLAN with masquerade
 *   (default true) is seen as the uplink's address (nat: masquerade, the default), as snatTo (nat: snat), or as
 *   itself (nat: none); a VLAN with masquerade: false as itself.
 * - A NIC of a VLAN the config does not name is not the gateway's: nothing passes to or from it.
 */

/** The config as written (the YAML's plain data), defaults not filled in. */
export interface RawConfig {
  uplink?: { interface?: string; gateway?: string; nat?: 'masquerade' | 'snat' | 'none'; snatTo?: string };
  vlans: Array<{ name: string; id: number; subnet: string; gateway: string; masquerade?: boolean }>;
  forwarding?: { default?: 'accept' | 'drop'; rules?: RawRule[] };
  portForwards?: RawForward[];
}

export interface RawRule {
  from: string;
  to: string;
  proto?: 'tcp' | 'udp' | 'icmp' | 'all';
  ports?: string | number;
  action: 'accept' | 'drop' | 'reject';
}

export interface RawForward {
  proto?: 'tcp' | 'udp';
  port: number | string;
  to: string;
  toPort?: number;
}

export type Proto = 'icmp' | 'tcp' | 'udp';

/** pass; drop (no answer); reject (refused: a TCP reset or an ICMP error); blocked (either way). */
type OracleVerdict = 'pass' | 'drop' | 'reject' | 'blocked';

export interface OracleAnswer {
  readonly verdict: OracleVerdict;
  /** For a tcp/udp probe that passes: the source the server sees, and the address:port it is reached on. */
  readonly peer?: string;
  readonly local?: string;
  /** Why, for a person reading a mismatch. */
  readonly why: string;
}

/** A host probes are sent from or to: its address, and whether it is on the uplink side (the Internet host). */
export interface OracleHost {
  readonly address: string;
  readonly uplinkSide: boolean;
}

/** What the gateway's side of the lab looks like: the uplink's own addresses (the first is the one masquerade uses). */
export interface OracleGateway {
  readonly uplinkAddresses: readonly string[];
  /** Every address the gateway holds (uplink and VLAN NICs): port forwards take connections to any of them. */
  readonly ownAddresses: readonly string[];
}

const numbers = new Map<string, number>();
const toNumber = (address: string): number => {
  let n = numbers.get(address);
  if (n === undefined) numbers.set(address, n = address.split('.').reduce((sum, octet) => sum * 256 + Number(octet), 0));
  return n;
};

/** Whether `address` is `prefix` (an address alone is its /32) or inside it. */
function inPrefix(address: string, prefix: string): boolean {
  const [net, bits = '32'] = prefix.split('/');
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toNumber(address) / size) === Math.floor(toNumber(net!) / size);
}

/** "22,8000-8100" (or a number) as [low, high] ranges. */
function portRanges(ports: string | number): Array<[number, number]> {
  return String(ports).split(',').map((item) => {
    const [low, high] = item.split('-').map(Number);
    return [low!, high ?? low!];
  });
}

export function vlanOf(config: RawConfig, address: string): RawConfig['vlans'][number] | undefined {
  return config.vlans.find((v) => inPrefix(address, v.subnet));
}

function refMatches(config: RawConfig, ref: string, host: OracleHost): boolean {
  if (ref === 'uplink') return host.uplinkSide;
  const named = config.vlans.find((v) => v.name === ref);
  if (named) return !host.uplinkSide && inPrefix(host.address, named.subnet);
  return !host.uplinkSide && inPrefix(host.address, ref);
}

function ruleMatches(config: RawConfig, rule: RawRule, from: OracleHost, to: OracleHost, proto: Proto, port: number | undefined): boolean {
  if (!refMatches(config, rule.from, from) || !refMatches(config, rule.to, to)) return false;
  const ruleProto = rule.proto ?? 'all';
  if (ruleProto !== 'all' && ruleProto !== proto) return false;
  if (rule.ports !== undefined) {
    if (port === undefined) return false;
    if (!portRanges(rule.ports).some(([low, high]) => port >= low && port <= high)) return false;
  }
  return true;
}

/** The port forward that takes `proto`/`port` on the gateway's own address, and the port it reaches at its host. */
export function forwardFor(config: RawConfig, proto: Proto, port: number): { forward: RawForward; toPort: number } | undefined {
  for (const forward of config.portForwards ?? []) {
    if ((forward.proto ?? 'tcp') !== proto) continue;
    const [[low, high]] = portRanges(forward.port) as [[number, number]];
    if (port < low || port > high) continue;
    return { forward, toPort: low === high ? forward.toPort ?? low : port };
  }
  return undefined;
}

/** A probe from one host to another through the gateway (neither is the gateway). */
export function oracleVerdict(config: RawConfig, gateway: OracleGateway, from: OracleHost, to: OracleHost, proto: Proto, port?: number): OracleAnswer {
  const fromVlan = from.uplinkSide ? undefined : vlanOf(config, from.address);
  const toVlan = to.uplinkSide ? undefined : vlanOf(config, to.address);
  if ((!from.uplinkSide && !fromVlan) || (!to.uplinkSide && !toVlan)) {
    return { verdict: 'blocked', why: 'a host on a NIC of no configured VLAN' };
  }
  const seen = (): Pick<OracleAnswer, 'peer' | 'local'> => {
    if (proto === 'icmp') return {};
    const local = `${to.address}:${port}`;
    if (!to.uplinkSide || from.uplinkSide) return { peer: from.address, local };
    const nat = fromVlan!.masquerade === false ? 'none' : config.uplink?.nat ?? 'masquerade';
    const peer = nat === 'masquerade' ? gateway.uplinkAddresses[0]! : nat === 'snat' ? config.uplink!.snatTo! : from.address;
    return { peer, local };
  };
  const rules = config.forwarding?.rules ?? [];
  const index = rules.findIndex((rule) => ruleMatches(config, rule, from, to, proto, port));
  if (index !== -1) {
    const action = rules[index]!.action;
    const why = `forwarding.rules[${index}] (${action})`;
    return action === 'accept' ? { verdict: 'pass', ...seen(), why } : { verdict: action === 'drop' ? 'drop' : 'reject', why };
  }
  if (from.uplinkSide) return { verdict: 'drop', why: 'uplink → VLAN without a rule' };
  if (to.uplinkSide) return { verdict: 'pass', ...seen(), why: 'VLAN → uplink without a rule' };
  const fallback = config.forwarding?.default ?? 'accept';
  return fallback === 'accept' ? { verdict: 'pass', ...seen(), why: 'default accept' } : { verdict: 'drop', why: 'default drop' };
}

/** A probe to one of the gateway's own addresses on a tcp/udp port: a port forward, or the gateway itself. */
export function oracleToGateway(config: RawConfig, gateway: OracleGateway, from: OracleHost, target: string, proto: 'tcp' | 'udp', port: number): OracleAnswer {
  if (!gateway.ownAddresses.includes(target)) throw new Error(`${target} is not the gateway's`);
  if (!from.uplinkSide) {
    if (!vlanOf(config, from.address)) return { verdict: 'blocked', why: 'a host on a NIC of no configured VLAN' };
    return { verdict: 'reject', why: 'the gateway itself (no NAT reflection), where nothing listens' };
  }
  const taking = forwardFor(config, proto, port);
  if (taking === undefined) return { verdict: 'reject', why: 'no forward takes it: the gateway itself, where nothing listens' };
  return { verdict: 'pass', peer: from.address, local: `${taking.forward.to}:${taking.toPort}`, why: `port forward ${taking.forward.port}` };
}
