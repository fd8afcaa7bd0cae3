/**
 * What the cross-field checks (check-*.ts) share: the raw document read defensively (a value of the wrong type is
 * the schema's to report, and reads here as absent), a VLAN as they see it, and what an address is. Pure.
 */
import { broadcastOf, formatCidr, networkOf, type Cidr } from '../net/ipv4.js';
import type { PathSegment, Problem } from './problems.js';

export type Raw = Record<string, unknown>;
export const isObject = (x: unknown): x is Raw => typeof x === 'object' && x !== null && !Array.isArray(x);
export const asArray = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
export const asString = (x: unknown): string | undefined => (typeof x === 'string' ? x : undefined);

/** A list of problems and the one way a check adds to it. */
export function problemList(): { problems: Problem[]; add: (path: PathSegment[], message: string) => void } {
  const problems: Problem[] = [];
  return { problems, add: (path, message) => problems.push({ path, message }) };
}

export interface VlanView {
  index: number;
  name?: string;
  subnet?: Cidr;
  gateway?: number;
}

/**
 * Whether every VLAN's subnet is known. One that is missing or invalid (a mistyped `subnett:`, an entry that is no
 * mapping) is the schema's to report; an address in no known VLAN may be in that one, so "outside every VLAN" would
 * be a second, false problem beside it.
 */
export const subnetsKnown = (vlans: readonly VlanView[]): boolean => vlans.length > 0 && vlans.every((v) => v.subnet !== undefined);

/** An address in a VLAN that is not a host's: the router's own (the VLAN's gateway), or the subnet's network or broadcast address. */
export function notAHost(address: number, vlan: VlanView & { subnet: Cidr }): { kind: 'gateway' | 'network' | 'broadcast'; text: string } | undefined {
  if (address === vlan.gateway) return { kind: 'gateway', text: `is the gateway's own address on ${vlan.name ?? `vlans[${vlan.index}]`}` };
  if (address === networkOf(vlan.subnet)) return { kind: 'network', text: `is the network address of ${formatCidr(vlan.subnet)}` };
  if (address === broadcastOf(vlan.subnet)) return { kind: 'broadcast', text: `is the broadcast address of ${formatCidr(vlan.subnet)}` };
  return undefined;
}

/** A VLAN as messages name it: `vlans[0] (office, 192.168.10.0/24)`, or without the name when that is invalid. */
export function vlanLabel(v: VlanView & { subnet: Cidr }): string {
  return `vlans[${v.index}] (${v.name !== undefined ? `${v.name}, ` : ''}${formatCidr(v.subnet)})`;
}

/** Whether a prefix is written as iptables prints it back: no leading zero in its length, no host bits. */
export function prefixProblem(text: string, cidr: Cidr): string | undefined {
  if (/\/0\d$/.test(text)) return `${text} has a leading zero in its prefix length; did you mean ${formatCidr(cidr)}?`;
  if (networkOf(cidr) !== cidr.network) return `${text} has host bits set; did you mean ${formatCidr(cidr)}?`;
  return undefined;
}

/** The address space no host is given an address in, by an address's first octet. */
export function specialSpace(address: number): string | undefined {
  const first = Math.floor(address / 2 ** 24);
  if (first === 0) return '0.0.0.0/8 ("this network")';
  if (first === 127) return 'loopback (127.0.0.0/8)';
  if (first >= 224 && first < 240) return 'multicast (224.0.0.0/4)';
  if (first >= 240) return 'reserved (240.0.0.0/4)';
  return undefined;
}

/** What an address is when it cannot be a host's: a next hop or a source address must be unicast. */
export function notUnicast(address: number): string | undefined {
  if (address === 0) return 'the unspecified address';
  if (address === 2 ** 32 - 1) return 'the limited broadcast address';
  const space = specialSpace(address);
  return space ? `in ${space} address space` : undefined;
}
