/**
 * What `lab check` sends and what it expects back, as data (src/lab/check.ts, expect.ts): the probes a config's
 * forwarding rules call for (the ports they name, a port just outside, the other transport, UDP as well as TCP),
 * from and to the hosts the rules name, from the Internet host into every VLAN; the verdict and the source each
 * probe must meet; what is not probed and why; the cap; the agents' sockets; and the matrix as printed.
 */
import test from 'ava';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import type { CommandRunner } from '../../src/exec/runner.js';
import { startAgent } from '../../src/lab/index.js';
import { loadConfig, parseConfigText } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import {
  connectOutcome, formatMatrix, planLabAgents, planLabProbes, planLabTopology, ruleProbes, type CheckResult, type CheckRow,
  type LabProbePlan,
} from '../../src/lab/index.js';

const examplePath = fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url));
const policyPath = fileURLToPath(new URL('../fixtures/policy.yaml', import.meta.url));

/** Each probe as "from → to probe: expected [as peer]". */
const expectations = (plan: LabProbePlan): string[] => plan.probes.map((p) => `${p.from} → ${p.to} ${p.probe}: ${p.expected}${p.expected === 'pass' && p.expectedPeer ? ` as ${p.expectedPeer}` : ''}`);

const withRules = (config: Config, rules: Config['forwarding']['rules'], fallback: 'accept' | 'drop' = 'accept'): Config => ({
  ...config,
  forwarding: { default: fallback, rules },
});

test('a rule\'s probes: the ports it names, a range by its ends, one port just outside each range, the other transport', (t) => {
  const show = (rule: Parameters<typeof ruleProbes>[0]) => ruleProbes(rule).map((w) => `${w.proto === 'icmp' ? 'ping' : `${w.proto}/${w.port}`}`);
  t.deepEqual(show({ from: 'lab', to: 'office', proto: 'tcp', ports: '22,8000-8100', action: 'accept' }), ['tcp/22', 'tcp/8000', 'tcp/8100', 'tcp/23', 'tcp/8101', 'udp/22']);
  // Just outside means outside every range of the rule: 22's neighbour 23 is inside, so 21.
  t.deepEqual(show({ from: 'lab', to: 'office', proto: 'udp', ports: '22,23', action: 'accept' }), ['udp/22', 'udp/23', 'udp/21', 'udp/24', 'tcp/22']);
  t.deepEqual(show({ from: 'lab', to: 'office', proto: 'tcp', ports: '1-65535', action: 'accept' }), ['tcp/1', 'tcp/65535', 'udp/1']);
  t.deepEqual(show({ from: 'lab', to: 'office', proto: 'udp', action: 'accept' }), ['udp/53', 'tcp/22']);
  t.deepEqual(show({ from: 'lab', to: 'office', proto: 'icmp', action: 'accept' }), ['ping', 'tcp/22']);
  // A catch-all: every protocol once, nothing "outside" it.
  t.deepEqual(show({ from: 'lab', to: 'office', action: 'drop' }), ['ping', 'tcp/22', 'udp/53']);
  t.deepEqual(show({ from: 'lab', to: 'office', proto: 'all', action: 'drop' }), ['ping', 'tcp/22', 'udp/53']);
});

test('the write-up\'s example: ping and TCP both ways between the VLANs and to the Internet, and the Internet into each VLAN is blocked but for the port forward', async (t) => {
  const { config } = await loadConfig(examplePath);
  const plan = planLabProbes(planLabTopology(config, 'u'), config);
  t.deepEqual(expectations(plan), [
    'office → lab ping: pass',
    'office → lab tcp/22: pass as 192.168.10.100',
    'office → lab tcp/80: pass as 192.168.10.100',
    'office → internet ping: pass',
    'office → internet tcp/80: pass as 203.0.113.2',
    'lab → office ping: pass',
    'lab → office tcp/22: pass as 192.168.20.100',
    'lab → office tcp/80: pass as 192.168.20.100',
    'lab → internet ping: pass',
    'lab → internet tcp/80: pass as 203.0.113.2',
    'internet → office ping: blocked',
    'internet → office tcp/22: blocked',
    'internet → office tcp/80: blocked',
    'internet → lab ping: blocked',
    'internet → lab tcp/22: blocked',
    'internet → lab tcp/80: blocked',
    'internet → office fwd tcp/2222: pass as 198.51.100.10',
  ]);
  t.deepEqual(plan.notProbed, []);
  t.is(plan.planned, plan.probes.length);
  // From the Internet host: sent from its own address (a secondary one of the inet namespace).
  t.like(plan.probes.find((p) => p.from === 'internet' && p.probe === 'tcp/22')?.spec, { namespace: 'vgwlab-u-inet', target: '192.168.10.100', localAddress: '198.51.100.10' });
  t.like(plan.probes.find((p) => p.probe === 'fwd tcp/2222'), { expectedLocal: '192.168.10.100:22', spec: { target: '203.0.113.2', port: 2222 } });
});

