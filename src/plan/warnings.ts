/**
 * What the namespace does that the gateway does not control but a user must know: things that let traffic past
 * the policy. Shown by `plan` and `apply`, and logged once by the supervisor. Pure.
 */
import { formatCidr, networkOf, overlaps, parseAddress, parseCidr } from '../net/ipv4.js';
import { shownCommand } from '../exec/runner.js';
import type { Facts } from '../observe/facts.js';
import { OUR_PREFIX } from './chains.js';
import type { UplinkBinding, VlanBinding, Warning } from './types.js';

export const IPV6_FORWARDING = 'net.ipv6.conf.all.forwarding';
/**
 * Linux 6.17+: forwarding on every NIC whatever `all.forwarding` says (set on `all`, it is set on each NIC; absent on
 * older kernels). IPv6 between the VLANs was routed with no warning where this one alone was 1.
 */
export const IPV6_FORCE_FORWARDING = 'net.ipv6.conf.all.force_forwarding';

/** What each NIC attached from now on starts with: 1 makes every new NIC forward IPv6 (see ipv6NicForwardingWarning). */
export const IPV6_DEFAULT_FORCE_FORWARDING = 'net.ipv6.conf.default.force_forwarding';

/**
 * A NIC's own force_forwarding (Linux 6.17+), as sysctl(8) names it (a dot in the NIC's name is written `/` there). The
 * kernel forwards an IPv6 packet when all.forwarding is 1 or the NIC it came in on has this at 1; `all.force_forwarding`
 * is no more than a way to set every NIC's at once (a NIC set back to 0 after it does not forward).
 */
const nicForceForwardingKey = (nic: string) => `net.ipv6.conf.${nic.replaceAll('.', '/')}.force_forwarding`;

/** The IPv6 forwarding sysctl that is 1 (forwarding first), if one is. */
export function ipv6ForwardingOn(sysctls: Readonly<Record<string, string>>): string | undefined {
  return [IPV6_FORWARDING, IPV6_FORCE_FORWARDING].find((key) => sysctls[key] === '1');
}

