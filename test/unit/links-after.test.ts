/** linksAfter (src/plan/after.ts): the NICs as a plan's address steps leave them, for /status and vlan_up. */
import test from 'ava';
import type { Link } from '../../src/observe/facts.js';
import { linksAfter } from '../../src/plan/after.js';
import { OUR_ADDRESS_METRIC } from '../../src/plan/chains.js';

const link = (name: string, up: boolean, ...addresses: string[]): Link => ({
  index: Number(name.slice(3)) + 2, name, mac: '02:42:c0:a8:00:01', up, carrier: up, loopback: false,
  addresses: addresses.map((a) => ({ address: a.split('/')[0]!, prefix: Number(a.split('/')[1]) })),
});

test('an address added, one removed, a NIC brought up; the others untouched; the input not changed', (t) => {
  const links = [link('eth0', true, '203.0.113.2/24'), link('eth1', false, '192.168.10.2/24'), link('eth2', true, '192.168.20.2/24', '192.168.20.9/24')];
  const frozen = JSON.stringify(links);
  const after = linksAfter(links, [
    { kind: 'link-up', nic: 'eth1', vlan: 'office' },
    { kind: 'address-add', nic: 'eth1', address: '192.168.10.1', prefix: 24, vlan: 'office' },
    { kind: 'address-del', nic: 'eth2', address: '192.168.20.9', prefix: 24 },
    { kind: 'address-add', nic: 'eth9', address: '192.168.30.1', prefix: 24, vlan: 'iot' }, // gone since: skipped
    { kind: 'sysctl', key: 'net.ipv4.ip_forward', value: '1' },
  ]);
  t.deepEqual(after.map((l) => [l.name, l.up, l.addresses.map((a) => `${a.address}/${a.prefix}`)]), [
    ['eth0', true, ['203.0.113.2/24']],
    ['eth1', true, ['192.168.10.2/24', '192.168.10.1/24']],
    ['eth2', true, ['192.168.20.2/24']],
  ]);
  t.is(after[1]!.addresses[1]!.metric, OUR_ADDRESS_METRIC);
  // A NIC down has no carrier either; brought up, it has as soon as its peer or parent has (if not, the link event
  // that follows brings a pass that reads it): vlan_up is not 0 for a NIC the pass just brought up.
  t.is(after[1]!.carrier, true);
  t.is(after[0], links[0], 'an untouched NIC is the same object');
  t.is(JSON.stringify(links), frozen);
});