test('a range of ports forwarded: its first and last port land on the host on the same ports; the port just past it is refused by the router', (t) => {
  const text = (forwards: string[]) => [
    'uplink: {interface: eth0, gateway: 203.0.113.1}',
    'vlans:',
    '  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}',
    'portForwards:',
    ...forwards.map((f) => `  - ${f}`),
  ].join('\n');
  const config = parseConfigText(text(['{proto: udp, port: "10000-10100", to: 192.168.10.100}', '{port: 2222, to: 192.168.10.100, toPort: 22}']), 'range.yaml');
  const topology = planLabTopology(config, 'u');
  const plan = planLabProbes(topology, config);
  const forwards = plan.probes.filter((p) => p.forward);
  t.deepEqual(forwards.map((p) => `${p.probe}: ${p.expected}${p.expectedLocal ? ` on ${p.expectedLocal}` : ''}`), [
    'fwd udp/10000: pass on 192.168.10.100:10000',
    'fwd udp/10100: pass on 192.168.10.100:10100',
    'fwd udp/10101: blocked',
    'fwd tcp/2222: pass on 192.168.10.100:22',
  ]);
  t.like(forwards[2], { to: 'office', spec: { kind: 'udp', target: '203.0.113.2', port: 10101 } });
  t.is(plan.planned, plan.probes.length);
  // The host listens just past the range too: a DNAT wider than the range would pass there, and be a mismatch.
  const office = planLabAgents(topology, config, plan.probes).get('vgwlab-u-c10') ?? [];
  for (const port of [10000, 10100, 10101]) t.true(office.some((s) => s.proto === 'udp' && s.address === '192.168.10.100' && s.port === port), `udp/${port}`);
  // Just past means taken by no forward: after the range, else before it; none when both are forwarded.
  const ports = (forwards: string[]) => {
    const c = parseConfigText(text(forwards), 'range.yaml');
    return planLabProbes(planLabTopology(c, 'u'), c).probes.filter((p) => p.forward).map((p) => `${p.port} ${p.expected}`);
  };
  t.deepEqual(ports(['{port: "6000-6010", to: 192.168.10.100}', '{port: 6011, to: 192.168.10.100}']), ['6000 pass', '6010 pass', '5999 blocked', '6011 pass']);
  t.deepEqual(ports(['{port: "65000-65535", to: 192.168.10.100}']), ['65000 pass', '65535 pass', '64999 blocked']);
  t.deepEqual(ports(['{port: "2-9", to: 192.168.10.100}', '{port: 1, to: 192.168.10.100}', '{port: "10-20", to: 192.168.10.100}']),
    ['2 pass', '9 pass', '1 pass', '10 pass', '20 pass', '21 blocked']);
});

