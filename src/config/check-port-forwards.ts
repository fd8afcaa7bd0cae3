/**
 * The port forwards: each to a host on a VLAN, each protocol and port forwarded once (a range's ports included), and
 * a range of ports without toPort (its ports are kept). Pure.
 */
import { contains, parseAddress } from '../net/ipv4.js';
import { asArray, asString, isObject, notAHost, problemList, subnetsKnown, type Raw, type VlanView } from './cross-field.js';
import { quoted, type Problem } from './problems.js';
import { portRangeOf } from './schema.js';

/**
 * The forwards of one protocol by port: each port's first forward (the one said as "forwarded there already"), the
 * first of each block of ports, and, to take each port once however many ranges cover it, the next port after each
 * that no forward has taken yet. What a forward overlaps is found in at most a few hundred steps: each range was
 * compared with every range before it, and 60,000 forwards (every port of tcp and udp, by twos) took 45 s.
 */
class PortOwners {
  private static readonly BLOCK = 256;
  // Each array's 0 is its "nothing yet", so a new one needs no filling: 65,537 entries set one by one (and two
  // fill(-1)) took about 5 ms in a new process, at every validation of a config with a port forward (a start of the lab).
  /** Each port's first forward, plus one (0: none). */
  private readonly owner = new Int32Array(65536);
  /** Each block's first forward, plus one (0: none). */
  private readonly blockOwner = new Int32Array(65536 / PortOwners.BLOCK);
  /** For each port, a port at or after it that may be free, plus one (0: the port itself; path-halving pointers; 65536: none is). */
  private readonly next = new Int32Array(65537);

  /** The first forward that took any port from low to high (-1: none). */
  first(low: number, high: number): number {
    const { BLOCK } = PortOwners;
    let best = -1;
    const take = (o: number) => {
      if (o >= 0 && (best < 0 || o < best)) best = o;
    };
    let p = low;
    while (p <= high) {
      if (p % BLOCK === 0 && p + BLOCK - 1 <= high) {
        take(this.blockOwner[p / BLOCK]! - 1);
        p += BLOCK;
      } else {
        take(this.owner[p]! - 1);
        p++;
      }
    }
    return best;
  }

  /** Gives each port from low to high that no forward has yet to `index` (forwards are taken in order). */
  take(low: number, high: number, index: number): void {
    for (let p = this.free(low); p <= high; p = this.free(p + 1)) {
      this.owner[p] = index + 1;
      const block = Math.floor(p / PortOwners.BLOCK);
      if (this.blockOwner[block] === 0) this.blockOwner[block] = index + 1;
      this.next[p] = p + 1 + 1;
    }
  }

  private nextOf(port: number): number {
    const n = this.next[port]!;
    return n === 0 ? port : n - 1;
  }

  private free(port: number): number {
    let p = port;
    for (let q = this.nextOf(p); q !== p; q = this.nextOf(p)) {
      const r = this.nextOf(q);
      this.next[p] = r + 1;
      p = r;
    }
    return p;
  }
}

export function portForwardProblems(input: Raw, vlans: readonly VlanView[]): Problem[] {
  const { problems, add } = problemList();
  const known = subnetsKnown(vlans);
  // Each protocol's ports by their first forward; an overlap is said against the first forward it meets.
  const owners: Partial<Record<'tcp' | 'udp', PortOwners>> = {}; // made for the first forward of each protocol
  const taken: Array<{ low: number; high: number }> = [];
  const text = (low: number, high: number) => (low === high ? String(low) : `${low}-${high}`);
  asArray(input.portForwards).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const to = asString(raw.to);
    const address = to === undefined ? undefined : parseAddress(to);
    const vlan = address === undefined ? undefined : vlans.find((v) => v.subnet && contains(v.subnet, address));
    if (address !== undefined && !vlan && known) add(['portForwards', index, 'to'], `${to} is outside every VLAN`);
    // A forward goes to a host on a VLAN: not to the router itself, nor to a subnet's network or broadcast address.
    const what = address !== undefined && vlan?.subnet ? notAHost(address, { ...vlan, subnet: vlan.subnet }) : undefined;
    if (what) add(['portForwards', index, 'to'], `${to} ${what.text}${what.kind === 'gateway' ? '; a port forward goes to a host on a VLAN' : ''}`);
    const range = portRangeOf(raw.port);
    if (range === undefined) return; // the schema reports an invalid port
    const [low, high] = range;
    const proto = asString(raw.proto) ?? 'tcp';
    if (low !== high && raw.toPort !== undefined) {
      add(['portForwards', index, 'toPort'], `a range of ports is forwarded to the same ports; toPort cannot be given with port ${quoted(String(raw.port))}`);
    }
    if (proto !== 'tcp' && proto !== 'udp') return; // the schema reports another proto: what it overlaps is moot
    taken[index] = { low, high };
    const ports = (owners[proto] ??= new PortOwners());
    const firstIndex = ports.first(low, high);
    ports.take(low, high, index);
    if (firstIndex < 0) return;
    const first = taken[firstIndex]!;
    const firstText = first.low === first.high ? '' : ` (${proto}/${text(first.low, first.high)})`;
    if (low === high) {
      add(['portForwards', index, 'port'], `${proto}/${low} is already forwarded by portForwards[${firstIndex}]${firstText}`);
      return;
    }
    const [from, until] = [Math.max(low, first.low), Math.min(high, first.high)];
    add(['portForwards', index, 'port'], `${proto}/${text(low, high)} overlaps portForwards[${firstIndex}] (${proto}/${text(first.low, first.high)}): `
      + `${from === until ? `port ${from} is` : `ports ${from}-${until} are`} forwarded there already`);
  });
  return problems;
}
