/**
 * Who may use the HTTP endpoints. The gateway holds an address on every VLAN, and Linux answers on any of its
 * addresses whatever NIC a packet came in on, so without a check any host on any VLAN (a guest network, an IoT
 * one) could read /status and /metrics, and load the router with scrapes. As a router's management usually does,
 * the endpoints answer their own side only: the uplink side and the gateway itself. A host on a VLAN is told why
 * it is refused, and `http.allowFrom` lets in whole VLANs or some of their addresses.
 *
 * The check is by the client's address: a host on a VLAN cannot complete a TCP handshake from an address outside
 * its VLAN (the reply would not reach it), whichever of the gateway's addresses it connects to. Pure.
 */
import type { Config } from '../config/schema.js';
import { contains, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';

/** A refused client's VLAN and the reason it is told. */
export interface Refusal {
  readonly vlan: string;
  readonly reason: string;
}

/** Returns why a client is refused, or undefined when it may use the endpoints. */
export type AccessCheck = (remoteAddress: string) => Refusal | undefined;

export function accessCheck(config: Config): AccessCheck {
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
    const address = parseAddress(remoteAddress.replace(/^::ffff:/i, ''));
    if (address === undefined) return undefined; // IPv6 or a Unix socket: no VLAN here has such addresses
    const vlan = vlans.find((v) => contains(v.subnet, address));
    if (!vlan || allowed.has(vlan.name) || allowedRanges.some((r) => contains(r, address))) return undefined;
    return {
      vlan: vlan.name,
      reason: `${remoteAddress.replace(/^::ffff:/i, '')} is on VLAN ${vlan.name}, and the gateway's HTTP endpoints answer the uplink side and the gateway itself only; allow it with http.allowFrom: [${vlan.name}] (or its address) in the config`,
    };
  };
}