test('a policy: rules are probed from and to the hosts they name, with UDP, ranges and ports outside them; first match wins', async (t) => {
  const { config } = await loadConfig(policyPath);
  const topology = planLabTopology(config, 'u');
  // The clients hold the rules' addresses (and a prefix's first free address) besides their own.
  t.deepEqual(topology.vlans.map((v) => [v.name, v.client.address, ...v.client.extraAddresses]), [
    ['office', '192.168.10.100', '192.168.10.50', '192.168.10.20'],
    ['lab', '192.168.20.100', '192.168.20.3'],
    ['iot', '10.30.0.100', '10.30.1.5'],
  ]);
  const plan = planLabProbes(topology, config);
  const seen = new Set(expectations(plan));
  const expect = (line: string) => t.true(seen.has(line), `${line}\nin:\n${[...seen].join('\n')}`);
  // lab → office: tcp on the listed ports and a range's ends passes, the port just past each is rejected; udp too.
  for (const port of [22, 80, 443, 8000, 8100, 9000, 9011]) expect(`lab → office tcp/${port}: pass as 192.168.20.100`);
  for (const port of [23, 81, 444, 8101, 9012]) expect(`lab → office tcp/${port}: blocked`);
  expect('lab → office udp/22: blocked');
  expect('lab → office ping: pass');
  // office's /25 to lab's /28 (192.168.20.3): udp 53 and 123 pass, 54 and 124 do not... but office → lab accepts all
  // after it, so they pass too; tcp/53 as well. From 192.168.10.50 (inside the /25) to lab's own host: dropped.
  expect('office → lab udp/53 to 192.168.20.3: pass as 192.168.10.100');
  expect('office → lab udp/124 to 192.168.20.3: pass as 192.168.10.100');
  expect('office → lab udp/53 from 192.168.10.50: blocked');
  expect('office → lab tcp/22 from 192.168.10.50: blocked');
  expect('office → lab ping from 192.168.10.50: blocked');
  // iot is not NATed: with the upstream's routes the Internet host answers it, and sees its own address.
  expect('iot → internet tcp/443 from 10.30.1.5: pass as 10.30.1.5');
  expect('iot → internet tcp/444 from 10.30.1.5: blocked');
  expect('iot → internet udp/443 from 10.30.1.5: blocked');
  expect('iot → internet tcp/80: blocked');
  expect('iot → internet udp/53: blocked');
  // From the uplink: only what a rule opens.
  expect('internet → office tcp/22 to 192.168.10.20: pass as 198.51.100.10');
  expect('internet → office tcp/23 to 192.168.10.20: blocked');
  expect('internet → office udp/22 to 192.168.10.20: blocked');
  expect('internet → office tcp/22: blocked');
  t.deepEqual(plan.notProbed, []);
  // Deduplicated: no probe twice.
  t.is(new Set(plan.probes.map((p) => `${p.from}|${p.to}|${p.probe}`)).size, plan.probes.length);
});

// lab check took a probe as it should be whenever it was blocked, so a `reject` that dropped (its clients wait for a
// timeout) and a `drop` that answered both said OK: every probed port is served, so how a probe is stopped is the
// router's doing, and the plan says how the config stops each.
test('a blocked probe is expected stopped as the config says: refused by a reject and by the router itself, dropped by a drop and the defaults', async (t) => {
  const { config } = await loadConfig(policyPath);
  const plan = planLabProbes(planLabTopology(config, 'u'), config);
  const stopOf = (line: string) => {
    const p = plan.probes.find((x) => `${x.from} → ${x.to} ${x.probe}` === line);
    return p === undefined ? `no probe ${line}` : p.expectedStop ?? 'passes';
  };
  // lab → office: tcp on its ports and icmp accepted, then `reject` for the rest (a reset for TCP, ICMP for the others).
  t.is(stopOf('lab → office tcp/23'), 'refused');
  t.is(stopOf('lab → office udp/22'), 'refused');
  t.is(stopOf('lab → office tcp/22'), 'passes');
  // A `drop` rule, and the defaults (between VLANs under default: drop, from the uplink into a VLAN): no answer.
  t.is(stopOf('office → lab ping from 192.168.10.50'), 'dropped');
  t.is(stopOf('iot → internet tcp/80'), 'dropped');
  t.is(stopOf('lab → iot tcp/22'), 'dropped');
  t.is(stopOf('internet → office tcp/22'), 'dropped');

  const ranged = parseConfigText([
    'uplink: {interface: eth0, gateway: 203.0.113.1}',
    'vlans:',
    '  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}',
    'portForwards:',
    '  - {proto: udp, port: "10000-10100", to: 192.168.10.100}',
  ].join('\n'), 'range.yaml');
  const forwards = planLabProbes(planLabTopology(ranged, 'u'), ranged).probes.filter((p) => p.forward);
  // The port just past a forwarded range is the router's own, where nothing listens: refused, not dropped.
  t.deepEqual(forwards.map((p) => `${p.probe} ${p.expectedStop ?? 'passes'}`), ['fwd udp/10000 passes', 'fwd udp/10100 passes', 'fwd udp/10101 refused']);
});

