/** The uplink's NAT and addresses, checked against one another and against the VLANs. Pure. */
import { contains, parseAddress, type Cidr } from '../net/ipv4.js';
import { asString, isObject, notUnicast, problemList, vlanLabel, type Raw, type VlanView } from './cross-field.js';
import type { Problem } from './problems.js';

export function uplinkProblems(input: Raw, vlans: readonly VlanView[]): Problem[] {
  const { problems, add } = problemList();
  const uplink = isObject(input.uplink) ? input.uplink : {};
  // An invalid nat is the schema's to report: nothing here is said about snatTo on a guess of what was meant.
  const nat = uplink.nat === undefined ? 'masquerade' : asString(uplink.nat);
  if (nat === 'snat' && uplink.snatTo === undefined) add(['uplink', 'snatTo'], 'is required with nat: snat');
  if ((nat === 'masquerade' || nat === 'none') && uplink.snatTo !== undefined) add(['uplink', 'snatTo'], `is only used with nat: snat (nat is ${nat})`);
  // The default route's next hop and the SNAT source are hosts on the uplink's network: never in a VLAN, never a
  // loopback, multicast, broadcast or reserved address.
  const uplinkAddresses = [
    ['gateway', "the uplink's next hop is on the uplink's network"],
    ['snatTo', "the SNAT address is one of the uplink's own"],
  ] as const;
  for (const [key, why] of uplinkAddresses) {
    const text = asString(uplink[key]);
    const address = text === undefined ? undefined : parseAddress(text);
    if (text === undefined || address === undefined) continue; // the schema reports a malformed one
    const kind = notUnicast(address);
    const vlan = vlans.find((v): v is VlanView & { subnet: Cidr } => v.subnet !== undefined && contains(v.subnet, address));
    if (kind) add(['uplink', key], `${text} is ${kind}, not a unicast host address`);
    else if (vlan) add(['uplink', key], `${text} is inside ${vlanLabel(vlan)}; ${why}`);
  }
  // The SNAT source is the gateway's own uplink address, never its next hop's.
  const snatTo = asString(uplink.snatTo);
  if (nat === 'snat' && snatTo !== undefined && parseAddress(snatTo) !== undefined && snatTo === asString(uplink.gateway)) {
    add(['uplink', 'snatTo'], `${snatTo} is uplink.gateway, the next hop; snatTo is an address of the gateway's own uplink NIC`);
  }
  return problems;
}
