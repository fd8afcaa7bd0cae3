/**
 * Zones (each ready VLAN, plus the uplink) and the small pure helpers the planner builds rules from: resolving a
 * rule's from/to to its zone, splitting port lists for multiport, and the accounting sets. Pure.
 */
import { parsePorts } from '../config/validate.js';
import { broadcastOf, contains, networkOf, parseAddress, parseCidr } from '../net/ipv4.js';
import { ACCOUNTING_SET, ACCOUNTING_SET_TYPE, ACCOUNTING_SHARD, ANY_HALVES, NIC_SET, ROUTED_SET, SUBNET_NIC_SET, SUBNET_SET, SUBNET_SET_TYPE, WAITING_SET } from './chains.js';
import type { DesiredSet, VlanBinding, Zone } from './types.js';
import { setHashsize } from './set-size.js';

export interface ZoneModel {
  readonly name: Zone;
  readonly key: string;
  readonly nic: string;
  readonly chain: string;
  readonly subnet: string | null;
}

/** multiport takes at most 15 ports, a range counting as two. */
function multiportChunks(ports: string | number): string[] {
  const chunks: string[] = [];
  let current: string[] = [];
  let slots = 0;
  for (const [low, high] of parsePorts(ports)) {
    const cost = low === high ? 1 : 2;
    if (slots + cost > 15) {
      chunks.push(current.join(','));
      current = [];
      slots = 0;
    }
    current.push(low === high ? String(low) : `${low}:${high}`);
    slots += cost;
  }
  if (current.length > 0) chunks.push(current.join(','));
  return chunks;
}

/** multiportChunks for one plan, each distinct port list split once (configs repeat them across pairs). */
export function portChunker(): (ports: string | number) => readonly string[] {
  const cache = new Map<string | number, string[]>();
  return (ports) => cache.get(ports) ?? cache.set(ports, multiportChunks(ports)).get(ports)!;
}

/**
 * Resolves a rule's from/to (a zone name, or an address / prefix inside a VLAN) to its zone once per plan: VLAN
 * subnets never overlap, so each reference names exactly one zone, and each rule belongs to exactly one pair.
 */
export function zoneResolver(zones: readonly ZoneModel[]): (ref: string) => { zone: ZoneModel; address: string | null } | undefined {
  const byName = new Map(zones.map((z) => [z.name, z]));
  const subnets = zones.filter((z) => z.subnet !== null).map((z) => ({ zone: z, cidr: parseCidr(z.subnet!)! }));
  const cache = new Map<string, { zone: ZoneModel; address: string | null } | undefined>();
  return (ref) => {
    if (cache.has(ref)) return cache.get(ref);
    let found: { zone: ZoneModel; address: string | null } | undefined;
    const named = byName.get(ref);
    if (named) found = { zone: named, address: null };
    else if (ref.includes('/')) {
      const c = parseCidr(ref);
      const hit = c && subnets.find((s) => networkOf(c) >= networkOf(s.cidr) && broadcastOf(c) <= broadcastOf(s.cidr));
      if (hit) found = { zone: hit.zone, address: ref };
    } else {
      const a = parseAddress(ref);
      const hit = a === undefined ? undefined : subnets.find((s) => contains(s.cidr, a));
      if (hit) found = { zone: hit.zone, address: ref };
    }
    cache.set(ref, found);
    return found;
  };
}

/**
 * The accounting sets: one member per (source net, outgoing NIC) pair of zones, the uplink's "any" source as
 * two halves. hash:net,iface hashes only the net, and a bucket holds at most 64 members with one hash, so a
 * source's members are spread over sets by destination, at most ACCOUNTING_SHARD per set.
 */
export function accountingSets(zones: readonly ZoneModel[]): DesiredSet[] {
  return lastSets(zones, 'accounting', makeAccountingSets);
}

/**
 * The sets made for the zones of the last plan, by what they are made from (each zone's name, NIC and subnet, in
 * order). A plan whose zones are those of the plan before (a reload that changes rules, not VLANs) gets the very
 * same sets: 10,000 accounting members are not built and sized again, and a supervisor that knows the members it
 * left in the kernel (KnownSets, by these objects) does not compare them again.
 */
const madeFor = new Map<'accounting' | 'nic', { key: string; sets: DesiredSet[] }>();
function lastSets(zones: readonly ZoneModel[], kind: 'accounting' | 'nic', make: (zones: readonly ZoneModel[]) => DesiredSet[]): DesiredSet[] {
  const key = JSON.stringify(zones.map((z) => [z.name, z.nic, z.subnet]));
  const last = madeFor.get(kind);
  if (last?.key === key) return last.sets;
  const sets = make(zones);
  madeFor.set(kind, { key, sets });
  return sets;
}

