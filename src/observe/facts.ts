/** What observe/ reads from a namespace: plain data, the input to the pure planner. */

export interface Address {
  readonly address: string;
  readonly prefix: number;
  /** The prefix-route metric; ours carry OUR_ADDRESS_METRIC so they can be found (and removed) again. */
  readonly metric?: number;
}

export interface Link {
  readonly index: number;
  readonly name: string;
  /**
   * The NIC's alternative names (`ip link property add dev eth1 altname office0`), absent when it has none. `ip`
   * takes one wherever it takes a name, so a config may name the NIC by one; iptables matches `-i`/`-o` on the name
   * alone, so everything the gateway writes uses `name`.
   */
  readonly altnames?: readonly string[];
  readonly mac: string;
  /** Administratively up (`ip link set up`): what the planner brings a VLAN's NIC to. */
  readonly up: boolean;
  /**
   * The link has carrier (LOWER_UP): false for an up NIC whose cable is out, whose veth peer is down, or whose parent
   * (a macvlan's, a VLAN's) lost its link (`ip link`: NO-CARRIER, state DOWN or LOWERLAYERDOWN), and for a NIC that
   * is down. It routes nobody then, though nothing in the plan changes: only vlan_up, uplink_up and /status say so.
   * Absent: not read (taken as there).
   */
  readonly carrier?: boolean;
  readonly loopback: boolean;
  readonly addresses: readonly Address[];
  readonly stats?: LinkStats;
}

interface LinkStats {
  readonly rxBytes: number;
  readonly rxPackets: number;
  readonly rxDropped: number;
  readonly txBytes: number;
  readonly txPackets: number;
  readonly txDropped: number;
}

export interface Route {
  readonly gateway?: string;
  readonly dev?: string;
  /** Absent for metric 0: the route ours replaces (`ip route replace default …` sets metric 0). */
  readonly metric?: number;
  /** A TOS is part of a route's key too: one with a TOS is not the route ours replaces either. */
  readonly tos?: string;
  /**
   * The route as `ip route replace` re-creates it exactly (protocol, source, onlink, metric, multipath next hops):
   * what a rollback puts back.
   */
  readonly spec?: string;
}

/** A network routed through a NIC (a static route via a host on it): a source that NIC may forward from. */
export interface RoutedPrefix {
  readonly prefix: string;
  readonly dev: string;
  /** Absent for 0. Of two routes to one prefix the kernel uses the lower (a backup route has the higher). */
  readonly metric?: number;
}

export type Backend = 'nft' | 'legacy';
export type TableName = 'filter' | 'nat';
export const TABLES: readonly TableName[] = ['filter', 'nat'];

export interface SavedRule {
  /** The rule as iptables-save prints it after `-A CHAIN ` (re-usable in a restore payload). */
  readonly body: string;
  /** Our content hash, from the `vgw:` comment, if the rule carries one. */
  readonly hash?: string;
  readonly packets: number;
  readonly bytes: number;
}

export interface SavedTable {
  /** Every chain declared in the table, built-in or not. */
  readonly chains: ReadonlySet<string>;
  /** Rules per chain, in order. */
  readonly rules: ReadonlyMap<string, readonly SavedRule[]>;
  /** Built-in chains whose policy is not ACCEPT (`:FORWARD DROP [0:0]`): a namespace's rules live there too. */
  readonly policies?: ReadonlyMap<string, string>;
}

/**
 * One of our ipsets: its type and members (counters are the stats collector's business, not the planner's). The
 * members may be the ones a supervisor knows it left there (KnownSets), when the set's header shows that many.
 */
export interface SavedSet {
  readonly type: string;
  readonly members: ReadonlySet<string>;
  /** Made without packet and byte counters (the gateway makes every set with them); absent: with. */
  readonly noCounters?: boolean;
  /** Of another address family than inet (IPv4), which every set of the gateway is: `inet6`. */
  readonly family?: string;
  /**
   * Its hash table's buckets and its most members, as the kernel shows them (absent where not shown): a set made
   * smaller than the gateway makes it now (by an older version, before sets were sized for their members, or for
   * fewer source nets than there are now) is made again (see setRemake).
   */
  readonly hashsize?: number;
  readonly maxelem?: number;
  /**
   * How many members the kernel lets a bucket hold, as it shows it (absent where not shown). For a hash:net,iface set
   * the kernel raises it as one net gathers members, up to BUCKET_LIMIT; a set there no longer grows any bucket, and
   * refuses a member that would need one to grow ("Hash is full") for good, even emptied: it is made again.
   */
  readonly bucketsize?: number;
}

