/**
 * matchUplink (src/plan/match.ts): which NIC is the uplink when the config does not name it. A NIC holding an address
 * inside a configured VLAN is never the uplink, even when Docker put the default route on it (it does when the
 * gateway container was started on a VLAN network); with uplink.gateway set, the NIC on the gateway's network wins
 * over the default route's NIC.
 */
import test from 'ava';
import { parseConfigText } from '../../src/config/load.js';
import type { Facts, Link, Route } from '../../src/observe/facts.js';
import { EMPTY_TABLE } from '../../src/observe/facts.js';
import { parseIpsetSave } from '../../src/observe/parse-ipset.js';
import { planDesired } from '../../src/plan/desired.js';
import { diff } from '../../src/plan/diff.js';
import { matchUplink, matchVlans, namesUnclaimedNics } from '../../src/plan/match.js';
import { loadTemplates } from '../../src/template/load.js';

const VLANS = `vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
`;
const config = (uplink = '') => parseConfigText(`${uplink}${VLANS}`, 'match.yaml');

const link = (index: number, name: string, cidr: string): Link => {
  const [address, prefix] = cidr.split('/');
  return { index, name, mac: `02:42:00:00:00:0${index}`, up: true, loopback: false, addresses: [{ address: address!, prefix: Number(prefix) }] };
};
/** Docker's order when the container was started on the office network: office first (eth0), then lab, then the uplink. */
const LINKS: Link[] = [
  { index: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, addresses: [{ address: '127.0.0.1', prefix: 8 }] },
  link(2, 'eth0', '192.168.10.2/24'), // office
  link(3, 'eth1', '192.168.20.2/24'), // lab
  link(4, 'eth2', '172.18.0.2/16'), // the uplink network
  link(5, 'eth3', '10.99.0.2/24'), // another network, not a VLAN
];
const facts = (defaultRoute: Route | undefined, links: Link[] = LINKS): Facts => ({
  links, ...(defaultRoute ? { defaultRoute } : {}), sysctls: { 'net.ipv4.ip_forward': '1' }, backend: 'nft', tables: { filter: EMPTY_TABLE, nat: EMPTY_TABLE },
});
const ON_OFFICE: Route = { gateway: '192.168.10.254', dev: 'eth0' };

test('the default route on a VLAN\'s NIC does not make it the uplink: waiting, with a note that says what to set', (t) => {
  const c = config();
  const f = facts(ON_OFFICE);
  const uplink = matchUplink(c, f);
  t.deepEqual(uplink, { note: 'waiting: the default route is on eth0, a VLAN\'s NIC; set uplink.interface or uplink.gateway' });
  t.deepEqual(matchVlans(c, f, uplink).map((b) => [b.vlan.name, b.nic?.name]), [['office', 'eth0'], ['lab', 'eth1']], 'the VLANs are still bound');
});

test('with uplink.gateway, the uplink is the NIC on the gateway\'s network, wherever the default route is', (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  t.is(matchUplink(c, facts(ON_OFFICE)).nic?.name, 'eth2', 'not the VLAN NIC holding the route');
  t.is(matchUplink(c, facts({ gateway: '10.99.0.1', dev: 'eth3' })).nic?.name, 'eth2', 'not another NIC holding the route');
  t.is(matchUplink(c, facts(undefined)).nic?.name, 'eth2', 'nor is a default route needed');
});

test('with uplink.gateway and no NIC on its network, the uplink waits (the default route\'s NIC is not taken instead)', (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  // The note names the NICs there are, so that a typo in uplink.gateway shows at once in `plan`.
  t.deepEqual(matchUplink(c, facts({ gateway: '10.99.0.1', dev: 'eth3' }, LINKS.filter((l) => l.name !== 'eth2'))), {
    note: 'waiting for a NIC on the same network as 172.18.0.1 (eth3 has 10.99.0.2/24)',
  });
});

