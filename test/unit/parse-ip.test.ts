/** The `ip -json` parsers (src/observe/parse-ip.ts), on output as iproute2 6.1 prints it. */
import test from 'ava';
import { parseDefaultRoute, parseIpAddr, parseRoutedPrefixes } from '../../src/observe/parse-ip.js';

// `ip -json route show` in a namespace with two NICs, a summary route, a host route, a multipath route and the
// default route (iproute2 6.1).
const ROUTES = JSON.stringify([
  { dst: 'default', gateway: '203.0.113.1', dev: 'eth0', protocol: '122', flags: [] },
  { dst: '10.0.0.0/8', gateway: '192.168.10.5', dev: 'a0', flags: [] },
  { dst: '10.50.0.5', gateway: '192.168.10.5', dev: 'a0', flags: [] },
  { dst: '10.88.0.0/16', gateway: '192.168.10.5', dev: 'a0', metric: 20, flags: [] }, // a backup route (iproute2 6.1's words)
  { dst: '10.96.0.0/24', flags: [], nexthops: [{ gateway: '192.168.10.5', dev: 'a0', weight: 1, flags: [] }, { gateway: '192.168.11.6', dev: 'a1', weight: 1, flags: [] }] },
  { type: 'blackhole', dst: '10.66.0.0/16', flags: [] },
  { dst: '192.168.10.0/24', dev: 'a0', protocol: 'kernel', scope: 'link', prefsrc: '192.168.10.2', flags: [] },
  { dst: '192.168.11.0/24', dev: 'a1', protocol: 'kernel', scope: 'link', prefsrc: '192.168.11.2', flags: [] },
]);

test('the default route, from the whole table, with the words that put it back', (t) => {
  t.deepEqual(parseDefaultRoute(ROUTES), { gateway: '203.0.113.1', dev: 'eth0', spec: 'default via 203.0.113.1 dev eth0 proto 122' });
  t.is(parseDefaultRoute('[]'), undefined);
});

// As iproute2 6.1 prints them: the kernel lists defaults by metric, lowest first.
test('a default route that is not one next hop is put back as it was: on-link with a source, multipath, device-only', (t) => {
  const onlink = { dst: 'default', gateway: '203.0.113.1', dev: 'va', protocol: 'static', prefsrc: '203.0.113.2', flags: ['onlink'] };
  t.deepEqual(parseDefaultRoute(JSON.stringify([onlink])), {
    gateway: '203.0.113.1', dev: 'va', spec: 'default via 203.0.113.1 dev va proto static src 203.0.113.2 onlink',
  });
  const multipath = {
    dst: 'default', metric: 50, flags: [],
    nexthops: [{ gateway: '203.0.113.253', dev: 'va', weight: 2, flags: [] }, { gateway: '198.51.100.1', dev: 'vb', weight: 1, flags: ['onlink'] }],
  };
  t.deepEqual(parseDefaultRoute(JSON.stringify([multipath])), {
    metric: 50, spec: 'default metric 50 nexthop via 203.0.113.253 dev va weight 2 nexthop via 198.51.100.1 dev vb weight 1 onlink',
  });
  t.deepEqual(parseDefaultRoute(JSON.stringify([{ dst: 'default', dev: 'vb', scope: 'link', metric: 70, flags: [] }])), {
    dev: 'vb', metric: 70, spec: 'default dev vb scope link metric 70',
  });
  t.deepEqual(parseDefaultRoute(JSON.stringify([{ type: 'unreachable', dst: 'default', flags: [] }])), { spec: 'unreachable default' });
  // A PPPoE or VPN uplink's MTU, the TOS, and an IPv6 next hop come back too.
  const tuned = { dst: 'default', tos: '0x10', gateway: '203.0.113.1', dev: 'va', flags: [], metrics: [{ mtu: 1400, initcwnd: 10 }] };
  t.like(parseDefaultRoute(JSON.stringify([tuned])), { tos: '0x10', spec: 'default tos 0x10 via 203.0.113.1 dev va mtu 1400 initcwnd 10' });
  t.is(parseDefaultRoute(JSON.stringify([{ dst: 'default', via: { family: 'inet6', host: 'fe80::1' }, dev: 'va', flags: [] }]))!.spec, 'default via inet6 fe80::1 dev va');
  // The kernel lists a TOS route first, whatever its metric; ordinary traffic takes the first one without a TOS.
  const plain = { dst: 'default', gateway: '172.17.0.1', dev: 'eth0', metric: 100, flags: [] };
  t.deepEqual(parseDefaultRoute(JSON.stringify([tuned, plain])), { gateway: '172.17.0.1', dev: 'eth0', metric: 100, spec: 'default via 172.17.0.1 dev eth0 metric 100' });
});