test('a rule naming an address the lab cannot host is reported as not probed, saying why', async (t) => {
  const { config } = await loadConfig(examplePath);
  const rules = withRules(config, [
    { from: 'uplink', to: '192.168.10.2', proto: 'tcp', ports: '22', action: 'accept' },
    { from: 'lab', to: '192.168.10.255', action: 'drop' },
  ]);
  const plan = planLabProbes(planLabTopology(rules, 'u'), rules);
  t.deepEqual(plan.notProbed, [
    'forwarding.rules[0] (from uplink to 192.168.10.2): it is the address the lab gives the router\'s NIC on office',
    'forwarding.rules[1] (from lab to 192.168.10.255): the lab has no host at 192.168.10.255 (not a host address of 192.168.10.0/24, or more rule addresses in office than the lab hosts)',
  ]);
});

test('probes are capped, the ports the rules name kept first, and the plan says how many it left out', async (t) => {
  const { config } = await loadConfig(examplePath);
  const ports = Array.from({ length: 40 }, (_, i) => String(1000 + i * 10)).join(',');
  const rules = withRules(config, [{ from: 'lab', to: 'office', proto: 'tcp', ports, action: 'accept' }], 'drop');
  const topology = planLabTopology(rules, 'u');
  const full = planLabProbes(topology, rules);
  t.is(full.probes.length, full.planned);
  t.is(full.planned, 17 + 40 + 40 + 1);
  const capped = planLabProbes(topology, rules, 1500, 30);
  t.is(capped.probes.length, 30);
  t.is(capped.planned, full.planned);
  const labels = capped.probes.map((p) => `${p.from} → ${p.to} ${p.probe}`);
  t.true(labels.includes('internet → office fwd tcp/2222'), 'port forwards are always probed');
  t.true(labels.includes('lab → office tcp/1000') && labels.includes('lab → office tcp/1280'), 'the named ports first');
  t.false(labels.includes('office → lab ping'), 'the baseline after them');
  t.false(labels.includes('lab → office tcp/1001'), 'the ports outside them after them');
  t.is(capped.capped.length, 1);
  t.true(capped.capped[0]!.startsWith('forwarding.rules[0] (from lab to office): tcp/1290, tcp/1300,'), capped.capped[0]);
  const more = planLabProbes(topology, rules, 1500, 1 + 40 + 40 + 1).probes.map((p) => `${p.from} → ${p.to} ${p.probe}`);
  t.true(more.includes('lab → office tcp/1001') && more.includes('lab → office udp/1000'), 'then the ports outside them and the other transport');
  t.false(more.includes('office → lab ping'), 'the baseline last');
});

// From 8 VLANs on, the baseline between every pair of zones alone is more than the cap. It once came first, and every
// probe of a rule's own ports was left out: the check said "N of M planned probes left out" and OK, as if the rules
// had been tried. The rules' probes now come first, and any the cap still leaves out are named per rule.
test('with more VLANs than the cap covers, the rules\' probes run and the baseline is what is left out', (t) => {
  const text = (count: number, ...more: string[]) => [
    'uplink: {interface: eth0, gateway: 203.0.113.1}',
    'vlans:',
    ...Array.from({ length: count }, (_, i) => `  - {name: v${i + 1}, id: ${i + 1}, subnet: 10.${i + 1}.0.0/24, gateway: 10.${i + 1}.0.1}`),
    'forwarding:',
    '  default: drop',
    '  rules:',
    '    - {from: v1, to: v2, proto: tcp, ports: "22,443", action: accept}',
    '    - {from: uplink, to: v4, proto: udp, ports: "53", action: accept}',
    ...more,
  ].join('\n');
  const config = parseConfigText(text(12), 'v12.yaml');
  const plan = planLabProbes(planLabTopology(config, 'u'), config);
  t.is(plan.probes.length, 200);
  t.is(plan.planned, 12 * 11 * 3 + 12 * 2 + 12 * 3 + 4 + 3); // the baseline, then each rule's probes not in it
  // tcp/22 of the first rule is also v1 → v2's baseline probe, which ran.
  t.deepEqual(plan.capped, [], 'every probe of every rule ran');
  const labels = plan.probes.map((p) => `${p.from} → ${p.to} ${p.probe}`);
  for (const probe of ['v1 → v2 tcp/443', 'v1 → v2 tcp/23', 'v1 → v2 udp/22', 'internet → v4 udp/53', 'internet → v4 tcp/53']) t.true(labels.includes(probe), probe);
  t.false(labels.includes('v12 → v11 tcp/80'), 'the baseline\'s last pairs are left out');
  // A rule's probe that is also one of those last baseline probes is the rule's, and runs.
  const late = parseConfigText(text(12, '    - {from: v12, to: v11, proto: tcp, ports: "80", action: accept}'), 'v12.yaml');
  const latePlan = planLabProbes(planLabTopology(late, 'u'), late);
  t.deepEqual(latePlan.capped, []);
  t.true(latePlan.probes.some((p) => `${p.from} → ${p.to} ${p.probe}` === 'v12 → v11 tcp/80'));
  // Under the cap, nothing is said.
  const small = parseConfigText(text(4), 'v4.yaml');
  t.deepEqual(planLabProbes(planLabTopology(small, 'u'), small).capped, []);
});