// A routed or cloud uplink holds a /32, which may sit inside a VLAN's subnet. The uplink NIC was then "a NIC with an
// address inside a VLAN": uplink.gateway waited for a NIC on its network beside the one that was, and without it the
// note called the uplink "a VLAN's NIC". Each cut every VLAN off the Internet.
test('a /32 inside a VLAN\'s subnet does not make the uplink NIC a VLAN\'s: found by uplink.gateway and by the default route', (t) => {
  const links = LINKS.map((l) => (l.name === 'eth2' ? { ...l, addresses: [...l.addresses, { address: '192.168.10.250', prefix: 32 }] } : l));
  t.is(matchUplink(config('uplink: {gateway: 172.18.0.1}\n'), facts(undefined, links)).nic?.name, 'eth2');
  t.is(matchUplink(config(), facts({ gateway: '172.18.0.1', dev: 'eth2' }, links)).nic?.name, 'eth2');
  // A VLAN's network on it still is one: the NIC is not the uplink.
  const onVlan = LINKS.map((l) => (l.name === 'eth2' ? { ...l, addresses: [...l.addresses, { address: '192.168.10.250', prefix: 24 }] } : l));
  t.deepEqual(matchUplink(config(), facts({ gateway: '172.18.0.1', dev: 'eth2' }, onVlan)), {
    note: 'waiting: the default route is on eth2, a VLAN\'s NIC; set uplink.interface or uplink.gateway',
  });
});

const bound = (c: ReturnType<typeof config>, f: Facts) => matchVlans(c, f, matchUplink(c, f)).map((b) => [b.vlan.name, b.nic?.name ?? b.note]);

// The uplink's /32 inside office's subnet, and office's NIC not attached yet (Docker attaches the networks one by one):
// office waited "waiting: eth2 has 192.168.10.250/32, inside 192.168.10.0/24, but it is the uplink", and the
// supervisor warned "vlan office is not routed: …" as if the uplink had taken office's network. A /32 is no VLAN's
// network, on the uplink or on another VLAN's NIC (a floating address): office just waits for its NIC.
test('a /32 inside a waiting VLAN\'s subnet, on the uplink or on another VLAN\'s NIC, leaves it a plain wait for its NIC', (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const plus = (name: string, address: string, prefix: number) => LINKS.filter((l) => l.name !== 'eth0')
    .map((l) => (l.name === name ? { ...l, addresses: [...l.addresses, { address, prefix }] } : l));
  for (const nic of ['eth2', 'eth1']) {
    const f = facts(undefined, plus(nic, '192.168.10.250', 32));
    const bindings = matchVlans(c, f, matchUplink(c, f));
    t.deepEqual(bindings.map((b) => [b.vlan.name, b.nic?.name ?? b.note]), [
      ['office', 'waiting for a NIC with an address in 192.168.10.0/24 (not the uplink and in no VLAN: eth3 has 10.99.0.2/24)'],
      ['lab', 'eth1'],
    ], nic);
    t.true(namesUnclaimedNics(bindings[0]!), nic);
  }
  // A /31 there is a network (RFC 3021): still named, as a network of another size is.
  t.deepEqual(bound(c, facts(undefined, plus('eth1', '192.168.10.250', 31)))[0],
    ['office', 'waiting: eth1 has 192.168.10.250/31, inside 192.168.10.0/24 but on a /31 network; the VLAN\'s Docker network and its subnet here must be the same (192.168.10.0/24)']);
});

