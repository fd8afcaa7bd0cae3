/**
 * src/metrics/counters.ts: kernel counters → Prometheus increments. ruleSamples joins the saved rules' hashes and
 * the accounting set's members to what they mean (zones and action, or a VLAN's NAT), so labels are names and never
 * rule text; MonotonicCounters turns absolute readings into increments and survives counter resets (a rewritten
 * chain starts again from zero).
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { pino } from 'pino';
import { fileURLToPath } from 'node:url';
import { parseConfigText } from '../../src/config/load.js';
import { StatsCollector } from '../../src/metrics/collector.js';
import { countersAfterPayload, countersAfterRestore, forEachSetSample, MonotonicCounters, ruleSamples, ZERO, type Sample } from '../../src/metrics/counters.js';
import { Metrics } from '../../src/metrics/metrics.js';
import type { SavedTable } from '../../src/observe/facts.js';
import { parseSave, tableOf } from '../../src/observe/parse-save.js';
import { DROP_REASONS, type Desired } from '../../src/plan/types.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';
import { FakeNetns } from '../fakes/netfilter.js';
import type { CommandRunner } from '../../src/exec/runner.js';

// ---- ruleSamples, on hand-made data ----------------------------------------------------------------------------

const desired: Desired = {
  vlans: [],
  uplink: {},
  addresses: [],
  sysctls: {},
  jumps: [],
  chains: [
    {
      table: 'filter', name: 'VGW-FROM-10', rules: [
        { line: '-o eth2 -m comment --comment vgw:aaaa -j ACCEPT', hash: 'aaaa', meaning: { kind: 'forward', from: 'office', to: 'lab', action: 'accept' } },
        { line: '-o eth0 -m comment --comment vgw:bbbb -j ACCEPT', hash: 'bbbb', meaning: { kind: 'forward', from: 'office', to: 'uplink', action: 'accept' } },
        { line: '-m comment --comment vgw:cccc -j DROP', hash: 'cccc' }, // the chain's fall-through: no meaning, no series
      ],
    },
    {
      table: 'nat', name: 'VGW-POSTROUTING', rules: [
        { line: '-s 192.168.10.0/24 -o eth0 -m comment --comment vgw:dddd -j MASQUERADE', hash: 'dddd', meaning: { kind: 'nat', vlan: 'office', type: 'masquerade' } },
      ],
    },
  ],
  sets: [{ name: 'VGW-PAIRS-0', type: 'hash:net,iface', role: 'accounting', hashsize: 1024, members: [{ member: '192.168.10.0/24,eth2', from: 'office', to: 'lab' }, { member: '192.168.20.0/24,eth1', from: 'lab', to: 'office' }] }],
};

const table = (rules: Record<string, Array<{ hash?: string; body?: string; packets: number; bytes: number }>>): SavedTable => ({
  chains: new Set(Object.keys(rules)),
  rules: new Map(Object.entries(rules).map(([chain, list]) => [chain, list.map((r) => ({ body: r.body ?? `-m comment --comment vgw:${r.hash}`, ...r }))])),
});

test('ruleSamples joins saved counters to meanings by hash, whatever the rule order or text', (t) => {
  const filter = table({
    'VGW-FROM-10': [
      { hash: 'bbbb', packets: 5, bytes: 500 }, // order differs from the desired chain: the join is by hash
      { hash: 'aaaa', body: 'some -other text vgw:aaaa', packets: 3, bytes: 252 },
      { hash: 'cccc', packets: 9, bytes: 900 },
    ],
  });
  const nat = table({ 'VGW-POSTROUTING': [{ hash: 'dddd', packets: 2, bytes: 120 }] });
  const samples = ruleSamples(desired, { filter, nat });
  t.deepEqual(samples, [
    { source: 'aaaa', metric: 'forwarded', labels: { from: 'office', to: 'lab', action: 'accept' }, packets: 3, bytes: 252 },
    { source: 'bbbb', metric: 'forwarded', labels: { from: 'office', to: 'uplink', action: 'accept' }, packets: 5, bytes: 500 },
    { source: 'dddd', metric: 'nat', labels: { vlan: 'office', kind: 'masquerade' }, packets: 2, bytes: 120 },
  ]);
});

test('ruleSamples skips rules that are not in the kernel (a flushed chain, a foreign rule, an unknown hash)', (t) => {
  const filter = table({
    'VGW-FROM-10': [
      { hash: 'zzzz', packets: 7, bytes: 700 }, // a hash we do not want any more
      { body: '-j ACCEPT', packets: 1, bytes: 1 }, // someone's rule, no hash
    ],
  });
  const nat = table({ 'VGW-POSTROUTING': [] }); // flushed
  t.deepEqual(ruleSamples(desired, { filter, nat }), []);
  t.deepEqual(ruleSamples(desired, { filter: table({}), nat: table({}) }), [], 'chains missing altogether');
});

test('forEachSetSample joins the accounting set\'s members (traffic per pair) to their labels, and only ours', (t) => {
  // As \`ipset save\` prints it: a member of ours, one we do not want, one of ours in the wrong set, and a set not ours.
  const text = [
    'create VGW-PAIRS-0 hash:net,iface family inet hashsize 1024 maxelem 65536 counters',
    'add VGW-PAIRS-0 192.168.10.0/24,eth2 packets 40 bytes 3360',
    'add VGW-PAIRS-0 10.99.0.0/16,eth9 packets 1 bytes 1',
    'create VGW-PAIRS-1 hash:net,iface family inet hashsize 1024 maxelem 65536 counters',
    'add VGW-PAIRS-1 192.168.20.0/24,eth1 packets 7 bytes 7',
    'create other hash:ip family inet hashsize 1024 maxelem 65536',
    'add other 192.168.20.0/24,eth1 packets 9 bytes 9',
    '',
  ].join('\n');
  const samples: Sample[] = [];
  t.deepEqual(forEachSetSample(desired, text, (sample) => samples.push(sample)), { exact: false }, 'members not the desired ones');
  t.deepEqual(samples, [
    { source: '192.168.10.0/24,eth2', metric: 'forwarded', labels: { from: 'office', to: 'lab', action: 'accept' }, packets: 40, bytes: 3360 },
  ]);
  t.deepEqual(ruleSamples(desired, { filter: table({}), nat: table({}) }), [], 'rules without counters in the kernel: no samples');
});

test('forEachSetSample says whether our sets hold exactly the desired members: one missing, one extra, or one swapped is not', (t) => {
  const create = 'create VGW-PAIRS-0 hash:net,iface family inet hashsize 1024 maxelem 65536 counters';
  const add = (member: string) => `add VGW-PAIRS-0 ${member} packets 0 bytes 0`;
  const exact = (...lines: string[]) => forEachSetSample(desired, `${[create, ...lines].join('\n')}\n`, () => {}).exact;
  t.true(exact(add('192.168.10.0/24,eth2'), add('192.168.20.0/24,eth1')));
  t.true(exact(add('192.168.20.0/24,eth1'), add('192.168.10.0/24,eth2'), 'create other hash:ip', 'add other 10.0.0.1'), 'order, and sets not ours, do not matter');
  t.false(exact(add('192.168.10.0/24,eth2')), 'one missing');
  t.false(exact(add('192.168.10.0/24,eth2'), add('192.168.20.0/24,eth1'), add('10.99.0.0/16,eth9')), 'one extra');
  t.false(exact(add('192.168.10.0/24,eth2'), add('10.99.0.0/16,eth9')), 'one swapped: the same count');
});

// ---- ruleSamples, on what the real planner wrote into the fake ------------------------------------------------------

/** examples/lab.yaml and a fake namespace with its NICs (uplink eth0, office eth1, lab eth2), nothing applied yet. */
async function labNamespace(): Promise<{ config: ReturnType<typeof parseConfigText>; ns: FakeNetns }> {
  const labText = await readFile(fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url)), 'utf8');
  const ns = new FakeNetns({
    links: [{ name: 'eth0', addresses: ['203.0.113.2/24'] }, { name: 'eth1', addresses: ['192.168.10.2/24'] }, { name: 'eth2', addresses: ['192.168.20.2/24'] }],
    defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' },
  });
  return { config: parseConfigText(labText, 'lab.yaml'), ns };
}

