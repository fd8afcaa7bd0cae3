/** The planner's vocabulary: desired state, and the steps that take a namespace from what is to what should be. */
import type { Vlan } from '../config/schema.js';
import type { Backend, Link, Route, TableName } from '../observe/facts.js';

export type Zone = string; // a VLAN name or 'uplink'
type SetRole = 'accounting' | 'verdict';
export const UPLINK: Zone = 'uplink';

export interface VlanBinding {
  readonly vlan: Vlan;
  /** The NIC carrying this VLAN, or undefined while Docker has not attached it yet. */
  readonly nic?: Link;
  readonly note?: string;
  /**
   * Networks routed through the NIC besides the VLAN's subnet (static routes via a host on it, none overlapping a
   * VLAN's subnet): sources it may forward from. Every other source arriving on it is forged.
   */
  readonly routed?: readonly string[];
  /**
   * Of `routed`, those whose route through this NIC is the one the kernel uses: no route to the same prefix through
   * another VLAN's NIC has a lower metric (a backup route has the higher; a multipath route is in use on each hop).
   * Such a network is NATed as this VLAN is.
   */
  readonly routedInUse?: readonly string[];
}

export interface UplinkBinding {
  readonly nic?: Link;
  readonly note?: string;
}

/** Why a rule exists, so counters can be reported per VLAN pair without reading rule text. */
export type RuleMeaning =
  | { readonly kind: 'forward'; readonly from: Zone; readonly to: Zone; readonly action: 'accept' | 'drop' | 'reject' }
  | { readonly kind: 'nat'; readonly vlan: string; readonly type: 'masquerade' | 'snat' | 'dnat' }
  /** The drops that are no pair's policy: see DROP_REASONS. */
  | { readonly kind: 'drop'; readonly reason: DropReason };

/**
 * Why a packet is dropped outside the pairs' policy: conntrack INVALID; a forged source (VGW-SOURCES); from or to a
 * NIC the gateway does not manage; to a VLAN waiting for its NIC; back out of the NIC it came in on (VGW-FROM-*).
 */
export const DROP_REASONS = ['invalid', 'spoofed', 'unmanaged', 'waiting', 'hairpin'] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export interface DesiredRule {
  /** The rule after `-A CHAIN `, comment included. */
  readonly line: string;
  readonly hash: string;
  /** The rule's -j/-g target, read once when it is rendered (the jump check needs every rule's). */
  readonly target?: string;
  readonly meaning?: RuleMeaning;
}

export interface DesiredChain {
  readonly table: TableName;
  readonly name: string;
  readonly rules: readonly DesiredRule[];
}

/** The one jump per built-in chain that hooks our chains in. */
export interface Jump {
  readonly table: TableName;
  readonly hook: string;
  readonly target: string;
  /** Extra words for the jump's comment (see FORWARDING_WAS_OFF). */
  readonly note?: string;
}

/**
 * An ipset of ours. An accounting set's members say which pair of zones each one counts; no verdict depends on
 * them, so they are written beside the tables and do not hold up forwarding. A verdict set's members (any
 * address, a zone's NIC: "this NIC is ours") decide whether a new connection is accepted, so they are in place
 * before the tables that match on them; they count nothing.
 */
export interface DesiredSet {
  readonly name: string;
  readonly type: string;
  readonly role: SetRole;
  readonly members: ReadonlyArray<{ readonly member: string; readonly from?: Zone; readonly to?: Zone }>;
  /**
   * The buckets the gateway makes it with (setHashsize of its members), worked out with the desired state: the
   * plan compares it with every set's header, and a `vlan-gateway apply` that finds its desired state in the plan
   * cache then does not walk every member again (about 6 ms at 10,000 rule lines, on a no-op's budget of 20).
   */
  readonly hashsize: number;
}

interface DesiredAddress {
  readonly vlan: string;
  readonly nic: string;
  readonly address: string;
  readonly prefix: number;
}

export interface Desired {
  readonly vlans: readonly VlanBinding[];
  readonly uplink: UplinkBinding;
  readonly addresses: readonly DesiredAddress[];
  readonly route?: { readonly gateway: string; readonly dev?: string };
  readonly sysctls: Readonly<Record<string, string>>;
  readonly chains: readonly DesiredChain[];
  readonly jumps: readonly Jump[];
  readonly sets: readonly DesiredSet[];
}

export interface ChainChange {
  readonly chain: string;
  readonly change: 'create' | 'rewrite' | 'delete';
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** A rewrite that adds and removes no rule (their order changed, or a duplicate went): the rules, in order. */
  readonly order?: readonly string[];
}

export interface JumpChange {
  readonly hook: string;
  readonly target: string;
  readonly change: 'add' | 'remove';
  /** The jump rule's body, as inserted or as found (and deleted). */
  readonly body: string;
  /** A removed jump's 1-based place in its hook as found (where a rollback puts it back). */
  readonly position?: number;
  /** Why a removed jump goes (shown by plan): moved to the top, a copy, not ours, its chain gone. */
  readonly why?: string;
  /** An added jump where the hook's packets went around its chain until now: none was there, or one that matched
   * only some of them, or one below a rule that could accept them (Plan.unpoliced). */
  readonly uncovered?: true;
}

