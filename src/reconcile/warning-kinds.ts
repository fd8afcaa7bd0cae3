/**
 * Which of the warnings a plan can carry (plan/warnings.ts, and what the conntrack clears could not do) one is: the
 * `kind` label of vlan_gateway_warnings, a fixed list so that every series is there at 0 from the first scrape, and an
 * alert or a dashboard can tell an IPv6 hole from a missing tool. Address conflicts are not among them (they have
 * vlan_gateway_address_conflict). Pure.
 *
 * A warning is text (what plan, apply, the log and /status say); its kind is read from how each producer starts it.
 * test/unit/warning-kinds.test.ts makes every producer's warning and checks that it has its own kind: one whose text
 * is changed so that it is no longer recognised shows there, not as `other` on an operator's dashboard.
 */
import { CONNTRACK_MISSING } from '../apply/conntrack.js';

export const WARNING_KINDS = [
  /** IPv6 forwarding on with no ip6tables FORWARD policy of the operator's dropping it: IPv6 passes none of the policy. */
  'ipv6_forwarding',
  /** The other iptables backend's FORWARD chain filters forwarded packets too (a DROP there drops what ours accepts). */
  'other_backend_forward',
  /** iptables-legacy tables in the namespace, and no iptables-legacy here to read them. */
  'legacy_unreadable',
  /** A VLAN's subnet overlaps a network (or holds the address) of the uplink NIC. */
  'uplink_overlap',
  /** No ipset tool: the sets the gateway's rules used are left in the kernel. */
  'ipset_missing',
  /** No conntrack tool: the UDP flows a changed port forward leaves are not cleared (said by the pass that changed it). */
  'conntrack_missing',
  /** Those flows could not be cleared: conntrack failed (said by the pass that changed the forward). */
  'flows_not_cleared',
  /** None of the above: a warning this list does not know yet (a test keeps it at 0). */
  'other',
] as const;
export type WarningKind = typeof WARNING_KINDS[number];

const STARTS: ReadonlyArray<readonly [RegExp, WarningKind]> = [
  // One sysctl (all.forwarding, all.force_forwarding, a NIC's force_forwarding) or a list of NICs' ("…, … are 1").
  [/^net\.ipv6\.conf\.\S+(?:, net\.ipv6\.conf\.\S+)* (?:is|are) 1 and no ip6tables FORWARD policy drops/, 'ipv6_forwarding'],
  [/^iptables-(?:nft|legacy)'s FORWARD chain \(/, 'other_backend_forward'],
  [/^this namespace has iptables-legacy tables \(/, 'legacy_unreadable'],
  [/^vlan .+'s subnet \S+ (?:overlaps the uplink's network|holds \S+, the uplink's own address)/, 'uplink_overlap'],
  [/^the ipset tool is not installed /, 'ipset_missing'],
  [/^the UDP flows to .+ could not be cleared: /, 'flows_not_cleared'],
];

export function warningKind(warning: string): WarningKind {
  if (warning === CONNTRACK_MISSING) return 'conntrack_missing';
  return STARTS.find(([start]) => start.test(warning))?.[1] ?? 'other';
}

/** How many of `warnings` are of each kind, every kind present (0 where none is). */
export function countByKind(warnings: Iterable<string>): Record<WarningKind, number> {
  const counts = Object.fromEntries(WARNING_KINDS.map((kind) => [kind, 0])) as Record<WarningKind, number>;
  for (const warning of warnings) counts[warningKind(warning)]++;
  return counts;
}