test('ruleSamples over a real apply: every label is a VLAN name or uplink, never rule text', async (t) => {
  const { config, ns } = await labNamespace();
  const { plan } = await reconcileOnce(ns, config, await loadTemplates());
  ns.countPackets(4, 336); // every rule of every chain: 4 packets
  const tables = parseSave(ns.save('nft', true));
  const samples = ruleSamples(plan.desired, { filter: tableOf(tables, 'filter'), nat: tableOf(tables, 'nat') });
  forEachSetSample(plan.desired, ns.saveSets(true), (sample) => samples.push(sample));

  const meaningful = plan.desired.chains.flatMap((c) => c.rules).filter((r) => r.meaning).length;
  const counting = plan.desired.sets.flatMap((s) => s.members).filter((m) => m.from !== undefined).length;
  t.true(plan.desired.sets.some((s) => s.name.startsWith('VGW-NICS-')), 'the lab (default accept) has a NIC set');
  t.is(samples.length, meaningful + counting, 'one sample per meaningful rule and accounting set member (NIC sets count nothing)');
  const zones = new Set(['office', 'lab', 'uplink']);
  for (const s of samples) {
    const values = Object.values(s.labels);
    t.true(values.every((v) => /^[a-z][a-z0-9-]*$/.test(v)), `labels are names: ${JSON.stringify(s.labels)}`);
    if (s.metric === 'forwarded') t.true(zones.has(s.labels.from!) && zones.has(s.labels.to!), JSON.stringify(s.labels));
    else if (s.metric === 'dropped') t.true((DROP_REASONS as readonly string[]).includes(s.labels.reason!), JSON.stringify(s.labels));
    else t.true(['office', 'lab'].includes(s.labels.vlan!) && ['masquerade', 'snat', 'dnat'].includes(s.labels.kind!), JSON.stringify(s.labels));
  }
  // The drops outside the pairs' policy: the forged sources (VGW-SOURCES: a broadcast address as the source, a VLAN's
  // subnet elsewhere, one set lookup here, and any other source on each VLAN's NIC), the INVALID state, what comes from a NIC we do not manage (one
  // rule per NIC of ours it is headed to); then per zone's chain (office, lab, uplink), back out of the NIC it came
  // in on, and out of a NIC that is no zone's.
  const dropped = samples.filter((s) => s.metric === 'dropped').map((s) => s.labels.reason);
  t.deepEqual(dropped, ['spoofed', 'spoofed', 'spoofed', 'spoofed', 'invalid', 'unmanaged', 'unmanaged', 'unmanaged',
    'hairpin', 'unmanaged', 'hairpin', 'unmanaged', 'hairpin', 'unmanaged']);
  // office → lab has no rules of its own (default accept): no rule branches to it, its accounting set member
  // counts all of it. The uplink → office drop (FROM-UP branches one by one) is a rule.
  const officeToLab = samples.filter((s: Sample) => s.labels.from === 'office' && s.labels.to === 'lab');
  t.deepEqual(officeToLab.map((s) => s.source), ['192.168.10.0/24,eth2']);
  const upToOffice = samples.filter((s: Sample) => s.labels.from === 'uplink' && s.labels.to === 'office' && s.labels.action === 'drop');
  t.is(upToOffice.length, 1);
  t.true(upToOffice.every((s) => s.packets === 4 && s.bytes === 336), JSON.stringify(upToOffice));
  t.true(samples.some((s) => s.metric === 'nat' && s.labels.vlan === 'office' && s.labels.kind === 'dnat'), 'the port forward');
  t.true(samples.some((s) => s.metric === 'nat' && s.labels.vlan === 'lab' && s.labels.kind === 'masquerade'));
  t.is(new Set(samples.map((s) => s.source)).size, samples.length, 'sources are unique keys');
});

