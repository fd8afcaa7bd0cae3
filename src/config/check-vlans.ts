/** The VLANs' own fields, checked across VLANs: names and ids used once, subnets and gateways that fit, no overlaps. Pure. */
import { broadcastOf, contains, formatCidr, networkOf, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';
import { asArray, asString, isObject, prefixProblem, problemList, specialSpace, type Raw, type VlanView } from './cross-field.js';
import { groupDigits, type Problem } from './problems.js';
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
    const view: VlanView = { index };
    if (!isObject(raw)) {
      vlans.push(view); // a VLAN still, whose subnet is unknown (subnetsKnown)
      return;
    }
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

/** The VLANs listed before one that it overlaps, said one by one; the rest are counted in one more line. */
const OVERLAPS_SAID = 3;

/**
 * Two VLANs' subnets that overlap: said on the later one, naming the first OVERLAPS_SAID VLANs before it that it
 * overlaps and counting the rest. No pair of VLANs is compared: two prefixes overlap when one holds the other, so
 * each distinct subnet finds the ones that hold it by looking up each shorter prefix of its address. Every pair
 * was compared and said: 20,000 VLANs took 43 s, and 5,000 copies of one VLAN (375 KB) made 12.5 million
 * problems, and the process ran out of memory.
 */
export function overlapProblems(vlans: readonly VlanView[]): Problem[] {
  const { problems, add } = problemList();
  interface Block { cidr: Cidr; vlans: number[]; below: number[] }
  const blocks = new Map<string, Block>();
  const keyOf = (cidr: Cidr) => `${networkOf(cidr)}/${cidr.prefix}`;
  const byIndex = new Map<number, VlanView & { subnet: Cidr }>();
  for (const v of vlans) {
    if (!v.subnet) continue;
    byIndex.set(v.index, v as VlanView & { subnet: Cidr });
    const key = keyOf(v.subnet);
    const block = blocks.get(key) ?? blocks.set(key, { cidr: v.subnet, vlans: [], below: [] }).get(key)!;
    block.vlans.push(v.index); // in index order, as the VLANs are listed
  }
  // The blocks that hold each block (at most 32), and the VLANs each block holds: at most 32 times the VLANs.
  const above = new Map<Block, Block[]>();
  for (const block of blocks.values()) {
    const holders: Block[] = [];
    for (let prefix = block.cidr.prefix - 1; prefix >= 0; prefix--) {
      const holder = blocks.get(keyOf({ network: block.cidr.network, prefix }));
      if (!holder) continue;
      holders.push(holder);
      for (const index of block.vlans) holder.below.push(index);
    }
    above.set(block, holders);
  }
  for (const block of blocks.values()) block.below.sort((a, b) => a - b);
  // The VLANs before `index` in a list in index order: how many, and the first few.
  const before = (list: readonly number[], index: number) => {
    let low = 0;
    let high = list.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (list[mid]! < index) low = mid + 1;
      else high = mid;
    }
    return { count: low, first: list.slice(0, Math.min(low, OVERLAPS_SAID)) };
  };
  for (const v of vlans) {
    if (!v.subnet) continue;
    const block = blocks.get(keyOf(v.subnet))!;
    const lists = [block.vlans, block.below, ...above.get(block)!.map((b) => b.vlans)].map((list) => before(list, v.index));
    const count = lists.reduce((n, l) => n + l.count, 0);
    const first = lists.flatMap((l) => l.first).sort((a, b) => a - b).slice(0, OVERLAPS_SAID);
    for (const index of first) {
      add(['vlans', v.index, 'subnet'], `${formatCidr(v.subnet)} overlaps vlans[${index}] (${formatCidr(byIndex.get(index)!.subnet)})`);
    }
    if (count > first.length) add(['vlans', v.index, 'subnet'], `${formatCidr(v.subnet)} overlaps ${groupDigits(count - first.length)} more of the VLANs listed before it`);
  }
  return problems;
}