export function warningsOf(facts: Pick<Facts, 'sysctls' | 'backend' | 'otherForward' | 'tables' | 'sets' | 'unreadLegacy' | 'ipv6ForwardDroppedBy' | 'ipv6ForceForwardingNics' | 'commandPrefix'>): Warning[] {
  const warnings: Warning[] = [];
  // Without the ipset tool the gateway neither sees nor removes sets: those its rules use now are left behind by
  // this write (rules without sets) or by down, and nothing else would say so.
  const stranded = facts.sets === undefined ? setsOurRulesUse(facts.tables) : [];
  if (stranded.length > 0) {
    warnings.push({
      kind: 'ipset_missing',
      text: `the ipset tool is not installed (not on the PATH): the gateway's rules use its sets ${stranded.join(', ')}, `
        + 'which it can neither read nor remove without it: they stay in the kernel, unused once these rules are gone, '
        + 'until ipset is installed and apply or down runs again',
    });
  }
  // The kernel runs both backends' rule sets: a DROP in the other one drops what the gateway's policy accepts.
  const other = facts.otherForward;
  if (other) {
    const what = [other.policy ? `policy ${other.policy}` : '', other.rules > 0 ? `${other.rules} rule${other.rules === 1 ? '' : 's'}` : '']
      .filter(Boolean).join(', ');
    warnings.push({
      kind: 'other_backend_forward',
      text: `iptables-${other.backend}'s FORWARD chain (${what}) filters forwarded packets too (the kernel runs both rule `
        + `sets), and the gateway's rules are in iptables-${facts.backend}: what the gateway's policy accepts can still be dropped `
        + `there. Empty it (${shownCommand(facts.commandPrefix, `iptables-${other.backend} -P FORWARD ACCEPT`)}; ${shownCommand(facts.commandPrefix, `iptables-${other.backend} -F FORWARD`)}) or move those rules `
        + `to iptables-${facts.backend}`,
    });
  }
  // Docker on a host set to iptables-legacy writes the container's rules there; this image may have no iptables-legacy.
  if (facts.unreadLegacy) {
    warnings.push({
      kind: 'legacy_unreadable',
      text: `this namespace has iptables-legacy tables (${facts.unreadLegacy.join(', ')}), and iptables-legacy is not installed `
        + 'here (or its save failed): the gateway cannot read them, and writes its rules to iptables-nft. The kernel runs both rule sets: a FORWARD policy '
        + 'or rule there still filters forwarded packets, and chains of the gateway written there before stay in force. Look '
        + 'from the host (nsenter -n -t <the container\'s pid> iptables-legacy-save)',
    });
  }
  // The gateway programs IPv4 only: with IPv6 forwarding on, IPv6 passes none of the policy, between the VLANs and
  // to and from the uplink (where nothing drops the uplink side's new connections, and nothing is NATed). It is not
  // the gateway's to switch off or to filter (an ip6tables rule set of its own is on the roadmap with dual stack),
  // so it says what is open and the two ways to close it; an ip6tables FORWARD chain that drops the rest is the
  // operator's policy, and ends the warning.
  // With the namespace-wide switches off, a NIC of its own (Linux 6.17+) still forwards what comes in on it.
  const ipv6On = ipv6ForwardingOn(facts.sysctls);
  const nics = facts.ipv6ForceForwardingNics ?? [];
  if (facts.ipv6ForwardDroppedBy === undefined) {
    if (ipv6On !== undefined) warnings.push({ kind: 'ipv6_forwarding', text: ipv6ForwardingWarning(facts.commandPrefix, ipv6On) });
    else if (nics.length > 0) warnings.push({ kind: 'ipv6_forwarding', text: ipv6NicForwardingWarning(nics, facts.sysctls[IPV6_DEFAULT_FORCE_FORWARDING] === '1', facts.commandPrefix) });
  }
  return warnings;
}

/** IPv6 forwarding on with nothing of the operator's to filter it (see warningsOf); `prefix`: CommandRunner.prefix. */
export const ipv6ForwardingWarning = (prefix?: readonly string[], key: string = IPV6_FORWARDING) =>
  `${key} is 1 and no ip6tables FORWARD policy drops: IPv6 is routed between the VLANs, and between them and `
  + 'the uplink, with none of this policy and no NAT (the gateway programs IPv4 only): an IPv6 host on any side reaches '
  + `the IPv6 hosts of the others. Switch it off (docker run --sysctl ${key}=0, or Compose sysctls; outside a `
  + `container ${shownCommand(prefix, `sysctl -w ${key}=0`)}), or drop forwarded IPv6 with a policy of your own `
  + `(${shownCommand(prefix, 'ip6tables -P FORWARD DROP')})`;

/**
 * NICs whose own force_forwarding is 1 while all.forwarding and all.force_forwarding are 0 (see warningsOf): IPv6 that
 * comes in on one of them is forwarded out of any NIC, with none of the policy. Its replies come back only through a NIC
 * set so too, so a TCP connection from there needs both sides set; pings and UDP sent one way pass all the same.
 */
