/**
 * What the namespace does that the gateway does not control but a user must know: things that let traffic past
 * the policy. Shown by `plan` and `apply`, and logged once by the supervisor. Pure.
 */
import type { Facts } from '../observe/facts.js';

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