// Two rules of one body in a pair's chain (a rule written twice; or, as the pair chains were rendered, a last rule
// that matches everything followed by the pair's default of the same verdict) share one hash. The samples were joined by hash to the last of them,
// the unreachable one, so the accepted new connections of lab → office never reached the metrics.
test('ruleSamples: two rules of one chain with the same body count once, with the packets of both', async (t) => {
  const { config: lab, ns } = await labNamespace();
  const config = parseConfigText([
    'uplink: {interface: eth0, gateway: 203.0.113.1}',
    'vlans:',
    '  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}',
    '  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}',
    'forwarding:',
    '  rules:',
    '    - {from: lab, to: office, proto: tcp, ports: "22", action: drop}',
    '    - {from: lab, to: office, action: accept}',
    '    - {from: lab, to: office, action: accept}',
  ].join('\n'), 'pair.yaml');
  t.is(lab.vlans.length, config.vlans.length);
  const { plan } = await reconcileOnce(ns, config, await loadTemplates());
  // The kernel's reading: the first accept counted 10 new connections; what follows it can match nothing.
  let seen = 0;
  const text = ns.save('nft', true).split('\n').map((line) => (/^\[0:0\] -A VGW-P-20-10 .*-j ACCEPT$/.test(line) && seen++ === 0 ? line.replace('[0:0]', '[10:840]') : line)).join('\n');
  const accepts = text.split('\n').filter((l) => /-A VGW-P-20-10 .*-j ACCEPT$/.test(l));
  t.true(accepts.length >= 2, accepts.join('\n'));
  t.is(new Set(accepts.map((l) => /vgw:(\S+)/.exec(l)![1])).size, 1, 'one body, one hash');
  const tables = parseSave(text);
  const samples = ruleSamples(plan.desired, { filter: tableOf(tables, 'filter'), nat: tableOf(tables, 'nat') });
  const labToOffice = samples.filter((s) => s.labels.from === 'lab' && s.labels.to === 'office' && s.labels.action === 'accept');
  t.deepEqual(labToOffice.map((s) => [s.packets, s.bytes]), [[10, 840]]);
  t.is(new Set(samples.map((s) => s.source)).size, samples.length, 'sources are unique keys');
});

