/** The port forwards: each to a host on a VLAN, and each protocol and port forwarded once. Pure. */
import { contains, parseAddress } from '../net/ipv4.js';
import { asArray, asString, isObject, notAHost, problemList, type Raw, type VlanView } from './cross-field.js';
import type { Problem } from './problems.js';

export function portForwardProblems(input: Raw, vlans: readonly VlanView[]): Problem[] {
  const { problems, add } = problemList();
  const forwards = new Map<string, number>();
  asArray(input.portForwards).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const to = asString(raw.to);
    const address = to === undefined ? undefined : parseAddress(to);
    const vlan = address === undefined ? undefined : vlans.find((v) => v.subnet && contains(v.subnet, address));
    if (address !== undefined && !vlan) add(['portForwards', index, 'to'], `${to} is outside every VLAN`);
    // A forward goes to a host on a VLAN: not to the router itself, nor to a subnet's network or broadcast address.
    const what = address !== undefined && vlan?.subnet ? notAHost(address, { ...vlan, subnet: vlan.subnet }) : undefined;
    if (what) add(['portForwards', index, 'to'], `${to} ${what.text}${what.kind === 'gateway' ? '; a port forward goes to a host on a VLAN' : ''}`);
    if (typeof raw.port === 'number') {
      const proto = asString(raw.proto) ?? 'tcp';
      const key = `${proto}/${raw.port}`;
      const first = forwards.get(key);
      if (first !== undefined) add(['portForwards', index, 'port'], `${key} is already forwarded by portForwards[${first}]`);
      else forwards.set(key, index);
    }
  });
  return problems;
}
