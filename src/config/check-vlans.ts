/** The VLANs' own fields, checked across VLANs: names and ids used once, subnets and gateways that fit, no overlaps. Pure. */
import { broadcastOf, contains, formatCidr, networkOf, overlaps, parseAddress, parseCidr } from '../net/ipv4.js';
import { asArray, asString, isObject, prefixProblem, problemList, specialSpace, type Raw, type VlanView } from './cross-field.js';
import type { Problem } from './problems.js';
import { VLAN_NAME } from './schema.js';

/** The shortest prefix a VLAN may have: a VLAN's subnet is a route on its NIC, and a shorter one claims most of the Internet. */
const SHORTEST_VLAN_PREFIX = 8;

/**
 * Each VLAN's name, id, subnet and gateway; with the VLANs as the other checks see them (what of each is valid)
 * and the index of each valid name.
 */
export function vlanProblems(input: Raw): { problems: Problem[]; vlans: VlanView[]; names: Map<string, number> } {
  const { problems, add } = problemList();
  const vlans: VlanView[] = [];
  const names = new Map<string, number>();
  const ids = new Map<number, number>();

  asArray(input.vlans).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const view: VlanView = { index };
    const name = asString(raw.name);
    if (name !== undefined && VLAN_NAME.test(name)) { // an invalid name is reported by the schema, never echoed
      const first = names.get(name);
      if (first !== undefined) add(['vlans', index, 'name'], `${JSON.stringify(name)} is already used by vlans[${first}]`);
      else names.set(name, index);
      if (name === 'uplink') add(['vlans', index, 'name'], '"uplink" is reserved for the uplink');
      view.name = name;
    }
    if (typeof raw.id === 'number') {
      const first = ids.get(raw.id);
      if (first !== undefined) add(['vlans', index, 'id'], `${raw.id} is already used by vlans[${first}]`);
      else ids.set(raw.id, index);
    }
    const subnetText = asString(raw.subnet);
    const subnet = subnetText === undefined ? undefined : parseCidr(subnetText);
    if (subnet && subnetText !== undefined) {
      const written = prefixProblem(subnetText, subnet);
      if (written) add(['vlans', index, 'subnet'], written);
      if (subnet.prefix < SHORTEST_VLAN_PREFIX) {
        add(['vlans', index, 'subnet'], `${subnetText} is too large for a VLAN (use /${SHORTEST_VLAN_PREFIX} or smaller)`);
      } else if (specialSpace(networkOf(subnet))) {
        add(['vlans', index, 'subnet'], `${subnetText} is in ${specialSpace(networkOf(subnet))!} address space, which no host's address is in`);
      }
      if (subnet.prefix > 30) add(['vlans', index, 'subnet'], `${subnetText} is too small for a gateway and hosts (use /30 or larger)`);
      view.subnet = subnet;
      const gatewayText = asString(raw.gateway);
      const gateway = gatewayText === undefined ? undefined : parseAddress(gatewayText);
      if (gateway !== undefined) {
        const shown = formatCidr(subnet);
        if (!contains(subnet, gateway)) add(['vlans', index, 'gateway'], `${gatewayText} is outside ${shown}`);
        else if (gateway === networkOf(subnet)) add(['vlans', index, 'gateway'], `${gatewayText} is the network address of ${shown}`);
        else if (gateway === broadcastOf(subnet)) add(['vlans', index, 'gateway'], `${gatewayText} is the broadcast address of ${shown}`);
        view.gateway = gateway;
      }
    }
    vlans.push(view);
  });
  return { problems, vlans, names };
}

/** Two VLANs' subnets that overlap: said on the later one. */
export function overlapProblems(vlans: readonly VlanView[]): Problem[] {
  const { problems, add } = problemList();
  for (let i = 0; i < vlans.length; i++) {
    for (let j = i + 1; j < vlans.length; j++) {
      const a = vlans[i]!;
      const b = vlans[j]!;
      if (a.subnet && b.subnet && overlaps(a.subnet, b.subnet)) {
        add(['vlans', b.index, 'subnet'], `${formatCidr(b.subnet)} overlaps vlans[${a.index}] (${formatCidr(a.subnet)})`);
      }
    }
  }
  return problems;
}
