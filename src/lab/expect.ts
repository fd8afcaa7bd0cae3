/**
 * What the config allows, as the lab's check judges it: the reference semantics the product's rules implement.
 * Pure.
 *
 * - forwarding.rules, first match wins. A rule matches when its from and to match (a VLAN name, "uplink", or an
 *   address / prefix inside a VLAN, which matches when the probe's source / destination address is inside it),
 *   its proto matches (absent or "all": any; "icmp": icmp only) and, when it lists ports, the probe is tcp/udp
 *   to one of them. accept → pass; drop and reject → blocked: drop silently, reject refused (a TCP reset, an
 *   ICMP port unreachable).
 * - No rule matched: VLAN → VLAN follows forwarding.default; VLAN → uplink passes; uplink → VLAN is blocked. Both
 *   defaults drop silently.
 * - A port forward always passes: its DNAT'd connections are accepted before any forwarding rule is consulted. A
 *   port of the uplink address that no forward takes (one just outside a range) is the router's own: refused.
 * - Replies to allowed connections always pass; they are not probed separately.
 */
import { forwardedRange, type Config, type ForwardingRule, type PortForward } from '../config/schema.js';
import { parsePorts } from '../config/validate.js';
import { contains, parseAddress, parseCidr } from '../net/ipv4.js';

/** A VLAN name or "uplink". */
export type Zone = string;
export type Verdict = 'pass' | 'blocked';
export type ProbeProto = 'icmp' | 'tcp' | 'udp';
/** How a blocked probe is stopped: no answer at all, or an answer that refuses it (a TCP reset, an ICMP port unreachable). */
export type Stop = 'dropped' | 'refused';

/** Whether the config lets a probe through (expectedStop's arguments). */
export const expectedVerdict = (...probe: Parameters<typeof expectedStop>): Verdict => (expectedStop(...probe) === undefined ? 'pass' : 'blocked');

/** How the config stops a probe (undefined: it passes). A rule's `reject` refuses it; its `drop`, and either
 *  default, drop it without a word. */
export function expectedStop(
  config: Config,
  from: Zone,
  to: Zone,
  proto: ProbeProto,
  port?: number,
  dstAddress?: string,
  srcAddress?: string,
): Stop | undefined {
  const action = ruleAction(config, from, to, proto, port, dstAddress, srcAddress)
    ?? (from !== 'uplink' && to !== 'uplink' ? config.forwarding.default : to === 'uplink' ? 'accept' : 'drop');
  return action === 'accept' ? undefined : action === 'reject' ? 'refused' : 'dropped';
}

/** A port forward is an explicit opening: like a router's redirect rule, its DNAT'd connections are accepted
 *  before the uplink's forwarding rules are consulted (the product puts the accept first in VGW-FROM-UP). */
export function expectedPortForwardVerdict(_config: Config, _forward: PortForward, _srcAddress?: string): Verdict {
  return 'pass';
}

/** The port forward that takes a connection of `proto` to `port` on the uplink address, if any (none: the router
 *  itself answers it, and nothing of the lab listens there). */
export function forwardTaking(config: Config, proto: ProbeProto, port: number): PortForward | undefined {
  return config.portForwards.find((f) => {
    const [low, high] = forwardedRange(f.port);
    return f.proto === proto && port >= low && port <= high;
  });
}

/** The port a forwarded connection reaches at the host: a range keeps the port, one port goes to toPort. */
export function forwardedToPort(forward: PortForward, port: number): number {
  const [low, high] = forwardedRange(forward.port);
  return low === high ? forward.toPort ?? low : port;
}

/** How a VLAN's traffic leaves through the uplink: the source the Internet sees is the router's uplink address
 *  (masquerade), uplink.snatTo (snat), or the VLAN host itself (none: no reply can come back from the Internet). */
export function expectedUplinkNat(config: Config, vlan: string): 'masquerade' | 'snat' | 'none' {
  const v = config.vlans.find((x) => x.name === vlan);
  if (v === undefined || !v.masquerade) return 'none';
  return config.uplink.nat;
}

/** The VLAN whose subnet holds `address`, if any. */
export function zoneOfAddress(config: Config, address: string): Zone | undefined {
  const n = parseAddress(address);
  if (n === undefined) return undefined;
  return config.vlans.find((v) => contains(parseCidr(v.subnet)!, n))?.name;
}

/** The action of the first rule that matches the probe, if any. */
function ruleAction(
  config: Config,
  from: Zone,
  to: Zone,
  proto: ProbeProto,
  port: number | undefined,
  dstAddress: string | undefined,
  srcAddress: string | undefined,
): ForwardingRule['action'] | undefined {
  for (const rule of config.forwarding.rules) {
    if (!zoneMatches(config, rule.from, from, srcAddress)) continue;
    if (!zoneMatches(config, rule.to, to, dstAddress)) continue;
    if (rule.proto !== undefined && rule.proto !== 'all' && rule.proto !== proto) continue;
    if (rule.ports !== undefined) {
      if ((proto !== 'tcp' && proto !== 'udp') || port === undefined) continue;
      if (!parsePorts(rule.ports).some(([low, high]) => port >= low && port <= high)) continue;
    }
    return rule.action;
  }
  return undefined;
}

function zoneMatches(config: Config, ref: string, zone: Zone, address: string | undefined): boolean {
  if (ref === 'uplink' || config.vlans.some((v) => v.name === ref)) return ref === zone;
  if (address === undefined) return false;
  const n = parseAddress(address);
  if (n === undefined) return false;
  const cidr = ref.includes('/') ? parseCidr(ref) : undefined;
  if (cidr !== undefined) return contains(cidr, n);
  return parseAddress(ref) === n;
}