// ---- MonotonicCounters -------------------------------------------------------------------------------------------

test('MonotonicCounters: the first reading counts in full, then only increments', (t) => {
  const mono = new MonotonicCounters();
  t.is(mono.delta('a', 10), 10);
  t.is(mono.delta('a', 15), 5);
  t.is(mono.delta('a', 15), 0);
  t.is(mono.delta('a', 1015), 1000);
});

test('MonotonicCounters: a reading below the last one is a reset, counted from zero', (t) => {
  const mono = new MonotonicCounters();
  const deltas = [10, 25, 3, 8, 0, 0, 6].map((reading) => mono.delta('rule', reading));
  // 10, +15, (reset) 3, +5, (reset) 0, 0, +6
  t.deepEqual(deltas, [10, 15, 3, 5, 0, 0, 6]);
  t.true(deltas.every((d) => d >= 0), 'never negative');
});

test('MonotonicCounters: keys are independent (one per kernel counter)', (t) => {
  const mono = new MonotonicCounters();
  t.is(mono.delta('filter/VGW-FROM-10/aaaa/p', 5), 5);
  t.is(mono.delta('set/VGW-PAIRS-0/192.168.10.0/24,eth2/p', 7), 7);
  t.is(mono.delta('filter/VGW-FROM-10/aaaa/p', 6), 1);
  t.is(mono.delta('set/VGW-PAIRS-0/192.168.10.0/24,eth2/p', 2), 2, 'a reset of one key');
  t.is(mono.delta('filter/VGW-FROM-10/aaaa/p', 9), 3, 'does not affect another');
});

test('MonotonicCounters over a chain rewrite: the Prometheus counter keeps growing', (t) => {
  // A rule's kernel counter restarts at zero when its chain is rewritten; the exported total must not go back.
  const mono = new MonotonicCounters();
  const exported: number[] = [];
  let total = 0;
  for (const kernel of [0, 12, 30, /* chain rewritten */ 0, 4, 9]) {
    total += mono.delta('filter/VGW-FROM-10/aaaa/p', kernel);
    exported.push(total);
  }
  t.deepEqual(exported, [0, 12, 30, 30, 34, 39]);
  t.true(exported.every((v, i) => i === 0 || v >= exported[i - 1]!), 'monotonic');
});

test('MonotonicCounters: a packets/bytes pair under one key resets and counts like two single counters', (t) => {
  const mono = new MonotonicCounters();
  const readings: Array<[number, number]> = [[4, 336], [10, 840], [2, 168], [2, 168], [7, 588]];
  t.deepEqual(readings.map(([p, b]) => mono.deltas('192.168.10.0/24,eth2', p, b)), [[4, 336], [6, 504], [2, 168], [0, 0], [5, 420]]);
  t.deepEqual(mono.deltas('another', 1, 100), [1, 100], 'keys are independent');
});

