/**
 * The convergence table of the component tier (test/component/converge.test.ts), shared with the kernel tier's
 * differential test (test/kernel/converge-differential.test.ts), which walks the same states on a real namespace:
 * states (a config + which NICs Docker has attached), the NICs as Docker attaches them, and the seeded random walk.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FakeLinkSpec } from '../fakes/netfilter.js';
import { prng } from './prng.js';

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
export const labText = await readFile(root('examples/lab.yaml'), 'utf8');

export const UPLINK: FakeLinkSpec = { name: 'eth0', addresses: ['203.0.113.2/24'] };
/**
 * VLAN NICs as Docker attaches them: an address of the VLAN's network, never its gateway. Keyed by what they
 * are: the same name can come back on another network after a disconnect/connect (`eth1=lab`).
 */
export const NICS: Record<string, FakeLinkSpec> = {
  eth1: { name: 'eth1', addresses: ['192.168.10.2/24'] }, // office
  eth2: { name: 'eth2', addresses: ['192.168.20.2/24'] }, // lab
  eth3: { name: 'eth3', addresses: ['192.168.30.2/24'] }, // iot
  eth4: { name: 'eth4', addresses: ['192.168.30.3/24'] }, // iot, re-attached later under another name
  'eth1=lab': { name: 'eth1', addresses: ['192.168.20.5/24'] }, // office and lab re-attached in the other order
  'eth2=office': { name: 'eth2', addresses: ['192.168.10.5/24'] },
};

/**
 * What docker network connect / disconnect must do for exactly `nics` (NICS keys) to be attached, as links to remove
 * and then NICs to add, given `attached` (each attached link's name → the NICS key it came from), which is updated to
 * the state after them. The same name can come back as another NIC: it is removed, then added again.
 */
export function nicChanges(attached: Map<string, string>, nics: readonly string[]): { remove: string[]; add: FakeLinkSpec[] } {
  const remove = [...attached].filter(([, key]) => !nics.includes(key)).map(([link]) => link);
  for (const link of remove) attached.delete(link);
  const add: FakeLinkSpec[] = [];
  for (const key of nics) {
    const spec = NICS[key]!;
    if (attached.get(spec.name) === key) continue;
    add.push(spec);
    attached.set(spec.name, key);
  }
  return { remove, add };
}

export interface State {
  readonly name: string;
  readonly yaml: string;
  /** The VLAN NICs Docker has attached in this state. */
  readonly nics: readonly string[];
}

export const VLAN = {
  office: '{name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}',
  lab: '{name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}',
  labNoNat: '{name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, masquerade: false}',
  iot: '{name: iot, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1}',
  iotOnEth3: '{name: iot, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1, interface: eth3}',
};
const MANY_PORTS = Array.from({ length: 20 }, (_, i) => 9000 + i).join(',');

export const STATES: readonly State[] = [
  { name: 'lab example', yaml: labText, nics: ['eth1', 'eth2'] },
  {
    name: 'three VLANs, default drop, port forwards',
    nics: ['eth1', 'eth2', 'eth3'],
    yaml: `uplink: {interface: eth0, gateway: 203.0.113.1}
vlans: [${VLAN.office}, ${VLAN.lab}, ${VLAN.iot}]
forwarding:
  default: drop
  rules:
    - {from: office, to: lab, proto: tcp, ports: "22,80,443", action: accept}
    - {from: iot, to: uplink, action: drop}
portForwards:
  - {port: 2222, to: 192.168.10.100, toPort: 22}
  - {proto: udp, port: 5683, to: 192.168.30.20}
`,
  },
  {
    name: 'snat, lab not NATed, a reject by prefix',
    nics: ['eth1', 'eth2', 'eth3'],
    yaml: `uplink: {interface: eth0, nat: snat, snatTo: 203.0.113.2}
vlans: [${VLAN.office}, ${VLAN.labNoNat}, ${VLAN.iot}]
forwarding:
  rules:
    - {from: 192.168.20.0/25, to: office, action: reject}
`,
  },
  {
    name: 'nat none, iot gone, long port list',
    nics: ['eth1', 'eth2'],
    yaml: `uplink: {interface: eth0, nat: none}
vlans: [${VLAN.office}, ${VLAN.lab}]
forwarding:
  default: drop
  rules:
    - {from: lab, to: office, proto: tcp, ports: "${MANY_PORTS}", action: accept}
    - {from: 192.168.10.5, to: 192.168.20.0/24, action: accept}
    - {from: office, to: lab, action: reject}
`,
  },
  {
    name: 'iot configured on eth3, not attached yet (waiting)',
    nics: ['eth1', 'eth2'],
    yaml: `uplink: {interface: eth0, gateway: 203.0.113.1}
vlans: [${VLAN.iotOnEth3}, ${VLAN.office}, ${VLAN.lab}]
portForwards:
  - {port: 2222, to: 192.168.10.100, toPort: 22}
  - {proto: udp, port: 5683, to: 192.168.30.20}
`,
  },
  {
    name: 'iot attached as eth4, found by subnet',
    nics: ['eth1', 'eth2', 'eth4'],
    yaml: `uplink: {interface: eth0, gateway: 203.0.113.1}
vlans: [${VLAN.office}, ${VLAN.lab}, ${VLAN.iot}]
forwarding:
  rules:
    - {from: iot, to: office, action: drop}
portForwards:
  - {port: 2222, to: 192.168.10.100, toPort: 22}
`,
  },
  {
    name: 'user templates',
    nics: ['eth1', 'eth2'],
    yaml: `uplink: {interface: eth0, gateway: 203.0.113.1}
vlans: [${VLAN.office}, ${VLAN.lab}]
rules: {dir: test/fixtures/rules.d}
`,
  },
  {
    name: 'office and lab re-attached in the other order (eth1 is lab now)',
    nics: ['eth1=lab', 'eth2=office'],
    yaml: labText,
  },
  {
    name: 'office only, lab detached',
    nics: ['eth1'],
    yaml: `uplink: {interface: eth0, gateway: 203.0.113.1}\nvlans: [${VLAN.office}]\n`,
  },
];

export function randomWalk(seed: number, length: number): State[] {
  const random = prng(seed);
  const order: State[] = [];
  while (order.length < length) {
    const next = STATES[Math.floor(random() * STATES.length)]!;
    if (next !== order[order.length - 1]) order.push(next);
  }
  return order;
}