function makeAccountingSets(zones: readonly ZoneModel[]): DesiredSet[] {
  const sets: Array<Unsized & { role: 'accounting'; members: Array<{ member: string; from: Zone; to: Zone }> }> = [];
  zones.forEach((to, toIndex) => {
    const shard = Math.floor(toIndex / ACCOUNTING_SHARD);
    const set = sets[shard] ?? (sets[shard] = { name: `${ACCOUNTING_SET}-${shard}`, type: ACCOUNTING_SET_TYPE, role: 'accounting', members: [] });
    for (const from of zones) {
      if (from === to) continue;
      for (const net of from.subnet === null ? ANY_HALVES : [from.subnet]) set.members.push({ member: `${net},${to.nic}`, from: from.name, to: to.name });
    }
  });
  return sets.map(sized);
}

/**
 * The zones' NICs, each as the two halves of "any address" with the NIC (hash:net,iface, matched `dst,dst`): a
 * new connection out of one of these NICs is headed into a zone of ours, wherever it goes in it. Sharded like
 * the accounting sets (each half holds one member per NIC of its set).
 */
export function nicSets(zones: readonly ZoneModel[]): DesiredSet[] {
  return lastSets(zones, 'nic', makeNicSets);
}

function makeNicSets(zones: readonly ZoneModel[]): DesiredSet[] {
  const sets: Array<Unsized & { members: Array<{ member: string }> }> = [];
  zones.forEach((zone, index) => {
    const shard = Math.floor(index / ACCOUNTING_SHARD);
    const set = sets[shard] ?? (sets[shard] = { name: `${NIC_SET}-${shard}`, type: ACCOUNTING_SET_TYPE, role: 'verdict', members: [] });
    for (const half of ANY_HALVES) set.members.push({ member: `${half},${zone.nic}` });
  });
  return sets.map(sized);
}

/** The sets VGW-SOURCES and VGW-FORWARD decide on (see SUBNET_SET and WAITING_SET). */
export interface SourceSets {
  readonly subnets: DesiredSet;
  readonly subnetNics: DesiredSet;
  /** Only while a network is routed through a VLAN's NIC. */
  readonly routed?: DesiredSet;
  /** Only while a VLAN waits for its NIC. */
  readonly waiting?: DesiredSet;
}

/**
 * The anti-spoofing sets: every VLAN's subnet, waiting ones included (no NIC of ours carries their hosts yet, so no
 * source of theirs is genuine); each ready VLAN's subnet with its NIC; the networks routed through a VLAN's NIC
 * with it. And the waiting VLANs' subnets, as destinations nothing may reach.
 */
export function sourceSets(vlans: readonly VlanBinding[]): SourceSets {
  const ready = vlans.filter((b) => b.nic);
  // A host route's member as `ipset save` prints it, without its /32: written with it, the set would never read
  // back as planned, and every pass would delete and add it again (its counters lost each time).
  const routed = ready.flatMap((b) => (b.routed ?? []).map((net) => ({ member: `${net.replace(/\/32$/, '')},${b.nic!.name}` })));
  const waiting = vlans.filter((b) => !b.nic).map((b) => ({ member: b.vlan.subnet }));
  return {
    subnets: sized({ name: SUBNET_SET, type: SUBNET_SET_TYPE, role: 'verdict', members: vlans.map((b) => ({ member: b.vlan.subnet })) }),
    subnetNics: sized({ name: SUBNET_NIC_SET, type: ACCOUNTING_SET_TYPE, role: 'verdict', members: ready.map((b) => ({ member: `${b.vlan.subnet},${b.nic!.name}` })) }),
    ...(routed.length > 0 ? { routed: sized({ name: ROUTED_SET, type: ACCOUNTING_SET_TYPE, role: 'verdict', members: routed }) } : {}),
    ...(waiting.length > 0 ? { waiting: sized({ name: WAITING_SET, type: SUBNET_SET_TYPE, role: 'verdict', members: waiting }) } : {}),
  };
}

type Unsized = Omit<DesiredSet, 'hashsize'>;

/** A desired set with the buckets it is made with (DesiredSet.hashsize). */
const sized = (set: Unsized): DesiredSet => ({ ...set, hashsize: setHashsize(set.type, set.members.map((m) => m.member)) });