/**
 * What a supervisor knows its sets to hold since its last good pass (set name → members). Its later passes read
 * only the sets' headers (`ipset list -t`, a few milliseconds) and take these members where every count still
 * matches, instead of reading 10,000 members each time. The count catches a set flushed, destroyed, or with
 * members added or deleted; the stats collector, which reads every member for its counters every few seconds,
 * catches a member swapped for another and makes the supervisor forget what it knew.
 */
export type KnownSets = ReadonlyMap<string, ReadonlySet<string>>;

/**
 * Our tables as a supervisor's last pass read them, or left them by its own write (tablesAfter), while the stats
 * collector (which reads every rule with its counters every few seconds anyway) keeps finding them as planned. A
 * later pass plans against these instead of reading 10,000 rules again, and writes from them. Had they changed
 * behind its back since the collector's last reading, the restore refuses the payload (a jump to delete is not
 * there, a chain to drop is still referenced), everything is rolled back, and the pass reads the tables and goes
 * again; drift the plan does not touch is the collector's next reading's to find.
 */
export interface KnownTables {
  readonly backend: Backend;
  readonly tables: Facts['tables'];
}

export interface Facts {
  readonly links: readonly Link[];
  readonly defaultRoute?: Route;
  /** The main table's other routes through a NIC (see parseRoutedPrefixes); absent when not read. */
  readonly routed?: readonly RoutedPrefix[];
  readonly sysctls: Readonly<Record<string, string>>;
  readonly backend: Backend;
  readonly tables: Readonly<Record<TableName, SavedTable>>;
  /** Our ipsets (VGW-*), or undefined when the ipset tool is not installed (accounting is then off). */
  readonly sets?: ReadonlyMap<string, SavedSet>;
  /** Why the backend is the one (read both: see readTables); absent when a pass was told which. */
  readonly backendWhy?: string;
  /**
   * The other backend's FORWARD chain, when it has rules or a policy other than ACCEPT: the kernel runs both rule
   * sets, so it filters the packets the gateway's policy lets through.
   */
  readonly otherForward?: OtherForward;
  /**
   * The namespace's iptables-legacy tables, when it has some and iptables-legacy is not installed here (Alpine
   * 3.22 ships none): the gateway writes iptables-nft without knowing what they hold, and the kernel runs them too.
   */
  readonly unreadLegacy?: readonly string[];
  /**
   * The ip6tables rule set whose filter FORWARD chain drops what it does not accept (its policy DROP, or a rule that
   * drops or rejects every packet): `ip6tables-nft` or `ip6tables-legacy`. Forwarded IPv6 then meets a policy of the
   * operator's. Read only while IPv6 is forwarded (all.forwarding or all.force_forwarding is 1, or a NIC's own
   * force_forwarding: see readIpv6ForwardDrop); absent: none drops, or
   * ip6tables could not be read.
   */
  readonly ipv6ForwardDroppedBy?: string;
  /**
   * The NICs (loopback aside) whose own net.ipv6.conf.<nic>.force_forwarding is 1 (Linux 6.17+), in link order: IPv6
   * coming in on them is forwarded with all.forwarding at 0. Read only where the kernel has the setting and neither
   * all.forwarding nor all.force_forwarding is 1 (that warning covers every NIC); absent: none.
   */
  readonly ipv6ForceForwardingNics?: readonly string[];
  /**
   * The words that run a command where these facts were read (`ip netns exec NS` under --netns: CommandRunner.prefix),
   * absent in the process's own namespace: a command a message tells the operator to run is shown with them.
   */
  readonly commandPrefix?: readonly string[];
}

/**
 * What choosing the backend found besides it (read both: see readTables). A supervisor's later passes read their
 * backend alone and carry these on from the pass that chose it, so its warnings stay shown.
 */
export type BackendFindings = Pick<Facts, 'backendWhy' | 'otherForward' | 'unreadLegacy'>;

export const backendFindingsOf = ({ backendWhy, otherForward, unreadLegacy }: Facts): BackendFindings => ({
  ...(backendWhy ? { backendWhy } : {}), ...(otherForward ? { otherForward } : {}), ...(unreadLegacy ? { unreadLegacy } : {}),
});

export interface OtherForward {
  readonly backend: Backend;
  readonly policy?: string;
  readonly rules: number;
}

/**
 * What the desired state depends on: which NIC is which (links, default route), the networks routed through them
 * (sources those NICs may forward from), and whether ipset is here.
 */
export type BindingFacts = Pick<Facts, 'links' | 'defaultRoute' | 'routed' | 'sets'>;

export const EMPTY_TABLE: SavedTable = { chains: new Set(), rules: new Map() };