test('routed networks: each route through a NIC (a multipath one through each of its next hops), not the default, the connected ones or a blackhole', (t) => {
  t.deepEqual(parseRoutedPrefixes(ROUTES), [
    { prefix: '10.0.0.0/8', dev: 'a0' },
    { prefix: '10.50.0.5/32', dev: 'a0' },
    { prefix: '10.88.0.0/16', dev: 'a0', metric: 20 },
    { prefix: '10.96.0.0/24', dev: 'a0' },
    { prefix: '10.96.0.0/24', dev: 'a1' },
  ]);
});

// `ip -json addr show` (iproute2 6.1) after `ip link property add dev eth1 altname office0 altname office-vlan-10`:
// a NIC without altnames has no such key.
const ADDRS = JSON.stringify([
  {
    ifindex: 7, link_index: 8, ifname: 'eth1', flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], mtu: 1500, qdisc: 'noqueue', operstate: 'UP', group: 'default',
    txqlen: 1000, link_type: 'ether', address: '3E:09:18:BC:A1:B5', broadcast: 'ff:ff:ff:ff:ff:ff', link_netnsid: 0, altnames: ['office0', 'office-vlan-10'],
    addr_info: [{ family: 'inet', local: '192.168.10.2', prefixlen: 24, broadcast: '192.168.10.255', scope: 'global', label: 'eth1', valid_life_time: 4294967295, preferred_life_time: 4294967295 }],
  },
  {
    ifindex: 9, ifname: 'eth2', flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], mtu: 1500, qdisc: 'noqueue', operstate: 'UP', group: 'default', txqlen: 1000,
    link_type: 'ether', address: 'aa:bf:53:d0:e5:ca', broadcast: 'ff:ff:ff:ff:ff:ff', addr_info: [],
  },
]);

test('a NIC\'s altnames are read with its name (a config may name the NIC by one); a NIC without any has none', (t) => {
  t.deepEqual(parseIpAddr(ADDRS), [
    { index: 7, name: 'eth1', altnames: ['office0', 'office-vlan-10'], mac: '3e:09:18:bc:a1:b5', up: true, carrier: true, loopback: false, addresses: [{ address: '192.168.10.2', prefix: 24 }] },
    { index: 9, name: 'eth2', mac: 'aa:bf:53:d0:e5:ca', up: true, carrier: true, loopback: false, addresses: [] },
  ]);
});

// `ip -json addr show` (iproute2 6.1, kernel 6.x) for an up veth whose peer is down, an up macvlan whose parent has
// lost its link, a veth peer coming up (the moment iproute2 prints NO-CARRIER beside LOWER_UP, seen in `ip monitor`)
// and a veth that is down (captured in a namespace).
const NO_CARRIER = [
  '{"ifindex":3,"link":"crb","ifname":"cra","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","M-DOWN"],"mtu":1500,"qdisc":"noqueue","operstate":"LOWERLAYERDOWN","group":"default","txqlen":1000,"link_type":"ether","address":"02:62:99:1e:17:9f","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"scope":"global","label":"cra","valid_life_time":4294967295,"preferred_life_time":4294967295}]}',
  '{"ifindex":4,"link":"cra","ifname":"crm","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],"mtu":1500,"qdisc":"noqueue","operstate":"LOWERLAYERDOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"02:fe:b9:63:4e:d5","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]}',
  '{"ifindex":2,"link":"cra","ifname":"crb","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"LOWERLAYERDOWN","group":"default","txqlen":1000,"link_type":"ether","address":"1a:9a:74:2e:69:74","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]}',
  '{"ifindex":3,"link":"cre","ifname":"crd","flags":["BROADCAST","MULTICAST","M-DOWN"],"mtu":1500,"qdisc":"noop","operstate":"DOWN","group":"default","txqlen":1000,"link_type":"ether","address":"ae:ba:e2:da:3e:74","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[]}',
];

test('an up NIC without carrier (peer down, parent link down) is read as up, without carrier; a down NIC has none either', (t) => {
  const links = parseIpAddr(`[${NO_CARRIER.join(',')}]`);
  t.deepEqual(links.map((l) => [l.name, l.up, l.carrier]), [['cra', true, false], ['crm', true, false], ['crb', true, false], ['crd', false, false]]);
  t.deepEqual(links[0]!.addresses, [{ address: '192.0.2.2', prefix: 24 }]);
});
