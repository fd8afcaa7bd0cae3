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
import { formatAddress, networkOf, parseAddress, parseCidr } from '../net/ipv4.js';
import { EMPTY_TABLE, type Facts, type Link } from '../observe/facts.js';

export function syntheticFacts(config: Config): Facts {
  const links: Link[] = [{ index: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, addresses: [{ address: '127.0.0.1', prefix: 8 }] }];
  const uplinkName = typeof config.uplink.interface === 'string' ? config.uplink.interface : 'eth0';
  const uplinkMac = typeof config.uplink.interface === 'object' ? config.uplink.interface.mac.toLowerCase() : '02:42:ac:11:00:03';
  const gateway = config.uplink.gateway ?? '172.17.0.1';
  const uplinkAddress = formatAddress(parseAddress(gateway)! + 1);
  links.push({ index: 2, name: uplinkName, mac: uplinkMac, up: true, loopback: false, addresses: [{ address: uplinkAddress, prefix: 24 }] });
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