test('a VLAN waiting for its subnet names the NICs that are neither the uplink nor any VLAN\'s: a subnet typo shows in `plan`', (t) => {
  // office typed 192.168.11.0/24; Docker's office network is eth0's 192.168.10.0/24. eth3 is another network.
  const typo = parseConfigText(`uplink: {gateway: 172.18.0.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.11.0/24, gateway: 192.168.11.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
`, 'typo.yaml');
  t.deepEqual(bound(typo, facts(undefined)), [
    ['office', 'waiting for a NIC with an address in 192.168.11.0/24 (not the uplink and in no VLAN: eth0 has 192.168.10.2/24; eth3 has 10.99.0.2/24)'],
    ['lab', 'eth1'],
  ]);
  // Every NIC taken (the uplink's, the VLANs'): a VLAN not attached yet just waits.
  const withoutOthers = LINKS.filter((l) => l.name !== 'eth0' && l.name !== 'eth3');
  t.deepEqual(bound(typo, facts(undefined, withoutOthers)), [['office', 'waiting for a NIC with an address in 192.168.11.0/24'], ['lab', 'eth1']]);
});

test('a NIC the config names for one VLAN is never taken by another found by subnet: two VLANs never share a NIC', (t) => {
  // lab pinned to eth0, which holds an address in lab's subnet and one in office's: lab gets it, and office waits
  // with a note that says whose it is, instead of both on eth0 (two connected routes, one VLAN's hosts cut off).
  const c = parseConfigText(`uplink: {gateway: 172.18.0.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: eth0}
`, 'pin.yaml');
  const both = LINKS.map((l) => (l.name === 'eth0' ? { ...l, addresses: [...l.addresses, { address: '192.168.20.5', prefix: 24 }] } : l));
  t.deepEqual(bound(c, facts(undefined, both)), [
    ['office', 'waiting: eth0 has 192.168.10.2/24, inside 192.168.10.0/24, but it is lab\'s (vlans[1].interface)'],
    ['lab', 'eth0'],
  ]);
});

test('a VLAN pinned to a NIC that holds another VLAN\'s subnet and none of its own waits; that VLAN finds the NIC by its subnet', (t) => {
  // Docker attaches NICs by network and names them by attach order: after a restart eth0 and eth1 may be swapped.
  // Taking the pins as they are would put each gateway address on the other VLAN's NIC, and drop both as forged.
  const c = parseConfigText(`uplink: {gateway: 172.18.0.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, interface: eth0}
`, 'pin.yaml');
  const waiting = [
    ['office', 'eth0'],
    ['lab', 'waiting: eth0 holds 192.168.10.2/24, in office\'s subnet 192.168.10.0/24, and no address in 192.168.20.0/24; check vlans[1].interface (the NICs may have been attached in another order)'],
  ];
  t.deepEqual(bound(c, facts(undefined)), waiting);
  // lab's gateway address, added by an earlier pass (ours, by its metric), does not make eth0 lab's.
  const withOurs = LINKS.map((l) => (l.name === 'eth0' ? { ...l, addresses: [...l.addresses, { address: '192.168.20.1', prefix: 24, metric: 7010 }] } : l));
  t.deepEqual(bound(c, facts(undefined, withOurs)), waiting);
});