test('MonotonicCounters: a whole reading forgets the keys it did not visit (rules no longer desired), unless kept', (t) => {
  const mono = new MonotonicCounters();
  mono.deltas('hash-old', 5, 500);
  mono.deltas('hash-both', 1, 100);
  mono.delta('if/3/eth1/rxb', 1000);
  mono.sweep();
  t.is(mono.size, 3, 'all visited by the first reading');
  // The next reading: a reload replaced hash-old; eth1 is unbound for a moment, but still there.
  t.deepEqual(mono.deltas('hash-both', 2, 200), [1, 100]);
  t.deepEqual(mono.deltas('hash-new', 4, 400), [4, 400]);
  mono.sweep((key) => key.startsWith('if/3/eth1/'));
  t.is(mono.size, 3, 'hash-old forgotten; eth1 kept');
  t.is(mono.delta('if/3/eth1/rxb', 1500), 500, 'eth1 bound again: its increment, not its whole count again');
  t.deepEqual(mono.deltas('hash-old', 5, 500), [5, 500], 'a forgotten key counts in full: its rule is a new one, from zero');
  mono.sweep();
  for (let i = 0; i < 100; i++) {
    mono.deltas(`reload-${i}`, 1, 1); // every reading a new set of rules: the map stays one reading's size
    mono.sweep();
  }
  t.is(mono.size, 1);
});

// A reading that overlapped a write (a rewrite, or its rollback) is not counted; the next reading counts from where the
// write left the counter, or from the last reading where that is lower: a rollback puts back what its pass read, and
// read after the last reading it holds packets no reading has counted yet.
test('MonotonicCounters: a reading that overlapped a write counts nothing; the next counts from the lower of the write and the last reading', (t) => {
  const mono = new MonotonicCounters();
  t.deepEqual(mono.deltas('h', 100, 10_000), [100, 10_000]);
  mono.sweep();
  mono.observe('h', { packets: 150, bytes: 15_000 }); // a rollback to 150, read by its pass after the reading of 100
  mono.sweep();
  t.deepEqual(mono.deltas('h', 160, 16_000), [60, 6_000], 'the 50 packets between the reading and the pass\'s read count once, and 10 since');
  mono.sweep();
  mono.observe('h', ZERO); // a rewrite: the rule counts from zero
  mono.sweep();
  t.deepEqual(mono.deltas('h', 4, 400), [4, 400]);
});

// Rules of one body in one chain share a hash and are one counter (ruleSamples sums them): an undo that puts them
// back must say the same sum, or the next reading takes the difference for traffic (or for a reset).
test('countersAfterRestore: an undo that puts back two rules of one hash is one counter, the sum of theirs', (t) => {
  const undo = [
    '*filter',
    ':VGW-P-20-10 - [0:0]',
    '[3:180] -A VGW-P-20-10 -m comment --comment "vgw:AAAAAAAAAAAAAAAA" -p tcp -m multiport --dports 80 -j DROP',
    '[2:120] -A VGW-P-20-10 -m comment --comment "vgw:AAAAAAAAAAAAAAAA" -p tcp -m multiport --dports 80 -j DROP',
    '[7:700] -A VGW-P-20-10 -m comment --comment "vgw:BBBBBBBBBBBBBBBB" -j ACCEPT',
    'COMMIT',
    '',
  ].join('\n');
  t.deepEqual(countersAfterRestore(undo), new Map([
    ['AAAAAAAAAAAAAAAA', { packets: 5, bytes: 300 }],
    ['BBBBBBBBBBBBBBBB', { packets: 7, bytes: 700 }],
  ]));
});

