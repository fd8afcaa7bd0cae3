/**
 * What the namespace does that the gateway does not control but a user must know: things that let traffic past
 * the policy. Shown by `plan` and `apply`, and logged once by the supervisor. Pure.
 */
import { formatCidr, networkOf, overlaps, parseAddress, parseCidr } from '../net/ipv4.js';
import type { Facts } from '../observe/facts.js';
import type { UplinkBinding, VlanBinding } from './types.js';

export const IPV6_FORWARDING = 'net.ipv6.conf.all.forwarding';

export function warningsOf(facts: Pick<Facts, 'sysctls' | 'backend' | 'otherForward'>): string[] {
  const warnings: string[] = [];
  // The kernel runs both backends' rule sets: a DROP in the other one drops what the gateway's policy accepts.
  const other = facts.otherForward;
  if (other) {
    const what = [other.policy ? `policy ${other.policy}` : '', other.rules > 0 ? `${other.rules} rule${other.rules === 1 ? '' : 's'}` : '']
      .filter(Boolean).join(', ');
    warnings.push(`iptables-${other.backend}'s FORWARD chain (${what}) filters forwarded packets too (the kernel runs both rule `
      + `sets), and the gateway's rules are in iptables-${facts.backend}: what the gateway's policy accepts can still be dropped `
      + `there. Empty it (iptables-${other.backend} -P FORWARD ACCEPT; iptables-${other.backend} -F FORWARD) or move those rules `
      + `to iptables-${facts.backend}`);
  }
  // The gateway programs IPv4 only: with IPv6 forwarding on, IPv6 between the VLANs passes none of the policy.
  if (facts.sysctls[IPV6_FORWARDING] === '1') {
    warnings.push(`${IPV6_FORWARDING} is 1: IPv6 is forwarded between the VLANs with none of this policy (the gateway `
      + `programs IPv4 only); switch it off (docker run --sysctl ${IPV6_FORWARDING}=0)`);
  }
  return warnings;
}

/**
 * A VLAN's subnet that overlaps a network of the uplink NIC: the VLAN's connected route takes those addresses away
 * from the uplink side (its hosts there become unreachable, and what they send is dropped as forged). Validation
 * cannot see it: the uplink's network is known only from the NIC.
 */
export function uplinkOverlapWarnings(uplink: UplinkBinding, vlans: readonly VlanBinding[]): string[] {
  const nic = uplink.nic;
  if (!nic) return [];
  return vlans.flatMap(({ vlan }) => {
    const subnet = parseCidr(vlan.subnet)!;
    return nic.addresses.flatMap((a) => {
      const address = parseAddress(a.address);
      if (address === undefined) return [];
      const network = { network: networkOf({ network: address, prefix: a.prefix }), prefix: a.prefix };
      if (!overlaps(subnet, network)) return [];
      return [`vlan ${vlan.name}'s subnet ${vlan.subnet} overlaps the uplink's network ${formatCidr(network)} (${a.address} on ${nic.name}): `
        + `those addresses are routed to the VLAN, so hosts there on the uplink side are unreachable and what they send is dropped as forged; `
        + 'give the VLAN a subnet outside the uplink\'s network'];
    });
  });
}