test('a VLAN\'s gateway address added by hand on another VLAN\'s NIC does not take that NIC; one of ours (by its metric) is where the VLAN stays', (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const add = (links: Link[], name: string, address: { address: string; prefix: number; metric?: number }) =>
    links.map((l) => (l.name === name ? { ...l, addresses: [...l.addresses, address] } : l));
  // The write-up's `ifconfig eth1 192.168.10.1` on lab's NIC: office stays on its own, lab keeps its NIC.
  const stray = add(LINKS, 'eth1', { address: '192.168.10.1', prefix: 24 });
  t.deepEqual(bound(c, facts(undefined, stray)), [['office', 'eth0'], ['lab', 'eth1']]);
  t.deepEqual(bound(c, facts(undefined, add(stray, 'eth0', { address: '192.168.10.1', prefix: 24, metric: 7010 }))), [['office', 'eth0'], ['lab', 'eth1']]);
  // Two NICs in office's subnet alone: the one holding the gateway address is office's, not the oldest.
  const twice = [...LINKS, link(6, 'eth4', '192.168.10.3/24')];
  t.deepEqual(bound(c, facts(undefined, twice))[0], ['office', 'eth0']);
  t.deepEqual(bound(c, facts(undefined, add(twice, 'eth4', { address: '192.168.10.1', prefix: 24 })))[0], ['office', 'eth4'], 'one added by hand there');
  t.deepEqual(bound(c, facts(undefined, add(twice, 'eth4', { address: '192.168.10.1', prefix: 24, metric: 7010 })))[0], ['office', 'eth4']);
  // Ours on the newer NIC and one added by hand on the older: office stays where the gateway put its address, not
  // moved (its address taken off, every rule of office rewritten) to the oldest NIC that holds one.
  const both = add(add(twice, 'eth4', { address: '192.168.10.1', prefix: 24, metric: 7010 }), 'eth0', { address: '192.168.10.1', prefix: 24 });
  t.deepEqual(bound(c, facts(undefined, both))[0], ['office', 'eth4']);
  // Neither holds it: the oldest (lowest index), whatever order the links were listed in.
  t.deepEqual(bound(c, facts(undefined, [...twice].reverse()))[0], ['office', 'eth0']);
});

test('a VLAN pinned to the uplink\'s NIC, or found on it, waits and says the NIC is the uplink', (t) => {
  const pinned = parseConfigText(`uplink: {gateway: 172.18.0.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: eth2}
`, 'pin.yaml');
  t.deepEqual(bound(pinned, facts(undefined)), [['office', 'waiting: eth2 is the uplink']]);
  const named = parseConfigText(`uplink: {interface: eth0}
${VLANS}`, 'up.yaml');
  t.deepEqual(bound(named, facts(undefined)), [
    ['office', 'waiting: eth0 has 192.168.10.2/24, inside 192.168.10.0/24, but it is the uplink'],
    ['lab', 'eth1'],
  ]);
});

test('a NIC whose name a rule cannot hold as it is (iptables reads + as a wildcard, ip -batch # as a comment) is never bound, and the note says why', (t) => {
  for (const name of ['e+', 'eth#1']) {
    const links = [...LINKS.filter((l) => l.name !== 'eth1'), link(3, name, '192.168.20.2/24')];
    t.deepEqual(bound(config('uplink: {gateway: 172.18.0.1}\n'), facts(undefined, links)), [
      ['office', 'eth0'],
      ['lab', `waiting: ${name} has 192.168.20.2/24, inside 192.168.20.0/24, but ${name}'s name cannot be used in a rule (iptables reads + as a wildcard, ! - " or a space as syntax, and ip -batch # as a comment); rename it`],
    ]);
  }
});

// `ip` takes a NIC's altname wherever it takes its name (`ip link property add dev eth0 altname office0`), so users pin
// NICs by them; the gateway looked at names alone, and such a VLAN or uplink waited for a NIC that was there.
test('a VLAN or the uplink pinned by an altname of its NIC is bound to it, and every rule, address and route names the NIC by its name (iptables matches no altname)', async (t) => {
  const c = parseConfigText(`uplink: {interface: wan0, gateway: 172.18.0.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: office0}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
`, 'altname.yaml');
  const altnames: Record<string, string[]> = { eth0: ['office0'], eth2: ['wan0', 'uplink-to-the-isp'] };
  const f = facts({ gateway: '172.18.0.1', dev: 'eth2' }, LINKS.map((l) => (altnames[l.name] ? { ...l, altnames: altnames[l.name] } : l)));
  t.is(matchUplink(c, f).nic?.name, 'eth2');
  t.deepEqual(bound(c, f), [['office', 'eth0'], ['lab', 'eth1']]);
  const plan = diff(planDesired(c, f, await loadTemplates()), f);
  t.deepEqual(plan.steps.filter((s) => s.kind === 'address-add').map((s) => s.nic), ['eth0', 'eth1']);
  const payloads = plan.steps.flatMap((s) => (s.kind === 'table' ? [s.payload] : [])).join('\n');
  t.regex(payloads, /-i eth0 /);
  t.regex(payloads, /-o eth2 -j MASQUERADE/);
  t.notRegex(payloads, /office0|wan0|uplink-to/);
  // An altname of the uplink's NIC is the uplink's NIC, as its name is.
  const onUplink = parseConfigText(`uplink: {interface: eth2}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1, interface: wan0}
`, 'pin.yaml');
  t.deepEqual(bound(onUplink, f), [['office', 'waiting: eth2 is the uplink']]);
});

