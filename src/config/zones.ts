/**
 * Zone references (a VLAN name, "uplink", or an address or prefix inside a VLAN), as forwarding rules and
 * http.allowFrom write them: which VLAN each is in, and what is wrong with one that is in none. Pure.
 */
import { broadcastOf, networkOf, overlaps, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';
import { notAHost, prefixProblem, subnetsKnown, vlanLabel, type VlanView } from './cross-field.js';
import { quoted } from './problems.js';
import { ZONE_REF } from './schema.js';

export interface Zones {
  /** The VLAN a reference is in (undefined for the uplink, and for one in no VLAN). */
  readonly zoneVlan: (ref: string) => (VlanView & { subnet: Cidr }) | undefined;
  /** Why a reference names nothing, or more than one VLAN (`uplink`: whether the uplink is a name it may take). */
  readonly zoneProblem: (ref: string, uplink?: boolean) => string | undefined;
  /** Why a forwarding rule on this reference never matches. */
  readonly unforwardedAddress: (ref: string) => string | undefined;
}

export function zones(vlans: readonly VlanView[], names: ReadonlyMap<string, number>): Zones {
  /**
   * The VLAN a zone reference is in: the one it names, or the one holding its address or whole prefix. Each rule
   * asks this of its from and to several times, and 10,000 rules over 512 VLANs took seconds: the VLANs' bounds are
   * worked out once, and each reference looked up once.
   */
  const known = subnetsKnown(vlans);
  const bounds = vlans.map((v) => (v.subnet ? { low: networkOf(v.subnet), high: broadcastOf(v.subnet) } : undefined));
  const zoneVlans = new Map<string, (VlanView & { subnet: Cidr }) | undefined>();
  const zoneVlan = (ref: string): (VlanView & { subnet: Cidr }) | undefined => {
    if (ref === 'uplink') return undefined;
    if (zoneVlans.has(ref)) return zoneVlans.get(ref);
    const named = names.get(ref);
    const asCidr = ref.includes('/') ? parseCidr(ref) : undefined;
    const asAddress = ref.includes('/') ? undefined : parseAddress(ref);
    const [low, high] = asCidr ? [networkOf(asCidr), broadcastOf(asCidr)] : [asAddress, asAddress];
    const found = vlans.find((v, k): v is VlanView & { subnet: Cidr } => v.subnet !== undefined && (named !== undefined ? v.index === named
      : low !== undefined && high !== undefined && low >= bounds[k]!.low && high <= bounds[k]!.high));
    zoneVlans.set(ref, found);
    return found;
  };

  const zoneProblem = (ref: string, uplink = true): string | undefined => {
    if (ref === 'uplink' || names.has(ref) || !ZONE_REF.test(ref)) return undefined; // the schema reports a malformed one
    const asCidr = ref.includes('/') ? parseCidr(ref) : undefined;
    const asAddress = ref.includes('/') ? undefined : parseAddress(ref);
    if (asCidr === undefined && asAddress === undefined) {
      return /^\d/.test(ref) ? `${quoted(ref)} is not an address or prefix` : `names no VLAN (${quoted(ref)}); known: ${[...names.keys(), ...(uplink ? ['uplink'] : [])].join(', ')}`;
    }
    const written = asCidr && prefixProblem(ref, asCidr);
    if (written) return written;
    if (zoneVlan(ref)) return undefined;
    // A prefix wider than a VLAN is not outside it: said so, with the VLANs it holds.
    const held = asCidr ? vlans.filter((v): v is VlanView & { subnet: Cidr } => v.subnet !== undefined && overlaps(v.subnet, asCidr)) : [];
    if (held.length === 0 && !known) return undefined;
    return held.length === 0 ? `${ref} is outside every VLAN`
      : `${ref} is wider than ${held.map(vlanLabel).join(' and ')}; a rule names one VLAN, or an address or prefix inside one`;
  };

  /** A forwarding rule's address that only the router's own traffic or a broadcast has: the rule never matches. */
  const unforwardedAddress = (ref: string): string | undefined => {
    // A /32 is its one address: 192.168.10.1/32 never matches either.
    const single = ref.endsWith('/32') ? ref.slice(0, -'/32'.length) : ref;
    const address = single.includes('/') ? undefined : parseAddress(single);
    const vlan = address === undefined ? undefined : zoneVlan(single);
    const what = vlan && notAHost(address!, vlan);
    if (!what) return undefined;
    const why = { gateway: '; traffic to or from the router itself does not pass between VLANs', network: ', not a host\'s', broadcast: '; the router does not forward broadcasts' };
    return `${ref} ${what.text}${why[what.kind]}, so the rule never matches`;
  };
  return { zoneVlan, zoneProblem, unforwardedAddress };
}