export type Step =
  | { readonly kind: 'link-up'; readonly nic: string; readonly vlan: string }
  | { readonly kind: 'address-add'; readonly nic: string; readonly address: string; readonly prefix: number; readonly vlan: string }
  | { readonly kind: 'address-del'; readonly nic: string; readonly address: string; readonly prefix: number; readonly vlan?: string }
  | { readonly kind: 'route'; readonly gateway: string; readonly dev?: string; readonly previous?: Route }
  | {
    readonly kind: 'table';
    readonly table: TableName;
    /** `iptables-restore --noflush` input that brings our chains and jumps to the desired state. */
    readonly payload: string;
    /** Input (with counters) that puts back what this step changes, for rollback. */
    readonly undo: string;
    readonly chains: readonly ChainChange[];
    readonly jumps: readonly JumpChange[];
  }
  /** Creates the set if needed (before the tables that match on it) and adds / deletes members (see SetRole). */
  | {
    readonly kind: 'set-update'; readonly set: string; readonly type: string; readonly role: SetRole; readonly create: boolean;
    readonly add: readonly string[]; readonly del: readonly string[];
    /**
     * The set exists with fewer buckets (or a lower maxelem) than the gateway makes it with: made by an older
     * version, before sets were sized for their members, it keeps being rehashed as it fills (`create -exist` keeps
     * it as it is). Before anything else it is made again with this hashsize under remakeName, given the members it
     * holds with their counters, and swapped in (the rules match on it throughout); `add` and `del` then go to it.
     * So is a set whose buckets the kernel shows at their limit (BUCKET_LIMIT): it refuses new members for good.
     */
    readonly remake?: number;
    /** The remake is for the second reason: the set's buckets are at the kernel's limit (said in the plan). */
    readonly full?: true;
    /** The set is made (or made again) with this maxelem: more members than the kernel's default takes (setMaxelem). */
    readonly maxelem?: number;
  }
  /** Removes a set no longer wanted; runs after the tables stopped matching on it. */
  | { readonly kind: 'set-destroy'; readonly set: string; readonly type: string; readonly members: readonly string[] }
  | { readonly kind: 'sysctl'; readonly key: string; readonly value: string; readonly previous?: string }
  | ConntrackClear;

/** An iptables-restore of one table: the step most code looks at alone. */
export type TableStep = Extract<Step, { kind: 'table' }>;

/**
 * UDP flows that a change of a UDP port forward leaves going the wrong way (plan/conntrack.ts): conntrack decides a
 * flow's NAT on its first packet, so a client that kept sending from one port before the forward existed stays with
 * the gateway itself, and one forwarded by a forward now removed or moved keeps going to the old host. Their entries
 * are deleted once the nat table is written (apply/conntrack.ts), outside the rollback: a failure leaves the rules
 * applied and is a warning.
 */
export interface ConntrackClear {
  readonly kind: 'conntrack-clear';
  /** The forwarded port, or the first and last of a range, as the flows' original destination port. */
  readonly ports: readonly [number, number];
  readonly forward: 'added' | 'removed' | 'changed';
  /** Flows to one of these addresses (the gateway's own) that were not DNATed: they reached the gateway itself. */
  readonly local?: readonly string[];
  /** Flows DNATed to this host, at these ports: where the forward that goes sent them. */
  readonly target?: { readonly address: string; readonly ports: readonly [number, number] };
}

/**
 * Which of the warnings a plan can carry one is: the `kind` label of vlan_gateway_warnings, a fixed list so that every
 * series is there at 0 from the first scrape, and an alert or a dashboard can tell an IPv6 hole from a missing tool.
 * Address conflicts are not among them (they have vlan_gateway_address_conflict).
 */
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
] as const;
export type WarningKind = typeof WARNING_KINDS[number];

/**
 * One of a plan's warnings: its text (what plan, apply, the log and /status say), and its kind, given by the code that
 * says it (never read back from the text).
 */
export interface Warning {
  readonly kind: WarningKind;
  readonly text: string;
}

export interface Plan {
  readonly desired: Desired;
  readonly steps: readonly Step[];
  /** Forwarding was off before the gateway switched it on (kept in the FORWARD jump's comment; see diff). */
  readonly forwardingWasOff?: boolean;
  /**
   * What lets traffic past the policy without the gateway's say (plan/warnings.ts), and what the conntrack clears
   * could not do (reconcile/once.ts); none is a step.
   */
  readonly warnings?: readonly Warning[];
  /** The iptables backend the tables were read from and are written to, and why it (Facts.backendWhy). */
  readonly backend?: { readonly name: Backend; readonly why?: string };
  /**
   * The plan puts in VGW-FORWARD where there was none, and forwarding is on already: whatever the namespace forwarded
   * until now met no policy of the gateway's and no NAT of it (where the gateway switches forwarding on, after its
   * tables, nothing was forwarded). In a container that is every restart: Docker sets `ip_forward=1` (--sysctl) and
   * attaches the NICs before the supervisor starts, and the VLAN hosts still send to the gateway's MAC they knew (a
   * restarted container keeps its MACs), so their packets are forwarded as soon as the NICs are there. Conntrack
   * keeps such a flow's verdict and (missing) NAT for as long as it goes on: a ping or a UDP stream between VLANs the
   * policy keeps apart, once answered, is a reply for ever after; one to the Internet stays un-NATed, unanswered.
   * Their entries (`local`: the gateway's own addresses; an entry to or from one of them is not forwarded) are
   * deleted once the tables are in (apply/conntrack.ts), so that their next packet meets the policy and the NAT; a
   * NATed entry is not one of them (a NAT was there: ours before a `down`, a router's own before the gateway).
   * `bypassed`: our chains were there, but a jump to VGW-FORWARD or VGW-POSTROUTING that every packet walks was not
   * (deleted, or narrowed to some packets, or below a rule that could accept them: JumpChange.uncovered), behind
   * our back; the flows forwarded meanwhile met no policy or no NAT just the same.
   */
  readonly unpoliced?: { readonly local: readonly string[]; readonly bypassed?: true };
}