test('the networks routed through a VLAN\'s NIC are its routed sources, one that covers a VLAN\'s subnet included; a route through another NIC is not', (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const f: Facts = {
    ...facts({ gateway: '172.18.0.1', dev: 'eth2' }),
    routed: [
      { prefix: '10.99.0.0/24', dev: 'eth0' },
      { prefix: '10.50.0.5/32', dev: 'eth0' },
      { prefix: '192.168.0.0/16', dev: 'eth0' }, // a site router's summary route: it covers both VLANs' subnets
      { prefix: '10.60.0.0/16', dev: 'eth2' }, // through the uplink: any source comes from there anyway
    ],
  };
  const vlans = matchVlans(c, f, matchUplink(c, f));
  t.deepEqual(vlans.map((b) => [b.vlan.name, b.routed]), [['office', ['10.50.0.5/32', '10.99.0.0/24', '192.168.0.0/16']], ['lab', undefined]]);
});

// `ipset save` prints a host's member without its /32 (10.50.0.5,eth0): planned with it, the set never read back as
// planned, and every pass deleted the member and added it again, its counters lost each time.
test('a host route through a VLAN\'s NIC is a VGW-ROUTED member as ipset prints it back: the next pass leaves the set alone', async (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const f: Facts = { ...facts({ gateway: '172.18.0.1', dev: 'eth2' }), routed: [{ prefix: '10.50.0.5/32', dev: 'eth0' }, { prefix: '10.99.0.0/24', dev: 'eth0' }], sets: new Map() };
  const desired = planDesired(c, f, await loadTemplates());
  t.deepEqual(desired.sets.find((s) => s.name === 'VGW-ROUTED')?.members.map((m) => m.member), ['10.50.0.5,eth0', '10.99.0.0/24,eth0']);
  const saved = parseIpsetSave('create VGW-ROUTED hash:net,iface family inet hashsize 1024 maxelem 65536 counters\n'
    + 'add VGW-ROUTED 10.50.0.5,eth0 packets 3 bytes 252\nadd VGW-ROUTED 10.99.0.0/24,eth0 packets 0 bytes 0\n');
  const plan = diff(desired, { ...f, sets: saved });
  t.deepEqual(plan.steps.filter((s) => (s.kind === 'set-update' || s.kind === 'set-destroy') && s.set === 'VGW-ROUTED'), []);
});

test('an uplink NIC that is down (set down by hand, or not yet up as Docker attaches it) gets no default route: a note, not a failing pass', async (t) => {
  // The kernel refuses a route through a NIC that is down ("Nexthop has invalid gateway"), and that failure used to
  // undo the whole pass: the VLANs' rules and addresses with it, drift unrepaired while the uplink was down.
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const down = LINKS.map((l) => (l.name === 'eth2' ? { ...l, up: false } : l));
  const f = facts(ON_OFFICE, down);
  const uplink = matchUplink(c, f);
  t.is(uplink.nic?.name, 'eth2');
  t.is(uplink.note, 'eth2 is down: no default route is set until it is up');
  const plan = diff(planDesired(c, f, await loadTemplates()), f);
  t.deepEqual(plan.steps.filter((s) => s.kind === 'route' || ('nic' in s && s.nic === 'eth2')), [], 'no route, and the uplink is not brought up');
  t.true(plan.steps.some((s) => s.kind === 'table'), 'the rest is planned');
});