test('agents serve every probed port: TCP on every address, UDP on the very address probed', async (t) => {
  const { config } = await loadConfig(policyPath);
  const topology = planLabTopology(config, 'u');
  const agents = planLabAgents(topology, config);
  const lab = agents.get('vgwlab-u-c20') ?? [];
  t.true(lab.some((s) => s.proto === 'udp' && s.address === '192.168.20.3' && s.port === 123));
  t.false(lab.some((s) => s.proto === 'udp' && s.address === '0.0.0.0'));
  const office = agents.get('vgwlab-u-c10') ?? [];
  for (const port of [22, 80, 443, 8000, 8100, 8101, 9012]) t.true(office.some((s) => s.proto === 'tcp' && s.address === '0.0.0.0' && s.port === port), `office tcp/${port}`);
  t.true(office.some((s) => s.proto === 'udp' && s.address === '192.168.10.100' && s.port === 22), 'lab → office udp/22 lands on office\'s host');
  const inet = agents.get('vgwlab-u-inet') ?? [];
  t.true(inet.some((s) => s.proto === 'tcp' && s.port === 443) && inet.some((s) => s.proto === 'udp' && s.address === '198.51.100.10' && s.port === 443));
});

test('a blocked probe says how: a reset or ICMP refusal, or nothing at all (a silent drop)', (t) => {
  t.like(connectOutcome('tcp', 'timeout'), { actual: 'blocked', stop: 'dropped', detail: 'no answer (dropped)' });
  t.like(connectOutcome('tcp', 'error ECONNREFUSED'), { actual: 'blocked', stop: 'refused', detail: 'refused (TCP reset or ICMP port unreachable)' });
  t.like(connectOutcome('udp', 'error ECONNREFUSED'), { actual: 'blocked', stop: 'refused', detail: 'refused: ICMP port unreachable' });
  t.like(connectOutcome('udp', 'error EHOSTUNREACH'), { actual: 'blocked', detail: 'refused: ICMP host unreachable or prohibited' });
  // A host unreachable is also the client's own kernel when its gateway does not answer ARP, and an agent's own
  // failure says nothing of the router: neither is judged as a reject or a drop.
  t.is(connectOutcome('udp', 'error EHOSTUNREACH').stop, undefined);
  t.is(connectOutcome('udp', 'error EADDRNOTAVAIL').stop, undefined);
  t.like(connectOutcome('udp', 'peer 10.0.0.1 local 10.0.0.2:53'), { actual: 'pass', reply: { peer: '10.0.0.1', local: '10.0.0.2:53' } });
});

const row = (from: string, to: string, probe: string, actual: 'pass' | 'blocked', extra: Partial<CheckRow> = {}): CheckRow => {
  const [head, rest] = probe.replace(/^fwd /, '').split('/');
  const port = rest === undefined ? undefined : Number(rest.split(' ')[0]);
  return {
    from, to, probe, proto: head === 'ping' ? 'icmp' : head as 'tcp' | 'udp', ...(port === undefined ? {} : { port }),
    hosts: probe.includes(' from ') || probe.includes(' to ') ? probe.replace(/^\S+ /, '') : '',
    ...(probe.startsWith('fwd ') ? { forward: true } : {}), expected: actual, actual, ok: true, detail: '', ...extra,
  };
};

