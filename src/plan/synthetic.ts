/**
 * Facts for a namespace where no NIC is attached yet (a container's start, before Docker connects its networks):
 * every VLAN waits and the uplink has no NIC, so a template's `uplink.nic` has no value. Pure.
 */
export function detachedFacts(): Facts {
  return {
    links: [{ index: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, addresses: [{ address: '127.0.0.1', prefix: 8 }] }],
    sysctls: { 'net.ipv4.ip_forward': '0' },
    backend: 'nft',
    tables: { filter: EMPTY_TABLE, nat: EMPTY_TABLE },
  };
}

/**
 * Facts for a namespace where every configured NIC is present, as Docker would attach them: used by `validate`
 * to render every template without touching the system, and by golden tests and benchmarks. Pure.
 */
import type { Config } from '../config/schema.js';
import { broadcastOf, contains, formatAddress, networkOf, overlaps, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';
import { EMPTY_TABLE, type Facts, type Link } from '../observe/facts.js';

/**
 * The uplink's network as Docker would give it: its next hop (uplink.gateway, else Docker's 172.17.0.1), the NIC's
 * address beside it and the network's prefix, all outside every VLAN, as the uplink of a working gateway is. An
 * uplink address inside a VLAN's subnet would be taken for that VLAN's, leaving the uplink unbound
 * (`{{uplink.nic}}` without a value) in a render meant to have every NIC present.
 */
function syntheticUplink(config: Config): { gateway: string; address: string; prefix: number } {
  const subnets = config.vlans.map((v) => parseCidr(v.subnet)!);
  const inVlan = (a: number) => subnets.some((s) => contains(s, a));
  let gateway = config.uplink.gateway === undefined ? undefined : parseAddress(config.uplink.gateway)!;
  if (gateway === undefined) {
    // The first /24 from Docker's 172.17.0.0 on that no VLAN overlaps, past each one that does.
    let net = parseAddress('172.17.0.0')!;
    for (let hit = subnets.find((s) => overlaps(s, { network: net, prefix: 24 })); hit; hit = subnets.find((s) => overlaps(s, { network: net, prefix: 24 }))) {
      net = networkOf({ network: (broadcastOf(hit) + 1) % 2 ** 32, prefix: 24 });
      const first = Math.floor(net / 2 ** 24);
      if (first === 0 || first === 127 || first >= 224) net = (first >= 224 ? 1 : first + 1) * 2 ** 24;
    }
    gateway = net + 1;
  }
  const address = !inVlan(gateway + 1) && gateway + 1 < 2 ** 32 ? gateway + 1 : gateway - 1;
  // The widest network, from a /24 down, that holds both as hosts and no VLAN's address.
  let prefix = 24;
  const fits = (p: number) => {
    const c: Cidr = { network: gateway, prefix: p };
    return contains(c, address) && !subnets.some((s) => overlaps(s, c))
      && (p >= 31 || ![networkOf(c), broadcastOf(c)].some((a) => a === gateway || a === address));
  };
  while (prefix < 31 && !fits(prefix)) prefix++;
  return { gateway: formatAddress(gateway), address: formatAddress(address), prefix };
}

export function syntheticFacts(config: Config): Facts {
  const links: Link[] = [{ index: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, addresses: [{ address: '127.0.0.1', prefix: 8 }] }];
  const uplinkName = typeof config.uplink.interface === 'string' ? config.uplink.interface : 'eth0';
  const uplinkMac = typeof config.uplink.interface === 'object' ? config.uplink.interface.mac.toLowerCase() : '02:42:ac:11:00:03';
  const { gateway, address: uplinkAddress, prefix: uplinkPrefix } = syntheticUplink(config);
  links.push({ index: 2, name: uplinkName, mac: uplinkMac, up: true, loopback: false, addresses: [{ address: uplinkAddress, prefix: uplinkPrefix }] });
  config.vlans.forEach((vlan, i) => {
    const subnet = parseCidr(vlan.subnet)!;
    const gw = parseAddress(vlan.gateway)!;
    let host = networkOf(subnet) + 2;
    if (host === gw) host += 1;
    const name = typeof vlan.interface === 'string' ? vlan.interface : `eth${i + 1}`;
    const mac = typeof vlan.interface === 'object' ? vlan.interface.mac.toLowerCase()
      : `02:42:${formatAddress(host).split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join(':')}`;
    links.push({ index: i + 3, name, mac, up: true, loopback: false, addresses: [{ address: formatAddress(host), prefix: subnet.prefix }] });
  });
  return {
    links,
    defaultRoute: { gateway, dev: uplinkName },
    sysctls: { 'net.ipv4.ip_forward': '0' },
    backend: 'nft',
    tables: { filter: EMPTY_TABLE, nat: EMPTY_TABLE },
  };
}
