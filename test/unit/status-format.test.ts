/**
 * `vlan-gateway status` as a person reads it: a pass that waits on a hung helper says which command and since
 * when, as /status (`reconciling.waitingFor`) and /healthz do.
 */
import test from 'ava';
import { formatStatus } from '../../src/cli/status.js';

const doc = {
  version: '0.1.0',
  config: { path: '/etc/vlan-gateway/gateway.yaml', hash: '746dfe9433fa6960' },
  backend: 'nft',
  ready: true,
  healthy: true,
  uplink: { interface: 'eth0', mac: '02:42:ac:1f:00:02', foundBy: 'gateway', addresses: ['172.31.0.2/24'] },
  warnings: [],
  vlans: [{
    name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1', interface: 'eth1', mac: '02:42:c0:a8:0a:02', foundBy: 'subnet', gatewayOnNic: true,
    addresses: ['192.168.10.2/24', '192.168.10.1/24'], state: 'up',
  }],
  lastReconcile: { time: '2026-11-29T10:42:00.015Z', trigger: 'start', result: 'success', durationMs: 11.6, changes: [] },
  driftRepairs: { rules: 0 },
  reload: { lastAt: null, lastResult: null, lastErrors: [] },
};

test('a pass waiting on a command names it and since when', (t) => {
  const text = formatStatus({
    ...doc,
    reconciling: { trigger: 'schedule', since: '2026-11-29T10:43:00.000Z', waitingFor: { command: 'iptables-restore --noflush --wait=10', since: '2026-11-29T10:43:00.100Z' } },
  });
  t.true(text.split('\n').includes(
    'reconciling: a schedule pass, since 2026-11-29T10:43:00.000Z, waiting for iptables-restore --noflush --wait=10 since 2026-11-29T10:43:00.100Z',
  ), text);
});

test('a pass not waiting on any command says only its trigger and start', (t) => {
  const text = formatStatus({ ...doc, reconciling: { trigger: 'netlink', since: '2026-11-29T10:43:00.000Z' } });
  t.true(text.split('\n').includes('reconciling: a netlink pass, since 2026-11-29T10:43:00.000Z'), text);
});

// A waiting uplink read "uplink: waiting (waiting: the default route is on eth0, ...)": its note already says so.
test('a waiting uplink is its note alone, as plan prints it; a bound one is its NIC and the note', (t) => {
  const note = 'waiting: the default route is on eth0, a VLAN\'s NIC; set uplink.interface or uplink.gateway';
  const waiting = formatStatus({ ...doc, uplink: { interface: null, note } }).split('\n');
  t.true(waiting.includes(`uplink: ${note}`), waiting.join('\n'));
  t.true(formatStatus({ ...doc, uplink: { interface: null } }).split('\n').includes('uplink: waiting'));
  const snat = 'uplink.snatTo 172.31.0.9 is not an address of eth0 (it has 172.31.0.2/24)';
  t.true(formatStatus({ ...doc, uplink: { ...doc.uplink, note: snat } }).split('\n').includes(`uplink: eth0 02:42:ac:1f:00:02, found by gateway, 172.31.0.2/24 (${snat})`));
  t.true(formatStatus({ ...doc, uplink: { interface: 'eth0', note: snat } }).split('\n').includes(`uplink: eth0 (${snat})`), 'from a gateway that says the NIC alone');
});

// A VLAN whose NIC lost its carrier is down with its addresses still on it: the line said "down" and the addresses,
// never why.
test('a bound VLAN that is down says its note after its addresses; one that is up does not', (t) => {
  const note = 'eth1 has no carrier (cable out, peer or parent link down): its hosts cannot reach the gateway until it has';
  const down = formatStatus({ ...doc, vlans: [{ ...doc.vlans[0]!, state: 'down', note }] }).split('\n');
  t.true(down.includes(`office        10    192.168.10.0/24     eth1      down     02:42:c0:a8:0a:02  subnet    on NIC   192.168.10.2/24 192.168.10.1/24 (${note})`), down.join('\n'));
  const up = formatStatus(doc).split('\n');
  t.true(up.includes('office        10    192.168.10.0/24     eth1      up       02:42:c0:a8:0a:02  subnet    on NIC   192.168.10.2/24 192.168.10.1/24'), up.join('\n'));
});

// "VLAN x does not route": the table said the NIC's name and its addresses, not its MAC (to find it in `docker network
// inspect`), how it was found, or whether the gateway address is on it.
test('each VLAN\'s row says its NIC\'s MAC, how it was found, and whether the gateway address is on it; a waiting one what it waits for', (t) => {
  const vlans = [
    { ...doc.vlans[0]!, name: 'lab', id: 20, subnet: '192.168.20.0/24', gateway: '192.168.20.1', interface: 'eth2', mac: '02:42:c0:a8:14:02', foundBy: 'mac', gatewayOnNic: false, addresses: ['192.168.20.2/24'], state: 'down' },
    { ...doc.vlans[0]!, name: 'guest', id: 30, subnet: '192.168.30.0/24', gateway: '192.168.30.1', interface: null, mac: null, foundBy: 'name', gatewayOnNic: null, addresses: [], state: 'waiting', note: 'waiting for eth3' },
  ];
  const lines = formatStatus({ ...doc, vlans }).split('\n');
  const table = lines.slice(lines.findIndex((l) => l.startsWith('VLAN ')), lines.findIndex((l) => l.startsWith('VLAN ')) + 3);
  t.deepEqual(table, [
    'VLAN          ID    SUBNET              NIC       STATE    MAC                FOUND BY  GATEWAY  ADDRESSES',
    'lab           20    192.168.20.0/24     eth2      down     02:42:c0:a8:14:02  mac       missing  192.168.20.2/24',
    'guest         30    192.168.30.0/24     -         waiting  -                  name      -        waiting for eth3',
  ]);
  // A gateway older than these fields: dashes where it says nothing.
  const { mac: _mac, foundBy: _foundBy, gatewayOnNic: _held, ...older } = doc.vlans[0]!;
  t.true(formatStatus({ ...doc, vlans: [older] }).split('\n').includes('office        10    192.168.10.0/24     eth1      up       -                  -         -        192.168.10.2/24 192.168.10.1/24'));
});
