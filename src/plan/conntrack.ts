/**
 * Which UDP flows a change of the port forwards leaves going the wrong way. Conntrack decides a flow's NAT on its
 * first packet, and a UDP flow lasts as long as it keeps sending (30 s idle, 2 minutes once answered):
 * - a client that was sending to a port before it was forwarded (a WireGuard or SIP peer retrying from its fixed
 *   port) has an entry addressed to the gateway itself, not DNATed: its datagrams never reach the new forward's host;
 * - a flow DNATed by a forward that is removed, or points at another host now, keeps going to the old host.
 * Docker (published UDP ports) and kube-proxy (UDP services) delete such entries when they change a mapping; so does
 * the gateway, once the nat table is written. TCP needs none of it: a client opens each connection from a new port.
 *
 * The forwards are read from the nat step's own changes to VGW-PREROUTING (the rules it adds, and the rules found
 * that it removes), so a pass that leaves the forwards as they are clears nothing, and `down` clears what the
 * forwards it removes had DNATed. A jump to VGW-PREROUTING put back (someone flushed PREROUTING) makes every forward
 * new again: while it was gone, nothing was forwarded (but not one written again with the note in the same restore, as
 * the first pass after an upgrade from a version that wrote none does: it was there throughout). Pure.
 */
import { originalDport, parseConntrackLine, type ConntrackEntry } from '../observe/parse-conntrack.js';
import { PREROUTING_CHAIN } from './chains.js';
import { tokenAfter, verdictOf } from './rule-text.js';
import type { ConntrackClear, Desired, Plan, Step, TableStep } from './types.js';

/** A UDP port forward as its DNAT rule in VGW-PREROUTING says it. */
export interface ForwardRule {
  readonly nic: string;
  readonly ports: readonly [number, number];
  readonly target: string;
  readonly targetPorts: readonly [number, number];
}

const portRange = (text: string | undefined): [number, number] | undefined => {
  const m = /^(\d{1,5})(?:[:-](\d{1,5}))?$/.exec(text ?? '');
  return m ? [Number(m[1]), Number(m[2] ?? m[1])] : undefined;
};

/**
 * The UDP port forward of a rule body (ours as rendered by rules/nat/prerouting.hbs, or as iptables-save prints it
 * back: `-i eth0 -p udp -m comment … -m addrtype --dst-type LOCAL -m udp --dport 6000:6010 -j DNAT --to-destination
 * 192.168.20.100`), or undefined for any other rule.
 */
export function udpForwardOf(body: string): ForwardRule | undefined {
  if (verdictOf(body) !== 'DNAT' || tokenAfter(body, ['-p', '--protocol']) !== 'udp') return undefined;
  const ports = portRange(tokenAfter(body, ['--dport', '--destination-port']));
  const nic = tokenAfter(body, ['-i', '--in-interface']);
  const destination = tokenAfter(body, ['--to-destination']);
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(.+))?$/.exec(destination ?? '');
  if (!ports || !nic || !m) return undefined;
  const targetPorts = m[2] === undefined ? ports : portRange(m[2]);
  return targetPorts ? { nic, ports, target: m[1]!, targetPorts } : undefined;
}

const overlap = (a: readonly [number, number], b: readonly [number, number]) => a[0] <= b[1] && b[0] <= a[1];
/** How far a forward moves a port (0 for a range, which keeps its ports), if it sends each port to one port. */
const shiftOf = (f: ForwardRule) => (f.ports[1] - f.ports[0] === f.targetPorts[1] - f.targetPorts[0] ? f.targetPorts[0] - f.ports[0] : undefined);
/** Does `a` send the ports it shares with `b` where `b` does (the NIC it takes them on aside)? */
const sameMapping = (a: ForwardRule, b: ForwardRule) => a.target === b.target && (shiftOf(a) !== undefined && shiftOf(a) === shiftOf(b)
  || (a.ports[0] === b.ports[0] && a.ports[1] === b.ports[1] && a.targetPorts[0] === b.targetPorts[0] && a.targetPorts[1] === b.targetPorts[1]));

/**
 * Forwards by their first port, to find those that overlap a range without going through all of them: a config may
 * hold tens of thousands of forwards, and an uplink renamed removes and adds every one (comparing each with each took
 * 15 s for 30,000). Any forwards (those read back may overlap); ours never do, so each search stops at once.
 */
class ForwardIndex {
  private readonly sorted: ForwardRule[];
  /** The highest last port among sorted[0..i]. */
  private readonly reach: number[];
  constructor(forwards: readonly ForwardRule[]) {
    this.sorted = [...forwards].sort((a, b) => a.ports[0] - b.ports[0]);
    let high = -1;
    this.reach = this.sorted.map((f) => (high = Math.max(high, f.ports[1])));
  }