test('the matrix: a pair\'s probes grouped by result, ports joined, the Internet\'s view, and the mismatches spelled out', (t) => {
  const result: CheckResult = {
    lab: 'demo', zones: ['office', 'lab', 'internet'], notes: [], ok: false, durationMs: 2100,
    rows: [
      row('office', 'lab', 'ping', 'pass'), row('office', 'lab', 'tcp/22', 'pass'), row('office', 'lab', 'tcp/80', 'pass'),
      row('office', 'internet', 'ping', 'pass'), row('office', 'internet', 'tcp/80', 'pass', { peer: '203.0.113.2' }),
      row('lab', 'office', 'ping', 'pass'), row('lab', 'office', 'tcp/22', 'pass'),
      row('lab', 'office', 'tcp/80', 'blocked', { expected: 'pass', ok: false, detail: 'no answer (dropped)' }),
      row('lab', 'internet', 'ping', 'pass'), row('lab', 'internet', 'tcp/80', 'pass', { peer: '203.0.113.2' }),
      row('internet', 'office', 'ping', 'blocked'), row('internet', 'office', 'tcp/22', 'blocked'), row('internet', 'office', 'tcp/80', 'blocked'),
      row('internet', 'office', 'fwd tcp/2222', 'pass'),
      row('internet', 'lab', 'ping', 'blocked'), row('internet', 'lab', 'tcp/22', 'blocked'), row('internet', 'lab', 'tcp/80', 'blocked'),
    ],
  };
  t.is(formatMatrix(result), [
    'lab demo: ✓ passed, ✗ blocked, ! not what the config allows',
    'from \\ to  office                             lab                 internet',
    'office     ·                                  ping ✓ tcp/22,80 ✓  ping ✓ tcp/80 ✓ as 203.0.113.2',
    'lab        ping ✓ tcp/22 ✓ tcp/80 ✗!          ·                   ping ✓ tcp/80 ✓ as 203.0.113.2',
    'internet   ping ✗ tcp/22,80 ✗ fwd tcp/2222 ✓  ping ✗ tcp/22,80 ✗  ·',
    '',
    'mismatches:',
    '  lab → office tcp/80: the config says pass, got blocked (no answer (dropped))',
    '',
    '17 probes, 1 not as the config allows (2.1 s): MISMATCH',
  ].join('\n'));
});

test('a probe blocked another way than the config says is a mismatch that says how it should have been stopped', (t) => {
  const result: CheckResult = {
    lab: 'demo', zones: ['office', 'lab', 'internet'], notes: [], ok: false, durationMs: 1200,
    rows: [
      row('lab', 'office', 'tcp/23', 'blocked', { expectedStop: 'refused', stop: 'dropped', ok: false, detail: 'no answer (dropped)' }),
      row('office', 'lab', 'tcp/22', 'blocked', { expectedStop: 'dropped', stop: 'refused', ok: false, detail: 'refused (TCP reset or ICMP port unreachable)' }),
    ],
  };
  const text = formatMatrix(result);
  t.true(text.includes('  lab → office tcp/23: blocked, but not as configured (expected it refused: a TCP reset or an ICMP port unreachable) (no answer (dropped))'), text);
  t.true(text.includes('  office → lab tcp/22: blocked, but not as configured (expected it dropped: no answer) (refused (TCP reset or ICMP port unreachable))'), text);
  t.regex(text, /^office +· +tcp\/22 ✗!/m);
});

// A probe that passed but reached the wrong place (a port forward landing on another host) was said as "expected
// the server to see 198.51.100.10", the very source it saw: the address it should have reached was not said.
test('a probe that passed but landed elsewhere says where it should have landed', (t) => {
  const result: CheckResult = {
    lab: 'demo', zones: ['office', 'internet'], notes: [], ok: false, durationMs: 900,
    rows: [row('internet', 'office', 'fwd tcp/2222', 'pass', {
      ok: false, expectedPeer: '198.51.100.10', expectedLocal: '192.168.10.100:22', peer: '198.51.100.10',
      detail: 'to 192.168.10.100:22; peer 198.51.100.10 local 192.168.10.50:22',
    })],
  };
  t.true(formatMatrix(result).includes('  internet → office fwd tcp/2222: passed, but not as configured (expected the server to see '
    + '198.51.100.10 on 192.168.10.100:22) (to 192.168.10.100:22; peer 198.51.100.10 local 192.168.10.50:22)'), formatMatrix(result));
});

