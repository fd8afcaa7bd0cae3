/**
 * What the namespace does that the gateway does not control but a user must know: things that let traffic past
 * the policy. Shown by `plan` and `apply`, and logged once by the supervisor. Pure.
 */
import type { Facts } from '../observe/facts.js';

export const IPV6_FORWARDING = 'net.ipv6.conf.all.forwarding';

export function warningsOf(facts: Pick<Facts, 'sysctls'>): string[] {
  const warnings: string[] = [];
  // The gateway programs IPv4 only: with IPv6 forwarding on, IPv6 between the VLANs passes none of the policy.
  if (facts.sysctls[IPV6_FORWARDING] === '1') {
    warnings.push(`${IPV6_FORWARDING} is 1: IPv6 is forwarded between the VLANs with none of this policy (the gateway `
      + `programs IPv4 only); switch it off (docker run --sysctl ${IPV6_FORWARDING}=0)`);
  }
  return warnings;
}
