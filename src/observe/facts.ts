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
  readonly mac: string;
  readonly up: boolean;
  readonly loopback: boolean;
  readonly addresses: readonly Address[];
  readonly stats?: LinkStats;
}

export interface LinkStats {
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
}

/** An ipset as `ipset save` shows it: members with their counters. */
export interface SavedSet {
  readonly type: string;
  readonly members: ReadonlyMap<string, { readonly packets: number; readonly bytes: number }>;
}

export interface Facts {
  readonly links: readonly Link[];
  readonly defaultRoute?: Route;
  readonly sysctls: Readonly<Record<string, string>>;
  readonly backend: Backend;
  readonly tables: Readonly<Record<TableName, SavedTable>>;
  /** Our ipsets (VGW-*), or undefined when the ipset tool is not installed (accounting is then off). */
  readonly sets?: ReadonlyMap<string, SavedSet>;
}

/** What the desired state depends on: which NIC is which (links, default route) and whether ipset is here. */
export type BindingFacts = Pick<Facts, 'links' | 'defaultRoute' | 'sets'>;

export const EMPTY_TABLE: SavedTable = { chains: new Set(), rules: new Map() };