test('too wide for a matrix: one line per pair, ranges of ports as ranges, the hosts a rule names in brackets, and the notes', (t) => {
  const ports = [22, 80, 443, 8000, 8100, ...Array.from({ length: 12 }, (_, i) => 9000 + i)];
  const result: CheckResult = {
    lab: 'demo', zones: ['office', 'lab', 'internet'], ok: true, durationMs: 2300,
    notes: ['not probed: forwarding.rules[9] (from uplink to 192.168.10.2): it is the address the lab gives the router\'s NIC on office'],
    rows: [
      row('lab', 'office', 'ping', 'pass'),
      ...ports.map((p) => row('lab', 'office', `tcp/${p}`, 'pass')),
      ...[23, 81, 8101].map((p) => row('lab', 'office', `tcp/${p}`, 'blocked')),
      row('lab', 'office', 'udp/22', 'blocked'),
      ...ports.map((p) => row('office', 'lab', `tcp/${p}`, 'blocked')),
      row('internet', 'office', 'ping', 'blocked'),
      row('internet', 'office', 'tcp/22 to 192.168.10.20', 'pass'),
      row('internet', 'office', 'tcp/23 to 192.168.10.20', 'blocked'),
    ],
  };
  t.is(formatMatrix(result), [
    'lab demo: ✓ passed, ✗ blocked, ! not what the config allows',
    'office → lab       tcp/22,80,443,8000,8100,9000-9011 ✗',
    'lab → office       ping ✓ tcp/22,80,443,8000,8100,9000-9011 ✓ tcp/23,81,8101 ✗ udp/22 ✗',
    'internet → office  ping ✗ [to 192.168.10.20] tcp/22 ✓ tcp/23 ✗',
    '',
    'not probed: forwarding.rules[9] (from uplink to 192.168.10.2): it is the address the lab gives the router\'s NIC on office',
    '',
    '42 probes, all as the config allows (2.3 s): OK',
  ].join('\n'));
});

// The agent's stderr was dropped: `lab check` as a user who may not enter a namespace said "agent in vgwlab-NAME-c20
// exited (255) before it was ready: no output", ip's reason lost. Here the real runner starts, in place of `ip netns
// exec` (no namespace is made), a command that fails as ip does there.
test.serial('an agent that exits before it is ready says what it wrote on stderr', async (t) => {
  const real = new ExecaRunner();
  const started: string[][] = [];
  const refused: CommandRunner = {
    run: (argv, options) => real.run(argv, options),
    start: (argv, options) => {
      started.push([...argv]);
      return real.start(['sh', '-c', 'echo \'setting the network namespace "vgwlab-u2-c20" failed: Operation not permitted\' >&2; exit 255'], options);
    },
  };
  await t.throwsAsync(startAgent(refused, 'vgwlab-u2-c20', [{ proto: 'tcp', address: '0.0.0.0', port: 22 }], 5), {
    message: 'agent in vgwlab-u2-c20 exited (255) before it was ready: setting the network namespace "vgwlab-u2-c20" failed: Operation not permitted',
  });
  t.deepEqual(started[0]!.slice(0, 4), ['ip', 'netns', 'exec', 'vgwlab-u2-c20']);
});

// A port something else holds where the agent serves (a server started in a client to explore the lab, or another
// check of the same lab) stopped lab check with "agent in vgwlab-demo-c10: error tcp/0.0.0.0:80 EADDRINUSE". Here
// the real agent runs in this process's namespace (in place of `ip netns exec`), on a port this test holds.
test.serial('an agent that cannot take a port says which, where, and what holds it', async (t) => {
  const real = new ExecaRunner();
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const port = (holder.address() as AddressInfo).port;
  const here: CommandRunner = {
    run: (argv, options) => real.run(argv, options),
    start: (argv, options) => real.start(argv.slice(4), options), // without `ip netns exec vgwlab-u3-c10`
  };
  try {
    await t.throwsAsync(startAgent(here, 'vgwlab-u3-c10', [{ proto: 'tcp', address: '127.0.0.1', port }], 5), {
      message: `lab check cannot serve tcp/${port} in vgwlab-u3-c10 on 127.0.0.1, which its probes need: another process there holds the port `
        + '(a server of your own, or another lab check of this lab; see: ip netns exec vgwlab-u3-c10 ss -tlnp); stop it and check again',
    });
  } finally {
    await new Promise((resolve) => holder.close(resolve));
  }
});
