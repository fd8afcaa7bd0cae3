/**
 * The port forwards: each to a host on a VLAN, each protocol and port forwarded once (a range's ports included), and
 * a range of ports without toPort (its ports are kept). Pure.
 */
import { contains, parseAddress } from '../net/ipv4.js';
import { asArray, asString, isObject, notAHost, problemList, type Raw, type VlanView } from './cross-field.js';
import { quoted, type Problem } from './problems.js';
import { portRangeOf } from './schema.js';

export function portForwardProblems(input: Raw, vlans: readonly VlanView[]): Problem[] {
  const { problems, add } = problemList();
  // Each single port by its first forward (also by its key), and every range: an overlap is said against the first.
  const forwards = new Map<string, number>();
  const singles: Array<{ proto: string; low: number; high: number; index: number }> = [];
  const ranges: typeof singles = [];
  const text = (low: number, high: number) => (low === high ? String(low) : `${low}-${high}`);
  asArray(input.portForwards).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const to = asString(raw.to);
    const address = to === undefined ? undefined : parseAddress(to);
    const vlan = address === undefined ? undefined : vlans.find((v) => v.subnet && contains(v.subnet, address));
    if (address !== undefined && !vlan) add(['portForwards', index, 'to'], `${to} is outside every VLAN`);
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
    const inRange = ranges.find((r) => r.proto === proto && r.low <= high && low <= r.high);
    if (low === high) {
      const key = `${proto}/${low}`;
      const single = forwards.get(key);
      if (single !== undefined && (inRange === undefined || single < inRange.index)) add(['portForwards', index, 'port'], `${key} is already forwarded by portForwards[${single}]`);
      else if (inRange !== undefined) add(['portForwards', index, 'port'], `${key} is already forwarded by portForwards[${inRange.index}] (${proto}/${text(inRange.low, inRange.high)})`);
      if (single === undefined) {
        forwards.set(key, index);
        singles.push({ proto, low, high, index });
      }
      return;
    }
    const single = singles.find((f) => f.proto === proto && f.low >= low && f.low <= high);
    const first = single !== undefined && (inRange === undefined || single.index < inRange.index) ? single : inRange;
    if (first !== undefined) {
      const [from, to] = [Math.max(low, first.low), Math.min(high, first.high)];
      add(['portForwards', index, 'port'], `${proto}/${text(low, high)} overlaps portForwards[${first.index}] (${proto}/${text(first.low, first.high)}): `
        + `${from === to ? `port ${from} is` : `ports ${from}-${to} are`} forwarded there already`);
    }
    ranges.push({ proto, low, high, index });
  });
  return problems;
}