export function ipv6NicForwardingWarning(nics: readonly string[], defaultOn: boolean, prefix?: readonly string[]): string {
  const keys = nics.map(nicForceForwardingKey);
  const names = nics.length === 1 ? nics[0]! : `${nics.slice(0, -1).join(', ')} or ${nics.at(-1)!}`;
  return `${keys.join(', ')} ${keys.length === 1 ? 'is' : 'are'} 1 and no ip6tables FORWARD policy drops: IPv6 that comes in on ${names} is routed `
    + `to the gateway's other NICs (Linux 6.17 and later, whatever ${IPV6_FORWARDING} says), to the VLANs and the uplink, with none of this policy `
    + 'and no NAT (the gateway programs IPv4 only): an IPv6 host there reaches the IPv6 hosts of the others (their replies come back through a NIC '
    + `set so too)${defaultOn ? `; ${IPV6_DEFAULT_FORCE_FORWARDING} is 1 too, so each NIC attached from now on forwards as well` : ''}. `
    + `Switch it off (in a container: drop the --sysctl, Compose sysctls or network option that sets it${defaultOn ? `, ${IPV6_DEFAULT_FORCE_FORWARDING} included` : ''}; `
    + `outside one ${shownCommand(prefix, `sysctl -w ${[...keys, ...(defaultOn ? [IPV6_DEFAULT_FORCE_FORWARDING] : [])].map((k) => `${k}=0`).join(' ')}`)}), `
    + `or drop forwarded IPv6 with a policy of your own (${shownCommand(prefix, 'ip6tables -P FORWARD DROP')})`;
}

/** The gateway's sets (VGW-*) that rules in the gateway's chains match on, sorted. */
function setsOurRulesUse(tables: Facts['tables']): string[] {
  const names = new Set<string>();
  for (const table of Object.values(tables)) {
    for (const [chain, rules] of table.rules) {
      if (!chain.startsWith(OUR_PREFIX)) continue;
      for (const rule of rules) for (const m of rule.body.matchAll(/--match-set (VGW-\S+)/g)) names.add(m[1]!);
    }
  }
  return [...names].sort();
}

/**
 * A VLAN's subnet that overlaps a network of the uplink NIC: the VLAN's connected route takes those addresses away
 * from the uplink side (its hosts there become unreachable, and what they send is dropped as forged). Validation
 * cannot see it: the uplink's network is known only from the NIC. A /32 (a routed or cloud uplink's address) is no
 * network: no route comes with it and no host shares it, so only the address itself is said, for what is true of it.
 */
export function uplinkOverlapWarnings(uplink: UplinkBinding, vlans: readonly VlanBinding[]): Warning[] {
  return uplinkOverlaps(uplink, vlans).map((o) => ({ kind: 'uplink_overlap', text: o.warning }));
}

/** uplinkOverlapWarnings' texts, each with the VLAN it is about (reconcile/notices.ts tells the end of one). */
export function uplinkOverlaps(uplink: UplinkBinding, vlans: readonly VlanBinding[]): Array<{ vlan: string; warning: string }> {
  const nic = uplink.nic;
  if (!nic) return [];
  return vlans.flatMap(({ vlan }) => {
    const subnet = parseCidr(vlan.subnet)!;
    // One network is said once, by its first address: a NIC holding two addresses in it (Docker's and a gateway
    // address, where the uplink is pinned to a VLAN's NIC) cuts off no more than one does.
    const said = new Set<string>();
    return nic.addresses.flatMap((a) => {
      const address = parseAddress(a.address);
      if (address === undefined) return [];
      const network = { network: networkOf({ network: address, prefix: a.prefix }), prefix: a.prefix };
      if (!overlaps(subnet, network)) return [];
      if (a.prefix !== 32) {
        if (said.has(formatCidr(network))) return [];
        said.add(formatCidr(network));
      }
      if (a.prefix === 32) {
        return [{ vlan: vlan.name, warning: `vlan ${vlan.name}'s subnet ${vlan.subnet} holds ${a.address}, the uplink's own address (a /32 on ${nic.name}): the gateway answers `
          + 'for it on the VLAN too (ARP), so a VLAN host given that address is unreachable through the gateway; keep it out of the VLAN\'s hosts\' addresses, or give the '
          + 'VLAN a subnet without it' }];
      }
      return [{ vlan: vlan.name, warning: `vlan ${vlan.name}'s subnet ${vlan.subnet} overlaps the uplink's network ${formatCidr(network)} (${a.address} on ${nic.name}): `
        + `those addresses are routed to the VLAN, so hosts there on the uplink side are unreachable and what they send is dropped as forged; `
        + 'give the VLAN a subnet outside the uplink\'s network' }];
    });
  });
}
