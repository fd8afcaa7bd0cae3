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
  uplink: { interface: 'eth0' },
  warnings: [],
  vlans: [{ name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.1', interface: 'eth1', addresses: ['192.168.10.2/24', '192.168.10.1/24'], state: 'up' }],
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
  t.true(formatStatus({ ...doc, uplink: { interface: 'eth0', note: snat } }).split('\n').includes(`uplink: eth0 (${snat})`));
});

// A VLAN whose NIC lost its carrier is down with its addresses still on it: the line said "down" and the addresses,
// never why.
test('a bound VLAN that is down says its note after its addresses; one that is up does not', (t) => {
  const note = 'eth1 has no carrier (cable out, peer or parent link down): its hosts cannot reach the gateway until it has';
  const down = formatStatus({ ...doc, vlans: [{ ...doc.vlans[0]!, state: 'down', note }] }).split('\n');
  t.true(down.includes(`office        10    192.168.10.0/24     eth1      down     192.168.10.2/24 192.168.10.1/24 (${note})`), down.join('\n'));
  const up = formatStatus(doc).split('\n');
  t.true(up.includes('office        10    192.168.10.0/24     eth1      up       192.168.10.2/24 192.168.10.1/24'), up.join('\n'));
});