  /** The forwards that take any port from low to high. */
  overlapping([low, high]: readonly [number, number]): ForwardRule[] {
    let after = 0; // the first forward whose first port is above high
    for (let end = this.sorted.length; after < end;) {
      const mid = (after + end) >> 1;
      if (this.sorted[mid]!.ports[0] <= high) after = mid + 1;
      else end = mid;
    }
    const found: ForwardRule[] = [];
    for (let i = after - 1; i >= 0 && this.reach[i]! >= low; i--) if (this.sorted[i]!.ports[1] >= low) found.push(this.sorted[i]!);
    return found;
  }
}

/** The parts of a range that none of `taken` covers. */
function rangeWithout([low, high]: readonly [number, number], taken: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  const parts: Array<[number, number]> = [];
  let next = low;
  for (const [a, b] of [...taken].sort((x, y) => x[0] - y[0])) {
    if (a > next) parts.push([next, Math.min(a - 1, high)]);
    next = Math.max(next, b + 1);
    if (next > high) break;
  }
  if (next <= high) parts.push([next, high]);
  return parts;
}

/**
 * The clears a pass's nat step calls for (none without one). `local`: the gateway's own addresses, where a flow a
 * forward now takes may have been addressed (every address of its NICs, and those the pass adds: a port forward takes
 * any of them that a packet on the uplink is sent to).
 */
export function conntrackClears(steps: readonly Step[], desired: Desired, local: readonly string[]): ConntrackClear[] {
  const nat = steps.find((s): s is TableStep => s.kind === 'table' && s.table === 'nat');
  if (!nat) return [];
  const change = nat.chains.find((c) => c.chain === PREROUTING_CHAIN);
  // A jump written again only for its note (an upgrade) sent every packet through the chain all along: covered.
  const hooked = nat.jumps.some((j) => j.change === 'add' && j.target === PREROUTING_CHAIN && j.uncovered);
  const addedLines = hooked
    ? desired.chains.find((c) => c.table === 'nat' && c.name === PREROUTING_CHAIN)?.rules.map((r) => r.line) ?? []
    : change?.added ?? [];
  const forwards = (lines: readonly string[]) => lines.flatMap((l) => udpForwardOf(l) ?? []);
  const added = forwards(addedLines);
  const removed = forwards(change?.removed ?? []);
  const addedIndex = new ForwardIndex(added);
  const removedIndex = new ForwardIndex(removed);
  const clears: ConntrackClear[] = [];
  const seen = new Set<string>();
  const push = (clear: ConntrackClear) => {
    const key = JSON.stringify(clear);
    if (!seen.has(key)) clears.push(clear);
    seen.add(key);
  };
  const addresses = [...new Set(local)].sort();
  for (const f of removed) {
    const over = addedIndex.overlapping(f.ports);
    // Ports a forward added sends where this one did (a range widened or narrowed, the same mapping taken on another
    // NIC: the uplink renamed): their flows already go where they should, and keep their entries.
    const kept = over.filter((a) => sameMapping(a, f)).map((a) => a.ports);
    const shift = f.targetPorts[0] - f.ports[0];
    for (const ports of rangeWithout(f.ports, kept)) {
      const whole = ports[0] === f.ports[0] && ports[1] === f.ports[1];
      const target = { address: f.target, ports: whole ? f.targetPorts : [ports[0] + shift, ports[1] + shift] as const };
      push({ kind: 'conntrack-clear', ports, forward: over.some((a) => overlap(a.ports, ports)) ? 'changed' : 'removed', target });
    }
  }
  for (const f of added) {
    if (addresses.length === 0) continue;
    const changed = removedIndex.overlapping(f.ports).length > 0;
    push({ kind: 'conntrack-clear', ports: f.ports, forward: changed ? 'changed' : 'added', local: addresses });
  }
  return clears;
}

export const portText = ([low, high]: readonly [number, number]) => (low === high ? String(low) : `${low}-${high}`);

/** A clear as `plan` shows it. */
export function describeClear(clear: ConntrackClear): string {
  const what = clear.target
    ? `forwarded to ${clear.target.address}:${portText(clear.target.ports)}`
    : 'that reached the gateway itself';
  return `~ conntrack: clear UDP flows to ${portText(clear.ports)} ${what} (port forward ${clear.forward})`;
}

const within = (port: number, [low, high]: readonly [number, number]) => port >= low && port <= high;
/** Sent back from where it was sent to: the gateway's conntrack did not DNAT it. */
const notDnated = (e: ConntrackEntry) => e.reply.src === e.original.dst && e.reply.sport === e.original.dport;