test('the collector removes the NIC and traffic series of a VLAN that left the config, and keeps the others', async (t) => {
  const { config, ns } = await labNamespace();
  const templates = await loadTemplates();
  const both = (await reconcileOnce(ns, config, templates)).plan.desired;
  const labOnly = (await reconcileOnce(ns, { ...config, vlans: config.vlans.filter((v) => v.name === 'lab') }, templates, { dryRun: true })).plan.desired;
  const metrics = new Metrics('0.0.0-test');
  let desired = both;
  const collector = new StatsCollector(ns, metrics, pino({ level: 'silent' }), 60_000, () => ({ desired, backend: 'nft' }));
  const series = async () => (await metrics.text()).split('\n').filter((l) => l.startsWith('vlan_gateway_interface_receive_bytes_total{')).map((l) => l.split(' ')[0]);

  const traffic = async () => (await metrics.text()).split('\n').filter((l) => /^vlan_gateway_(forwarded|nat)_packets_total\{/.test(l))
    .map((l) => /\{([^}]*)\}/.exec(l)![1]!);
  ns.countPackets(4, 336); // every rule and member counts: series appear for every pair and NAT rule

  await collector.collect();
  t.deepEqual(await series(), [
    'vlan_gateway_interface_receive_bytes_total{vlan="office",interface="eth1"}',
    'vlan_gateway_interface_receive_bytes_total{vlan="lab",interface="eth2"}',
  ]);
  t.true((await traffic()).some((l) => l.includes('"office"')), 'office has traffic series');
  desired = labOnly; // a reload took office out
  await collector.collect();
  t.deepEqual(await series(), ['vlan_gateway_interface_receive_bytes_total{vlan="lab",interface="eth2"}']);
  const left = await traffic();
  t.true(left.length > 0 && left.every((l) => !l.includes('"office"')), `traffic series of the zones left only: ${left.join(' | ')}`);
});

test('a forwarding series nothing counts any more (its rule removed) is removed; the others stay', async (t) => {
  const { config, ns } = await labNamespace();
  const templates = await loadTemplates();
  const dropping = { ...config, forwarding: { default: 'accept' as const, rules: [{ from: 'lab', to: 'office', proto: 'tcp' as const, ports: '81', action: 'drop' as const }] } };
  let desired = (await reconcileOnce(ns, dropping, templates)).plan.desired;
  const metrics = new Metrics('0.0.0-test');
  const collector = new StatsCollector(ns, metrics, pino({ level: 'silent' }), 60_000, () => ({ desired, backend: 'nft' }));
  const forwarded = async () => (await metrics.text()).split('\n').filter((l) => l.startsWith('vlan_gateway_forwarded_packets_total{'))
    .map((l) => /\{([^}]*)\}/.exec(l)![1]!);
  ns.countPackets(4, 336);
  await collector.collect();
  t.true((await forwarded()).includes('from="lab",to="office",action="drop"'));
  desired = (await reconcileOnce(ns, config, templates)).plan.desired; // a reload took the rule out
  await collector.collect();
  const left = await forwarded();
  t.false(left.includes('from="lab",to="office",action="drop"'), left.join(' | '));
  t.true(left.includes('from="lab",to="office",action="accept"'), left.join(' | '));
});

test('a NAT series no rule counts any more (masquerade turned to snat) is removed; the port forward\'s stays, and a waiting VLAN keeps its own', async (t) => {
  const { config, ns } = await labNamespace();
  const templates = await loadTemplates();
  let desired = (await reconcileOnce(ns, config, templates)).plan.desired;
  const metrics = new Metrics('0.0.0-test');
  const collector = new StatsCollector(ns, metrics, pino({ level: 'silent' }), 60_000, () => ({ desired, backend: 'nft' }));
  const nat = async () => (await metrics.text()).split('\n').filter((l) => l.startsWith('vlan_gateway_nat_packets_total{')).sort();
  ns.countPackets(4, 336);
  await collector.collect();
  t.deepEqual(await nat(), [
    'vlan_gateway_nat_packets_total{vlan="lab",kind="masquerade"} 4',
    'vlan_gateway_nat_packets_total{vlan="office",kind="dnat"} 4',
    'vlan_gateway_nat_packets_total{vlan="office",kind="masquerade"} 4',
  ]);

  // A reload to SNAT while lab's NIC is detached: lab waits (its series stay), office is NATed by SNAT now.
  ns.removeLink('eth2');
  const snat = { ...config, uplink: { ...config.uplink, nat: 'snat' as const, snatTo: '203.0.113.2' } };
  desired = (await reconcileOnce(ns, snat, templates)).plan.desired;
  t.truthy(desired.vlans.find((b) => b.vlan.name === 'lab' && !b.nic), 'lab waits for its NIC');
  ns.countPackets(1, 84);
  await collector.collect();
  t.deepEqual(await nat(), [
    'vlan_gateway_nat_packets_total{vlan="lab",kind="masquerade"} 4',
    'vlan_gateway_nat_packets_total{vlan="office",kind="dnat"} 5',
    'vlan_gateway_nat_packets_total{vlan="office",kind="snat"} 1',
  ]);
});

