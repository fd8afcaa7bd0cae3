/** Names of the chains we own, and the jumps that hook them in. Every chain we write starts with `VGW-`. */
import type { TableName } from '../observe/facts.js';
import type { Jump } from './types.js';

export const OUR_PREFIX = 'VGW-';
/** The chains rules.dir's templates fill (USER_HOOKS). */
export const USER_PREFIX = 'VGW-USER-';
/**
 * Gateway addresses we add carry this prefix-route metric: iproute2 here has no address "proto" tag, and the
 * metric survives in `ip -json addr`, so an address of ours is recognised even after the config stops naming it.
 */
export const OUR_ADDRESS_METRIC = 7010;
/**
 * The routing protocol number our default route is set with (`ip route replace default … proto 122`): it changes
 * nothing in routing, but the netlink monitor tells our own route change (not news) from anybody else's.
 */
export const OUR_ROUTE_PROTO = 122;
/** Counts established traffic per pair of zones in one hash lookup (source net, outgoing NIC) per set. */
export const ACCOUNTING_SET = 'VGW-PAIRS';
/** Destinations per accounting set (below the 64 members with one hash that a bucket holds). */
export const ACCOUNTING_SHARD = 48;
export const ACCOUNTING_SET_TYPE = 'hash:net,iface';
/** The zones' NICs (as "any address, this NIC"), for accepting new connections to any zone in one lookup. */
export const NIC_SET = 'VGW-NICS';
/**
 * Anti-spoofing (BCP 38, VGW-SOURCES): every VLAN's subnet (hash:net), each ready VLAN's subnet with its NIC
 * (hash:net,iface, matched `src,src`), and the networks routed through a VLAN's NIC with that NIC (only while
 * there are some). A source in the first set must come in on the NIC the second pairs with it; another source on a
 * VLAN's NIC must be in the third.
 */
export const SUBNET_SET = 'VGW-SUBNETS';
export const SUBNET_SET_TYPE = 'hash:net';
export const SUBNET_NIC_SET = 'VGW-SUBNET-NICS';
export const ROUTED_SET = 'VGW-ROUTED';
/** The subnets of the VLANs waiting for their NIC (hash:net, only while some are): dropped as destinations. */
export const WAITING_SET = 'VGW-WAITING';
/**
 * Does a member of this set of ours let a packet on (the rule matching on it ACCEPTs, or RETURNs from the
 * anti-spoofing checks), rather than stop it (DROP)? Adding such a member to a set the rules in force already
 * match on widens what they let through, as removing a member of the others does: those changes wait for the
 * tables of the same apply (see apply.ts). VGW-PAIRS counts, and also accepts the pairs without rules of their own
 * under `default: accept` (rules/filter/from.hbs).
 */
export const setMemberAdmits = (set: string) => set !== SUBNET_SET && set !== WAITING_SET;
/** The uplink's "any address" as two halves: hash:net types cannot hold a /0. */
export const ANY_HALVES = ['0.0.0.0/1', '128.0.0.0/1'];
export const FORWARD_CHAIN = 'VGW-FORWARD';
/** The anti-spoofing checks, jumped to first from VGW-FORWARD (rules/filter/sources.hbs). */
export const SOURCES_CHAIN = 'VGW-SOURCES';
export const PREROUTING_CHAIN = 'VGW-PREROUTING';
export const POSTROUTING_CHAIN = 'VGW-POSTROUTING';

/** Chains are keyed by VLAN id, not name: ids are short (names would overflow 28 characters in pair chains). */
export const zoneKey = (id: number | 'uplink') => (id === 'uplink' ? 'UP' : String(id));
export const fromChain = (key: string) => `VGW-FROM-${key}`;
export const pairChain = (from: string, to: string) => `VGW-P-${from}-${to}`;

export type UserHook = 'forward' | 'prerouting' | 'postrouting';
export const USER_HOOKS: Record<UserHook, { table: TableName; chain: string }> = {
  forward: { table: 'filter', chain: 'VGW-USER-FORWARD' },
  prerouting: { table: 'nat', chain: 'VGW-USER-PREROUTING' },
  postrouting: { table: 'nat', chain: 'VGW-USER-POSTROUTING' },
};

export const JUMPS: readonly Jump[] = [
  { table: 'filter', hook: 'FORWARD', target: FORWARD_CHAIN },
  { table: 'nat', hook: 'PREROUTING', target: PREROUTING_CHAIN },
  { table: 'nat', hook: 'POSTROUTING', target: POSTROUTING_CHAIN },
];

/** The body of a hook's jump rule, as we write it (the comment marks it as ours). */
export const jumpBody = (target: string, note?: string) => `-m comment --comment vgw:hook${note ? `-${note}` : ''} -j ${target}`;

/**
 * Written into the FORWARD jump's comment when the apply that creates it also switches ip_forward on: the
 * namespace itself then remembers that forwarding was off before us, and `down` switches it off again.
 */
export const FORWARDING_WAS_OFF = 'fwd-was-0';
export const IP_FORWARD = 'net.ipv4.ip_forward';

export const BUILTIN_CHAINS = new Set(['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING']);

/** Targets a rule may jump to besides our own chains: netfilter's standard targets and extensions. */
export const STANDARD_TARGETS = new Set([
  'ACCEPT', 'DROP', 'RETURN', 'REJECT', 'LOG', 'NFLOG', 'NFQUEUE', 'QUEUE', 'MASQUERADE', 'SNAT', 'DNAT',
  'REDIRECT', 'NETMAP', 'MARK', 'CONNMARK', 'CT', 'NOTRACK', 'TCPMSS', 'CLASSIFY', 'DSCP', 'TOS', 'TTL',
  'AUDIT', 'TRACE', 'SET', 'CHECKSUM', 'TEE', 'CONNSECMARK', 'SECMARK', 'LED', 'IDLETIMER', 'SYNPROXY',
]);