test('uplink.gateway that is the uplink NIC\'s own address is no next hop: a note, and no default route (the kernel took that route, and the Internet was cut off)', async (t) => {
  const c = config('uplink: {gateway: 172.18.0.2}\n');
  const f = facts(ON_OFFICE);
  const uplink = matchUplink(c, f);
  t.is(uplink.nic?.name, 'eth2');
  t.is(uplink.note, 'uplink.gateway 172.18.0.2 is an address of eth2 itself, not a next hop (the uplink network\'s router): no default route is set until it is');
  const plan = diff(planDesired(c, f, await loadTemplates()), f);
  t.deepEqual(plan.steps.filter((s) => s.kind === 'route'), [], 'no route through the router itself');
  t.true(plan.steps.some((s) => s.kind === 'table'), 'the rest is planned');
});

test('networks routed behind a VLAN host leave NATed as the VLAN of the route in use does; each source is decided by its own VLAN, the most specific first, and the gateway\'s own traffic is not NATed by a summary', async (t) => {
  const c = parseConfigText(`uplink: {gateway: 172.18.0.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1, masquerade: false}
`, 'routed.yaml');
  const f: Facts = {
    ...facts({ gateway: '172.18.0.1', dev: 'eth2' }),
    routed: [
      { prefix: '10.50.0.5/32', dev: 'eth0' },
      { prefix: '10.0.0.0/8', dev: 'eth0' }, // office's summary: it covers lab's routed network, and the uplink's 172.18/16 does not matter
      { prefix: '10.99.0.0/24', dev: 'eth0' }, { prefix: '10.99.0.0/24', dev: 'eth1' }, // multipath through both kinds: not NATed
      { prefix: '10.77.0.0/24', dev: 'eth1' }, // behind lab, which is not NATed
      // The route in use decides, not a backup through another VLAN (a higher metric) nor the VLANs' order.
      { prefix: '10.88.0.0/16', dev: 'eth1', metric: 10 }, { prefix: '10.88.0.0/16', dev: 'eth0', metric: 20 },
      { prefix: '10.66.0.0/16', dev: 'eth1', metric: 20 }, { prefix: '10.66.0.0/16', dev: 'eth0', metric: 10 },
      // In use through the uplink: office's backup route does not make it office's.
      { prefix: '10.97.0.0/24', dev: 'eth2' }, { prefix: '10.97.0.0/24', dev: 'eth0', metric: 100 },
      // lab's own subnet, also routed through office's host: lab's subnet rule decides it, once.
      { prefix: '192.168.20.0/24', dev: 'eth0', metric: 50 },
    ],
  };
  const templates = await loadTemplates();
  // Each rule as written, its comment (the content hash) left out.
  const postrouting = (at: Facts) => planDesired(c, at, templates).chains.find((ch) => ch.name === 'VGW-POSTROUTING')!.rules
    .map((r) => r.line.replace(/^-m comment --comment "?vgw:[^ "]*"? /, ''));
  t.deepEqual(postrouting(f), [
    '-s 192.168.10.0/24 -o eth2 -j MASQUERADE',
    '-s 192.168.20.0/24 -o eth2 -j RETURN',
    '-o eth2 -m addrtype --src-type LOCAL -j RETURN',
    '-s 10.50.0.5/32 -o eth2 -j MASQUERADE',
    '-s 10.99.0.0/24 -o eth2 -j RETURN',
    '-s 10.77.0.0/24 -o eth2 -j RETURN',
    '-s 10.66.0.0/16 -o eth2 -j MASQUERADE',
    '-s 10.88.0.0/16 -o eth2 -j RETURN',
    '-s 10.0.0.0/8 -o eth2 -j MASQUERADE',
  ]);
  // Without routed networks to NAT, the chain is as it always was: the NATed VLANs' subnets, no RETURN.
  t.deepEqual(postrouting({ ...f, routed: [] }), ['-s 192.168.10.0/24 -o eth2 -j MASQUERADE']);
  t.deepEqual(postrouting({ ...f, routed: [{ prefix: '10.77.0.0/24', dev: 'eth1' }] }), ['-s 192.168.10.0/24 -o eth2 -j MASQUERADE']);
});

// A network routed behind a VLAN's host is that VLAN's: from the uplink, its source is forged as a VLAN subnet's is
// (an Internet host slipped datagrams into its flows). Inside such a network, the uplink's own network and the
// routes in use through the uplink stay the uplink's, most specific first, as the kernel routes.
test('on the uplink, a source routed behind a VLAN host is dropped, the uplink\'s own networks inside such a route kept: most specific first', async (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const f: Facts = {
    ...facts({ gateway: '172.18.0.1', dev: 'eth2' }),
    routed: [
      { prefix: '10.50.0.5/32', dev: 'eth0' },
      { prefix: '10.0.0.0/8', dev: 'eth0' }, // office's summary
      { prefix: '172.16.0.0/12', dev: 'eth0' }, // a summary that covers the uplink's own 172.18.0.0/16
      { prefix: '10.99.0.0/24', dev: 'eth0' }, { prefix: '10.99.0.0/24', dev: 'eth2' }, // multipath with the uplink
      { prefix: '10.97.0.0/24', dev: 'eth2' }, { prefix: '10.97.0.0/24', dev: 'eth0', metric: 100 }, // in use via the uplink
      { prefix: '10.88.0.0/16', dev: 'eth1', metric: 10 }, { prefix: '10.88.0.0/16', dev: 'eth0', metric: 20 }, // lab's, once
      { prefix: '192.168.20.0/24', dev: 'eth0', metric: 50 }, // lab's subnet: dropped on the uplink by the subnets' rule
    ],
  };
  const templates = await loadTemplates();
  const onUplink = (at: Facts) => planDesired(c, at, templates).chains.find((ch) => ch.name === 'VGW-SOURCES')!.rules
    .map((r) => r.line.replace(/^-m comment --comment "?vgw:[^ "]*"? /, '')).filter((line) => line.startsWith('-i eth2'));
  const expected = [
    '-i eth2 -s 10.50.0.5/32 -j DROP',
    '-i eth2 -s 10.97.0.0/24 -j RETURN',
    '-i eth2 -s 10.99.0.0/24 -j RETURN',
    '-i eth2 -s 172.18.0.0/16 -j RETURN',
    '-i eth2 -s 10.88.0.0/16 -j DROP',
    '-i eth2 -s 172.16.0.0/12 -j DROP',
    '-i eth2 -s 10.0.0.0/8 -j DROP',
    '-i eth2 -j RETURN',
  ];
  t.deepEqual(onUplink(f), expected, 'without ipset');
  t.deepEqual(onUplink({ ...f, sets: new Map() }), expected, 'with ipset');
  // No network routed behind a VLAN host: the uplink's one rule, as before (nothing more on its packets' path).
  t.deepEqual(onUplink({ ...f, routed: [{ prefix: '10.60.0.0/16', dev: 'eth2' }] }), ['-i eth2 -j RETURN']);
});

// A route to the uplink's own network through a VLAN's host (a backup path, metric 100): the kernel's connected
// route (metric 0, never among the routed networks) is the one in use, and the uplink's hosts are on its link. It
// was taken for a network routed behind office, and every source of the uplink's network dropped on the uplink:
// its router's answers (DNS, ICMP errors) to the VLANs' hosts, the LAN's hosts through a port forward.
test('on the uplink, its own network is not forged by a route to it through a VLAN\'s host', async (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const templates = await loadTemplates();
  const onUplink = (at: Facts) => planDesired(c, at, templates).chains.find((ch) => ch.name === 'VGW-SOURCES')!.rules
    .map((r) => r.line.replace(/^-m comment --comment "?vgw:[^ "]*"? /, '')).filter((line) => line.startsWith('-i eth2'));
  const f: Facts = { ...facts({ gateway: '172.18.0.1', dev: 'eth2' }), routed: [{ prefix: '172.18.0.0/16', dev: 'eth0', metric: 100 }] };
  t.deepEqual(onUplink(f), ['-i eth2 -j RETURN']);
  // Beside a network that is routed behind office: that one alone is dropped.
  t.deepEqual(onUplink({ ...f, routed: [...f.routed!, { prefix: '10.50.0.0/16', dev: 'eth0' }] }), ['-i eth2 -s 10.50.0.0/16 -j DROP', '-i eth2 -j RETURN']);
});

test('a network routed behind a VLAN host is reached from that VLAN back out of its NIC (hairpin), after the source check and before the conntrack checks', async (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const f: Facts = { ...facts({ gateway: '172.18.0.1', dev: 'eth2' }), routed: [{ prefix: '10.77.0.0/24', dev: 'eth0' }] };
  const templates = await loadTemplates();
  const rules = (chain: string, at: Facts) => planDesired(c, at, templates).chains.find((ch) => ch.name === chain)!.rules
    .map((r) => r.line.replace(/^-m comment --comment "?vgw:[^ "]*"? /, ''));
  // With ipset and without it. The replies go host to host, around the gateway: the client's next segments are
  // INVALID to conntrack here, so the rule must come before that drop.
  for (const at of [{ ...f, sets: new Map() }, f]) {
    const forward = rules('VGW-FORWARD', at);
    const hairpin = forward.indexOf('-i eth0 -o eth0 -d 10.77.0.0/24 -j ACCEPT');
    t.true(hairpin > forward.indexOf('-j VGW-SOURCES'), forward.join('\n'));
    t.true(hairpin < forward.indexOf('-m conntrack --ctstate INVALID -j DROP'), forward.join('\n'));
  }
  t.false(rules('VGW-FORWARD', { ...f, routed: [] }).some((r) => r.includes('-i eth0 -o eth0')), 'no routed network, no such rule');
});

// VGW-ROUTED holds a member per network routed behind a VLAN's host: the namespace's routes, not the config, so
// nothing bounds it. Made with the kernel's default maxelem (65,536), its 65,537th member was refused ("Hash is
// full, cannot add more elements") and every apply failed; one made so by an earlier pass took no more.
test('a VGW-ROUTED of more than 65,536 networks is made with room for them, and one made with the default maxelem is made again', async (t) => {
  const c = config('uplink: {gateway: 172.18.0.1}\n');
  const routed = Array.from({ length: 65_537 }, (_, i) => ({ prefix: `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, dev: 'eth0' }));
  const f: Facts = { ...facts({ gateway: '172.18.0.1', dev: 'eth2' }), routed, sets: new Map() };
  const desired = planDesired(c, f, await loadTemplates());
  t.is(desired.sets.find((s) => s.name === 'VGW-ROUTED')?.members.length, 65_537);
  const step = (sets: Facts['sets']) => diff(desired, { ...f, sets }).steps.find((s) => s.kind === 'set-update' && s.set === 'VGW-ROUTED');
  t.like(step(new Map()), { create: true, maxelem: 131_072 });
  const members = desired.sets.find((s) => s.name === 'VGW-ROUTED')!.members.slice(0, 65_536);
  const full = parseIpsetSave(`create VGW-ROUTED hash:net,iface family inet hashsize 131072 maxelem 65536 counters\n${members.map((m) => `add VGW-ROUTED ${m.member}\n`).join('')}`);
  t.like(step(full), { create: false, remake: 131_072, maxelem: 131_072, add: ['10.101.0.0,eth0'] });
});