test('a payload restarts every rule it writes at zero: the scan for their hashes finds what a full parse finds', async (t) => {
  for (const name of ['lab', 'nat-none', 'policy', 'snat', 'user-templates', 'waiting']) {
    const text = await readFile(fileURLToPath(new URL(`../golden/${name}.restore`, import.meta.url)), 'utf8');
    const scanned = countersAfterPayload(text);
    t.true(scanned.size > 10, name);
    t.deepEqual(scanned, countersAfterRestore(text), name);
  }
});

test('the collector reads a long `ipset save` a part at a time: the HTTP endpoints get turns meanwhile, and every member still counts', async (t) => {
  const { config, ns } = await labNamespace();
  const desired = (await reconcileOnce(ns, config, await loadTemplates())).plan.desired;
  ns.countPackets(4, 336);
  // Someone else's big set around ours (about 800 kB of text, as our 10,000 members are at 100 VLANs): our members
  // come in the middle and at the end, in parts after the first.
  const foreign = (from: number) => Array.from({ length: 12_000 }, (_, i) => `add other-set 10.${from + (i >> 8)}.${i & 255}.1 packets 1 bytes 60\n`).join('');
  const runner: CommandRunner = {
    run: async (argv, options) => {
      const result = await ns.run(argv, options);
      if (argv.join(' ') !== 'ipset save') return result;
      const [head, ...rest] = result.stdout.split('\nadd VGW-');
      const ours = `add VGW-${rest.join('\nadd VGW-')}`.replaceAll(' packets 0 bytes 0', ' packets 5 bytes 420'); // every member: 5 packets
      return { ...result, stdout: `create other-set hash:ip counters\n${foreign(0)}${head}\n${foreign(100)}${ours}${foreign(200)}` };
    },
    start: (argv) => ns.start(argv),
  };
  const metrics = new Metrics('0.0.0-test');
  let drifted = 0;
  const collector = new StatsCollector(runner, metrics, pino({ level: 'silent' }), 60_000, () => ({ desired, backend: 'nft', setsDrifted: () => drifted++ }));
  // What a scrape arriving during the reading gets: a turn of the event loop before the reading has ended.
  let reading = true;
  let turns = 0;
  const turn = () => {
    if (!reading) return;
    turns++;
    setImmediate(turn);
  };
  const done = collector.collect().finally(() => (reading = false));
  setImmediate(turn);
  await done;
  t.true(turns >= 5, `the event loop ran ${turns} times while the reading parsed the sets`);
  t.is(drifted, 0, 'our sets read as exactly the desired members');
  const packets = (await metrics.text()).split('\n').filter((l) => l.startsWith('vlan_gateway_forwarded_packets_total{')).sort();
  t.deepEqual(packets, [
    // The pairs without rules of their own: their accounting members alone (the uplink's "any" source is two halves).
    'vlan_gateway_forwarded_packets_total{from="lab",to="office",action="accept"} 5',
    'vlan_gateway_forwarded_packets_total{from="lab",to="uplink",action="accept"} 5',
    'vlan_gateway_forwarded_packets_total{from="office",to="lab",action="accept"} 5',
    'vlan_gateway_forwarded_packets_total{from="office",to="uplink",action="accept"} 5',
    'vlan_gateway_forwarded_packets_total{from="uplink",to="lab",action="accept"} 10',
    'vlan_gateway_forwarded_packets_total{from="uplink",to="lab",action="drop"} 4',
    // The port forward's rule (4) and the members (2 × 5).
    'vlan_gateway_forwarded_packets_total{from="uplink",to="office",action="accept"} 14',
    'vlan_gateway_forwarded_packets_total{from="uplink",to="office",action="drop"} 4',
  ]);
});