/** The clears by the ports they take (a listing of 100,000 entries against the clears of thousands of forwards). */
function clearsByPort(clears: readonly ConntrackClear[]): Array<ConntrackClear[] | undefined> {
  const byPort: Array<ConntrackClear[] | undefined> = [];
  for (const c of clears) for (let port = c.ports[0]; port <= c.ports[1]; port++) (byPort[port] ??= []).push(c);
  return byPort;
}

/**
 * The clear an entry is stale for, if any (see staleEntries), by the clears of its port: a listing of 100,000
 * entries against the clears of thousands of forwards (every one of them when `down` removes them, or the jump is put
 * back) is one look-up per entry, not a walk through every clear.
 */
function staleFor(byPort: ReadonlyArray<readonly ConntrackClear[] | undefined>, e: ConntrackEntry): ConntrackClear | undefined {
  if (e.proto !== 'udp') return undefined;
  return byPort[e.original.dport]?.find((c) => {
    if (c.local) return c.local.includes(e.original.dst) && notDnated(e);
    return c.target !== undefined && !notDnated(e) && e.reply.src === c.target.address && within(e.reply.sport, c.target.ports);
  });
}

/** The `conntrack -D` filter (after the program's name) of a stale entry: see deleteFilters. */
const filterOf = (e: ConntrackEntry) => ['-D', '-p', 'udp', '-d', e.original.dst, '--orig-port-dst', String(e.original.dport), '-r', e.reply.src,
  '--reply-port-src', String(e.reply.sport)];

/**
 * The stale entries of a `conntrack -L` listing, taken line by line as it comes (so that a caller can let other work
 * run between pieces of a big one), and the deletes they call for. A line is parsed only when its original
 * destination port is one that a clear takes: in a table of 100,000 entries, most are not, and reading the port
 * alone is several times quicker than parsing the line.
 */
export class StalePicker {
  private readonly byPort: Array<ConntrackClear[] | undefined>;
  private readonly picked: ConntrackEntry[] = [];
  private readonly filters = new Map<string, string[]>();

  constructor(clears: readonly ConntrackClear[]) {
    this.byPort = clearsByPort(clears);
  }

  /** One line of the listing (without its newline). */
  take(line: string): void {
    const dport = originalDport(line);
    if (dport === undefined || this.byPort[dport] === undefined) return;
    const entry = parseConntrackLine(line);
    if (entry) this.add(entry);
  }

  add(entry: ConntrackEntry): void {
    if (!staleFor(this.byPort, entry)) return;
    this.picked.push(entry);
    const argv = filterOf(entry);
    const key = argv.join(' ');
    if (!this.filters.has(key)) this.filters.set(key, argv);
  }

  /** The stale entries taken so far, in listing order. */
  get stale(): readonly ConntrackEntry[] {
    return this.picked;
  }

  /** Their deletes, one per destination address and port (see deleteFilters), in the order first seen. */
  deletes(): string[][] {
    return [...this.filters.values()];
  }
}

/**
 * The entries the clears are for, and nothing else: UDP, to a forwarded port, and either addressed to one of the
 * gateway's own addresses and not DNATed (a forward added), or DNATed to the old forward's host and port (removed).
 * A VLAN host's own flow to a remote port of the same number is neither (its destination is no address of the
 * gateway's, and it is not DNATed), nor is Docker's DNS (DNATed to 127.0.0.11).
 */
export function staleEntries(entries: readonly ConntrackEntry[], clears: readonly ConntrackClear[]): ConntrackEntry[] {
  const picker = new StalePicker(clears);
  for (const e of entries) picker.add(e);
  return [...picker.stale];
}

/**
 * `conntrack -D` filters (after the program's name) that delete the stale entries and nothing else: one per
 * destination address and port that has stale entries (conntrack takes no range of ports), each as narrow as the
 * entries: to that address and port, and answered from the same address and port (not DNATed: a forward added), or
 * from the old host and its port (a forward removed). An entry made since by the new rules is answered from
 * elsewhere and stays; so does a VLAN host's flow straight to the old host (to its address, not the gateway's).
 */
export function deleteFilters(entries: readonly ConntrackEntry[], clears: readonly ConntrackClear[]): string[][] {
  const picker = new StalePicker(clears);
  for (const e of entries) picker.add(e);
  return picker.deletes();
}

/** Two clears of the flows forwarded without the policy (Plan.unpoliced) as one: every address either knew as the gateway's own. */
export function mergeUnpoliced(a: Plan['unpoliced'], b: Plan['unpoliced']): Plan['unpoliced'] {
  if (!a || !b) return a ?? b;
  return { local: [...new Set([...a.local, ...b.local])].sort(), ...(a.bypassed && b.bypassed ? { bypassed: true as const } : {}) };
}
