/**
 * Who may use the HTTP endpoints. The gateway holds an address on every VLAN, and Linux answers on any of its
 * addresses whatever NIC a packet came in on, so without a check any host on any VLAN (a guest network, an IoT
 * one) could read /status and /metrics, and load the router with scrapes. As a router's management usually does,
 * the endpoints answer their own side only: the uplink side and the gateway itself. A host on a VLAN is told why
 * it is refused, and `http.allowFrom` lets in whole VLANs or some of their addresses.
 *
 * The check is by the client's address: a host on a VLAN cannot complete a TCP handshake from an address outside
 * its VLAN (the reply would not reach it), whichever of the gateway's addresses it connects to. A network routed
 * behind a VLAN's host (`ip route add 10.99.0.0/24 via 192.168.10.5`) is that VLAN's side too: the reply to a client
 * there leaves by the VLAN's NIC, as the route the kernel uses for it (the most specific) says. A client with one of
 * the gateway's own addresses is the gateway itself (a health check to a VLAN address leaves from Docker's address
 * on that VLAN). IPv6 clients other than ::1 are refused: the gateway routes IPv4, and an IPv6 address (a NIC's
 * link-local one) tells nothing of the side it came from. Pure.
 */
import type { Config } from '../config/schema.js';
import { contains, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';
import type { RoutedPrefix } from '../observe/facts.js';

/** A refused client's VLAN and the reason it is told. */
interface Refusal {
  readonly vlan: string;
  readonly reason: string;
}

/** Returns why a client is refused, or undefined when it may use the endpoints. */
export type AccessCheck = (remoteAddress: string) => Refusal | undefined;

/**
 * The VLAN (by name) whose NIC the route to an address outside every VLAN's subnet goes through, or undefined
 * (the uplink side): the most specific of `routes` (the namespace's routes other than the default and the
 * kernel's own), the lowest metric among routes to one prefix; a multipath route's hops each count.
 */
export function routedBehind(routes: readonly RoutedPrefix[], vlanOfNic: ReadonlyMap<string, string>): (address: number) => string | undefined {
  const parsed = routes.flatMap((r) => {
    const cidr = parseCidr(r.prefix);
    return cidr ? [{ cidr, dev: r.dev, metric: r.metric ?? 0 }] : [];
  });
  if (!parsed.some((r) => vlanOfNic.has(r.dev))) return () => undefined;
  return (address) => {
    let best: typeof parsed = [];
    for (const r of parsed) {
      if (!contains(r.cidr, address)) continue;
      const than = best[0];
      if (!than || r.cidr.prefix > than.cidr.prefix || (r.cidr.prefix === than.cidr.prefix && r.metric < than.metric)) best = [r];
      else if (r.cidr.prefix === than.cidr.prefix && r.metric === than.metric) best.push(r);
    }
    return best.map((r) => vlanOfNic.get(r.dev)).find((name) => name !== undefined);
  };
}

/**
 * `isOwnAddress`: whether an address is one of the gateway's own. `behind`: the VLAN a client outside every VLAN's
 * subnet is routed through (see routedBehind), or undefined for the uplink side.
 */
export function accessCheck(
  config: Config,
  isOwnAddress: (address: string) => boolean = () => false,
  behind: (address: number) => string | undefined = () => undefined,
): AccessCheck {
  const allowed = new Set<string>();
  const allowedRanges: Cidr[] = [];
  for (const ref of config.http.allowFrom) {
    const range = parseCidr(ref.includes('/') ? ref : `${ref}/32`); // a VLAN name is no prefix
    if (range) allowedRanges.push(range);
    else allowed.add(ref);
  }
  const vlans = config.vlans.map((v) => ({ name: v.name, subnet: parseCidr(v.subnet)! }));
  return (remoteAddress) => {
    // A dual-stack socket shows an IPv4 client as ::ffff:a.b.c.d.
    const text = remoteAddress.replace(/^::ffff:/i, '');
    const address = parseAddress(text);
    if (address === undefined) {
      if (remoteAddress === '::1' || remoteAddress === '') return undefined; // loopback, or a Unix socket
      return { vlan: '', reason: `${remoteAddress} is an IPv6 client, and the gateway's HTTP endpoints answer IPv4 clients only (and ::1): the side an IPv6 address comes from cannot be told` };
    }
    if (isOwnAddress(text)) return undefined;
    const vlan = vlans.find((v) => contains(v.subnet, address))?.name;
    if (vlan !== undefined) {
      if (allowed.has(vlan) || allowedRanges.some((r) => contains(r, address))) return undefined;
      return {
        vlan,
        reason: `${text} is on VLAN ${vlan}, and the gateway's HTTP endpoints answer the uplink side and the gateway itself only; allow it with http.allowFrom: [${vlan}] (or its address) in the config`,
      };
    }
    const via = behind(address);
    if (via === undefined || allowed.has(via)) return undefined;
    return {
      vlan: via,
      reason: `${text} is in a network routed behind VLAN ${via}, and the gateway's HTTP endpoints answer the uplink side and the gateway itself only; allow it with http.allowFrom: [${via}] in the config`,
    };
  };
}
