/**
 * The lab builder in real namespaces: it builds the write-up's network without touching the root namespace,
 * the router's VLAN NICs sit on the right subnets whatever their ethN, nothing routes before the product applies
 * (so `lab check` sees everything blocked and reports the mismatches), a failed build leaves nothing behind, and
 * `labDown` removes every namespace. The first tests are pure (the plan as data) and run without root.
 */
import test from 'ava';
import { execa } from 'execa';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InstanceLock, WriteLock } from '../../src/cli/instance-lock.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { CommandError, type CommandRunner } from '../../src/exec/runner.js';
import {
  expectedPortForwardVerdict, expectedVerdict, formatMatrix, labCheck, labDown, labUp, labUpCommands,
  LabInputError, listLabNamespaces, planLabTopology, type LabTopology,
} from '../../src/lab/index.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { runMain } from '../helpers/main.js';
import { tearDownAlways } from '../helpers/teardown.js';

const examplePath = fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url));
const runner = new ExecaRunner();
const kernel = isRoot() ? test.serial : test.serial.skip;

const withRules = (config: Config, rules: Config['forwarding']['rules'], fallback: 'accept' | 'drop' = 'accept'): Config => ({
  ...config,
  forwarding: { default: fallback, rules },
});

// ---- pure: the plan as data ----

test('topology: namespaces are prefixed per lab, NICs attached in reverse order, Docker-like addresses', async (t) => {
  const { config } = await loadConfig(examplePath);
  const topo = planLabTopology(config, 'demo');
  t.is(topo.router, 'vgwlab-demo-router');
  t.deepEqual(topo.namespaces, ['vgwlab-demo-router', 'vgwlab-demo-sw', 'vgwlab-demo-inet', 'vgwlab-demo-c10', 'vgwlab-demo-c20']);
  t.true(topo.namespaces.every((ns) => ns.startsWith('vgwlab-demo-')));
  t.deepEqual(topo.attachOrder, [20, 10]);
  const [office, lab] = topo.vlans;
  t.like(office, { routerInterface: 'eth2', routerAddress: '192.168.10.2', parent: 'p10', bridge: 'br10' });
  t.like(lab, { routerInterface: 'eth1', routerAddress: '192.168.20.2' });
  t.like(office?.client, { namespace: 'vgwlab-demo-c10', address: '192.168.10.100' });
  t.like(topo.uplink, { routerInterface: 'eth0', routerAddress: '203.0.113.2', inetAddress: '203.0.113.1', internetHost: '198.51.100.10', defaultRoute: false });
  t.throws(() => planLabTopology(config, 'Bad-name'), { message: /lab name/ });
  t.throws(() => planLabTopology(config, 'waytoolong'), { message: /lab name/ });
});

test('topology: a config whose addresses or names collide with the lab\'s own is refused, saying which (not a false mismatch later)', async (t) => {
  const { config } = await loadConfig(examplePath);
  t.throws(() => planLabTopology({ ...config, portForwards: [{ proto: 'tcp', port: 2222, to: '192.168.20.2', toPort: 22 }] }, 'demo'), {
    instanceOf: LabInputError,
    message: 'portForwards[0].to: 192.168.20.2 is the address the lab gives the router\'s NIC on lab (as Docker would); forward to another host address',
  });
  t.throws(() => planLabTopology({ ...config, uplink: { ...config.uplink, nat: 'snat', snatTo: '198.51.100.10' } }, 'demo'), {
    instanceOf: LabInputError, message: 'uplink.snatTo: 198.51.100.10 is the lab\'s Internet host; use an address of the router\'s uplink',
  });
  t.throws(() => planLabTopology({ ...config, vlans: config.vlans.map((v, i) => (i === 1 ? { ...v, name: 'internet' } : v)) }, 'demo'), {
    instanceOf: LabInputError, message: 'vlans[1].name: "internet" is the name the lab gives its Internet host (a column of lab check\'s matrix); give the VLAN another name',
  });
});

// The lab's own next hop was 203.0.113.1 whatever the config SNATs to: with snatTo 203.0.113.1 the Internet side
// saw its own address as the source and dropped every packet, and lab check reported a false mismatch.
test('topology: without uplink.gateway, the next hop the lab picks is never the snatTo address', async (t) => {
  const { config } = await loadConfig(examplePath);
  const topo = planLabTopology({ ...config, uplink: { ...config.uplink, gateway: undefined, nat: 'snat', snatTo: '203.0.113.1' } }, 'x');
  t.like(topo.uplink, { routerAddress: '203.0.113.1', inetAddress: '203.0.113.254', defaultRoute: true });
  t.deepEqual(topo.uplink.inetRoutesViaRouter, ['192.168.10.0/24', '192.168.20.0/24'], 'the VLANs, as an upstream router routes them');
  t.like(planLabTopology({ ...config, uplink: { ...config.uplink, gateway: undefined } }, 'x').uplink, { inetAddress: '203.0.113.1' });
});

test('topology: snat address, gateway taking .2, small subnets and explicit NIC names are honoured', async (t) => {
  const { config } = await loadConfig(examplePath);
  const topo = planLabTopology({
    ...config,
    uplink: { ...config.uplink, gateway: undefined, nat: 'snat', snatTo: '203.0.113.7' },
    vlans: [
      { name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.10.2', interface: 'eth1', masquerade: true },
      { name: 'lab', id: 20, subnet: '192.168.20.0/28', gateway: '192.168.20.1', masquerade: true },
    ],
  }, 'x');
  t.like(topo.uplink, { routerAddress: '203.0.113.7', defaultRoute: true });
  t.like(topo.vlans[0], { routerInterface: 'eth1', routerAddress: '192.168.10.1' });
  t.like(topo.vlans[1], { routerInterface: 'eth2', routerAddress: '192.168.20.2' });
  t.is(topo.vlans[1]?.client.address, '192.168.20.14');
});

test('lab up creates nothing in the root namespace: every ip command names a lab namespace', async (t) => {
  const { config } = await loadConfig(examplePath);
  const topo = planLabTopology(config, 'demo');
  for (const argv of labUpCommands(topo)) {
    const [tool, first, second, third] = argv;
    t.is(tool, 'ip');
    const ns = first === '-n' ? second : first === 'netns' ? third : undefined;
    t.true(ns !== undefined && topo.namespaces.includes(ns), argv.join(' '));
  }
});

test('expected verdicts: first match wins, addresses, protocols, ports, defaults, port forwards', async (t) => {
  const { config } = await loadConfig(examplePath);
  t.is(expectedVerdict(config, 'office', 'lab', 'icmp'), 'pass');
  t.is(expectedVerdict(config, 'office', 'uplink', 'tcp', 80), 'pass');
  t.is(expectedVerdict(config, 'uplink', 'office', 'tcp', 22, '192.168.10.100'), 'blocked');
  t.is(expectedVerdict(withRules(config, [], 'drop'), 'office', 'lab', 'tcp', 22), 'blocked');

  const rules = withRules(config, [
    { from: 'lab', to: 'office', proto: 'tcp', ports: '22,8000-8100', action: 'accept' },
    { from: 'lab', to: '192.168.10.100', action: 'drop' },
    { from: 'office', to: 'uplink', proto: 'icmp', action: 'reject' },
    { from: 'uplink', to: 'office', action: 'drop' },
  ]);
  t.is(expectedVerdict(rules, 'lab', 'office', 'tcp', 22, '192.168.10.100'), 'pass');
  t.is(expectedVerdict(rules, 'lab', 'office', 'tcp', 8050, '192.168.10.100'), 'pass');
  t.is(expectedVerdict(rules, 'lab', 'office', 'udp', 22, '192.168.10.100'), 'blocked');
  t.is(expectedVerdict(rules, 'lab', 'office', 'icmp', undefined, '192.168.10.100'), 'blocked');
  t.is(expectedVerdict(rules, 'lab', 'office', 'icmp', undefined, '192.168.10.7'), 'pass');
  t.is(expectedVerdict(rules, 'office', 'uplink', 'icmp'), 'blocked');
  t.is(expectedVerdict(rules, 'office', 'uplink', 'tcp', 80), 'pass');
  t.is(expectedPortForwardVerdict(config, config.portForwards[0]!), 'pass');
  // A port forward is an explicit opening: accepted before any uplink rule (like a router's redirect).
  t.is(expectedPortForwardVerdict(rules, rules.portForwards[0]!), 'pass');
});

// ---- kernel: real namespaces ----

const name = uniqueLabName('t');
const rollbackName = uniqueLabName('r');
const cliName = uniqueLabName('c');
const standingName = uniqueLabName('s');
const signalName = uniqueLabName('i');
const lockName = uniqueLabName('w');
const besideName = uniqueLabName('v');
const stoppedName = uniqueLabName('x');
const rejectName = uniqueLabName('j');
let topology: LabTopology | undefined;
let config: Config | undefined;

tearDownAlways('remove every lab namespace this file made', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  await labDown(runner, rollbackName);
  await labDown(runner, cliName);
  await labDown(runner, standingName);
  await labDown(runner, signalName);
  await labDown(runner, lockName);
  await labDown(runner, besideName);
  await labDown(runner, stoppedName);
  await labDown(runner, rejectName);
});

const linkNames = async (ns?: string): Promise<Set<string>> => {
  const argv = ns === undefined ? ['ip', '-json', 'link'] : ['ip', '-n', ns, '-json', 'link'];
  const links = JSON.parse((await runner.run(argv)).stdout) as Array<{ ifname: string }>;
  return new Set(links.map((l) => l.ifname));
};

kernel(`lab up builds the topology inside its own namespaces${NEEDS_ROOT}`, async (t) => {
  config = (await loadConfig(examplePath)).config;
  topology = planLabTopology(config, name);
  const rootBefore = await linkNames();
  const started = Date.now();
  await labUp(runner, topology);
  t.log(`labUp: ${Date.now() - started} ms`);

  t.deepEqual((await listLabNamespaces(runner, name)).sort(), [...topology.namespaces].sort());
  const rootAfter = await linkNames();
  const ours = new Set(['lo', ...topology.vlans.flatMap((v) => [v.bridge, v.parent, v.parentPeer, v.client.switchPort, `m${v.id}`])]);
  t.deepEqual([...rootAfter].filter((n) => !rootBefore.has(n) && ours.has(n)), [], 'nothing of the lab in the root namespace');

  const router = topology.router;
  const forward = await runner.run(['ip', 'netns', 'exec', router, 'sysctl', '-n', 'net.ipv4.ip_forward']);
  t.is(forward.stdout.trim(), '0');

  type Addr = { ifname: string; addr_info: Array<{ family: string; local: string; prefixlen: number }>; linkinfo?: { info_kind?: string; info_data?: { mode?: string } } };
  const nics = JSON.parse((await runner.run(['ip', '-n', router, '-d', '-json', 'addr'])).stdout) as Addr[];
  for (const vlan of topology.vlans) {
    const [net] = vlan.subnet.split('/');
    const prefix3 = net!.split('.').slice(0, 3).join('.');
    const nic = nics.find((n) => n.addr_info.some((a) => a.family === 'inet' && a.local.startsWith(`${prefix3}.`)));
    t.is(nic?.ifname, vlan.routerInterface, `the NIC on ${vlan.subnet}`);
    t.is(nic?.linkinfo?.info_kind, 'macvlan');
    t.is(nic?.linkinfo?.info_data?.mode, 'bridge');
    t.true(nic?.addr_info.some((a) => a.local === vlan.routerAddress));
    t.false(nic?.addr_info.some((a) => a.local === vlan.gateway), 'the gateway address is left to the product');
  }
  t.not(topology.vlans[0]?.routerInterface, 'eth1', 'ethN does not follow config order');
  t.true(nics.some((n) => n.ifname === topology!.uplink.routerInterface && n.addr_info.some((a) => a.local === topology!.uplink.routerAddress)));

  // As an upstream router: the VLANs' subnets via the router's uplink address, and no default route.
  const inetRoutes = (await runner.run(['ip', '-n', topology.inet, 'route'])).stdout;
  for (const vlan of topology.vlans) t.regex(inetRoutes, new RegExp(`^${vlan.subnet.replace(/\./g, '\\.')} via ${topology.uplink.routerAddress} `, 'm'));
  t.notRegex(inetRoutes, /default/);
  t.true((await linkNames(topology.switch)).has('br10'));
});

kernel(`lab up refuses to build over an existing lab${NEEDS_ROOT}`, async (t) => {
  await t.throwsAsync(labUp(runner, topology!), { message: /already exists.*lab down/s });
});

kernel(`before the product applies, nothing routes and lab check reports every mismatch${NEEDS_ROOT}`, async (t) => {
  const started = Date.now();
  const result = await labCheck(runner, topology!, config!);
  t.log(`labCheck: ${Date.now() - started} ms`);
  t.log(formatMatrix(result));
  t.false(result.ok);
  t.is(result.rows.length, 17);
  t.deepEqual(result.rows.filter((r) => r.actual !== 'blocked'), [], 'nothing passes an unconfigured router');
  const mismatches = result.rows.filter((r) => !r.ok);
  t.true(mismatches.length > 0);
  t.true(mismatches.every((r) => r.expected === 'pass'));
  t.truthy(result.rows.find((r) => r.from === 'office' && r.to === 'lab' && r.probe === 'tcp/22' && r.expected === 'pass'));
  t.truthy(result.rows.find((r) => r.from === 'internet' && r.to === 'office' && r.probe === 'fwd tcp/2222'));
  t.truthy(result.rows.find((r) => r.from === 'internet' && r.to === 'lab' && r.probe === 'tcp/22' && r.expected === 'blocked' && r.ok), 'from the uplink into a VLAN');
  // Nothing refused (a reset, a port unreachable): not forwarded at all. A client's own host unreachable may come: no
  // one answers ARP for its gateway address yet, and on a loaded machine a probe starts after its ARP has failed.
  t.deepEqual(result.rows.filter((r) => r.stop === 'refused').map((r) => `${r.from} → ${r.to} ${r.probe}: ${r.detail}`), [], 'nothing refused: not forwarded at all');
  t.true(result.rows.filter((r) => r.actual === 'blocked').every((r) => /no answer \(dropped\)$|ICMP host unreachable/.test(r.detail)), 'dropped, or the client\'s own ARP failed');
  t.regex(formatMatrix(result), /MISMATCH/);
  for (const ns of [topology!.inet, ...topology!.vlans.map((v) => v.client.namespace)]) {
    t.is((await runner.run(['ip', 'netns', 'pids', ns])).stdout.trim(), '', `the agent in ${ns} is stopped`);
  }
});

kernel(`a failing lab up removes what it made${NEEDS_ROOT}`, async (t) => {
  const failing: CommandRunner = {
    run: (argv, options) => (argv.includes('macvlan')
      ? Promise.reject(new CommandError(argv, 2, 'injected failure'))
      : runner.run(argv, options)),
    start: (argv, options) => runner.start(argv, options),
  };
  await t.throwsAsync(labUp(failing, planLabTopology(config!, rollbackName)), { message: /injected failure/ });
  t.deepEqual(await listLabNamespaces(runner, rollbackName), []);
});

kernel(`lab down removes every namespace and is idempotent${NEEDS_ROOT}`, async (t) => {
  const started = Date.now();
  const removed = await labDown(runner, name);
  t.log(`labDown: ${Date.now() - started} ms`);
  t.deepEqual(removed.sort(), [...topology!.namespaces].sort());
  t.deepEqual(await listLabNamespaces(runner, name), []);
  t.deepEqual(await labDown(runner, name), []);
});

const cli = runMain;

kernel(`lab check without --config checks the config lab up applied, and says when that file changed since${NEEDS_ROOT}`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-lab-record-'));
  try {
    // Not the example's policy: only SSH from lab to office, nothing else between the VLANs.
    const path = join(dir, 'mine.yaml');
    const example = await readFile(examplePath, 'utf8');
    const mine = example.replace(/forwarding:\n {2}default: accept\n/, `forwarding:
  default: drop
  rules:
    - {from: lab, to: office, proto: tcp, ports: "22", action: accept}
`);
    t.not(mine, example);
    await writeFile(path, mine);
    const up = await cli('lab', 'up', '--name', cliName, '--config', path);
    t.is(up.code, 0, up.stdout);
    t.regex(up.stdout, new RegExp(`Try: vlan-gateway lab check --name ${cliName};`));

    // Against the example's policy (accept between VLANs) this lab shows mismatches; against its own, none.
    const checked = await cli('lab', 'check', '--name', cliName);
    t.is(checked.code, 0, checked.stdout);
    t.regex(checked.stdout, /^lab +ping ✗ tcp\/22 ✓ tcp\/23,80 ✗ udp\/22 ✗ /m);
    t.regex(checked.stdout, /all as the config allows/);
    t.notRegex(checked.stdout, /note:/);

    // The file edited after up: checked as it is now, with a note saying the router runs what up applied.
    await writeFile(path, example);
    const edited = await cli('lab', 'check', '--name', cliName);
    t.is(edited.code, 1, edited.stdout);
    t.true(edited.stdout.includes(`note: ${path} changed since \`lab up\` applied it; checking against it as it is now (apply it with: vlan-gateway apply --netns vgwlab-${cliName}-router --config ${path})`), edited.stdout);

    // A rule of its own in rules.dir, applied: the expected verdicts are the config's forwarding rules alone, so
    // the SSH the template rejects is a mismatch, and the check says why (it used to name an "allowed" column
    // that the matrix does not have).
    const rulesDir = join(dir, 'rules.d');
    await mkdir(join(rulesDir, 'filter'), { recursive: true });
    await writeFile(join(rulesDir, 'filter', 'forward.hbs'), '-s 192.168.20.0/24 -d 192.168.10.0/24 -p tcp --dport 22 -j REJECT\n');
    const withRules = join(dir, 'with-rules.yaml');
    await writeFile(withRules, `${mine}rules: {dir: rules.d}\n`);
    const applied = await cli('apply', '--netns', `vgwlab-${cliName}-router`, '--config', withRules);
    t.is(applied.code, 0, applied.stderr);
    const ruled = await cli('lab', 'check', '--name', cliName, '--config', withRules);
    t.is(ruled.code, 1, ruled.stdout);
    t.regex(ruled.stdout, /^lab +ping ✗ tcp\/22 ✗! /m);
    t.regex(ruled.stdout, /^ {2}lab → office tcp\/22: the config says pass, got blocked/m);
    t.true(ruled.stdout.includes('note: what the config allows is read from its forwarding rules and port forwards, not from the templates in '
      + `rules.dir (${rulesDir}): a probe that a rule of yours decides otherwise shows as a mismatch (!)\n`), ruled.stdout);

    const down = await cli('lab', 'down', '--name', cliName);
    t.is(down.code, 0);
    t.false(existsSync(`/run/vgwlab/${cliName}.json`), 'lab down removes the record');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// lab check took every blocked probe for what the config says, so a `reject` that dropped (its clients wait for a
// timeout) and a `drop` that answered (a scanner learns what is there) both said OK. And the router's ICMP errors
// were limited per host (six, then one a second): a burst of rejected UDP probes came back half silent.
kernel(`lab check tells a reject from a drop, for a burst of rejects too, and says which was changed by hand${NEEDS_ROOT}`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-lab-reject-'));
  try {
    const path = join(dir, 'reject.yaml');
    await writeFile(path, `uplink: {interface: eth0, gateway: 203.0.113.1}
vlans:
  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.10.1}
  - {name: lab, id: 20, subnet: 192.168.20.0/24, gateway: 192.168.20.1}
forwarding:
  default: drop
  rules:
    - {from: lab, to: office, proto: udp, ports: "1,3,5,7,9,11,13,15,17,19", action: reject}
    - {from: lab, to: office, action: reject}
`);
    const up = await cli('lab', 'up', '--name', rejectName, '--config', path);
    t.is(up.code, 0, up.stderr);
    const config = (await loadConfig(path)).config;
    const topo = planLabTopology(config, rejectName);
    const applied = await labCheck(runner, topo, config);
    t.true(applied.ok, formatMatrix(applied));
    const refused = applied.rows.filter((r) => r.stop === 'refused').map((r) => `${r.from} → ${r.to} ${r.probe}`);
    t.true(refused.length >= 20, `every lab → office probe refused, the 20 UDP ones in one burst: ${refused.join(', ')}`);

    // By hand: lab → office's TCP reset becomes a drop, and office → lab's drop (the default) a reset.
    const inRouter = (...argv: string[]) => runner.run(['ip', 'netns', 'exec', topo.router, 'iptables', ...argv]);
    const reset = (await inRouter('-S', 'VGW-P-20-10')).stdout.split('\n').findIndex((l) => l.includes('--reject-with tcp-reset'));
    t.true(reset > 0);
    await inRouter('-R', 'VGW-P-20-10', String(reset), '-p', 'tcp', '-j', 'DROP'); // -S lists -N first: its index is the rule's number
    await inRouter('-I', 'VGW-FROM-10', '-d', '192.168.20.0/24', '-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset');
    const changed = await labCheck(runner, topo, config);
    t.deepEqual(changed.rows.filter((r) => !r.ok).map((r) => `${r.from} → ${r.to} ${r.probe}: ${r.expectedStop} got ${r.stop}`).sort(), [
      'lab → office tcp/1: refused got dropped',
      'lab → office tcp/22: refused got dropped',
      'lab → office tcp/80: refused got dropped',
      'office → lab tcp/22: dropped got refused',
      'office → lab tcp/80: dropped got refused',
    ]);
    t.regex(formatMatrix(changed), /^ {2}lab → office tcp\/22: blocked, but not as configured \(expected it refused: a TCP reset or an ICMP port unreachable\) \(no answer \(dropped\)\)$/m);
  } finally {
    await labDown(runner, rejectName);
    await rm(dir, { recursive: true, force: true });
  }
});

const brokenTemplates = fileURLToPath(new URL('../fixtures/broken-templates/missing-variable', import.meta.url));

// lab up built the whole lab, recorded it and then exited 2 on a template `validate` refuses, leaving it standing
// (a second up then said "already exists"); lab demo removed the lab that stood before it read the config.
kernel(`a config validate refuses builds no lab, and lab demo with it leaves the lab that stands; lab check on a lab missing a namespace says so${NEEDS_ROOT}`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-lab-broken-'));
  try {
    const path = join(dir, 'broken.yaml');
    await writeFile(path, `${await readFile(examplePath, 'utf8')}rules:\n  dir: ${brokenTemplates}\n`);
    const up = await cli('lab', 'up', '--name', signalName, '--config', path);
    t.is(up.code, 2, up.stdout);
    t.regex(up.stderr, /invalid rule template: /);
    t.deepEqual(await listLabNamespaces(runner, signalName), [], 'nothing built');
    t.false(existsSync(`/run/vgwlab/${signalName}.json`), 'nothing recorded');

    const standing = planLabTopology((await loadConfig(examplePath)).config, standingName);
    await labUp(runner, standing);
    const demo = await cli('lab', 'demo', '--name', standingName, '--config', path);
    t.is(demo.code, 2, demo.stdout);
    t.deepEqual((await listLabNamespaces(runner, standingName)).sort(), [...standing.namespaces].sort(), 'the lab that stood still stands');

    await runner.run(['ip', 'netns', 'del', standing.vlans[1]!.client.namespace]);
    const check = await cli('lab', 'check', '--name', standingName);
    t.is(check.code, 1);
    // The way back names this lab: `lab up` without --name builds the demo lab, not this one.
    t.is(check.stderr, `vlan-gateway: lab ${standingName} has no ${standing.vlans[1]!.client.namespace}, which ${examplePath} needs: it was built from another config, `
      + `or they were removed; rebuild it: vlan-gateway lab down --name ${standingName}, then vlan-gateway lab up --name ${standingName} --config ${examplePath}\n`);
  } finally {
    await labDown(runner, standingName);
    await rm(dir, { recursive: true, force: true });
  }
});

// `lab check --config` with a config naming a host the lab's clients do not hold (a port forward to 192.168.20.50 on
// the example's lab) failed half-way through its probes with "agent in vgwlab-…-c20: error udp/192.168.20.50:10000
// EADDRNOTAVAIL", exit 1: nothing said that the lab was built from another config, or how to build one that fits.
kernel(`lab check with a config naming hosts the lab was not built with says which, and how to rebuild it${NEEDS_ROOT}`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-lab-hosts-'));
  try {
    const path = join(dir, 'more-hosts.yaml');
    await writeFile(path, `${await readFile(examplePath, 'utf8')}  - {proto: udp, port: "10000-10100", to: 192.168.20.50}
forwarding:
  rules:
    - {from: 192.168.10.0/28, to: lab, action: drop}
`.replace(/forwarding:\n {2}default: accept\n/, ''));
    await labUp(runner, planLabTopology((await loadConfig(examplePath)).config, standingName));
    const check = await cli('lab', 'check', '--name', standingName, '--config', path);
    t.is(check.code, 1, check.stdout);
    t.is(check.stderr, `vlan-gateway: lab ${standingName} has no 192.168.10.3/24 in vgwlab-${standingName}-c10, 192.168.20.50/24 in vgwlab-${standingName}-c20, `
      + `which ${path} needs: it was built from another config, or they were removed; `
      + `rebuild it: vlan-gateway lab down --name ${standingName}, then vlan-gateway lab up --name ${standingName} --config ${path}\n`);
  } finally {
    await labDown(runner, standingName);
    await rm(dir, { recursive: true, force: true });
  }
});

// A Ctrl-C while lab up built ended the process at once, leaving a half-built lab behind.
kernel(`a SIGINT during lab up removes what it had built, and the process ends with 130${NEEDS_ROOT}`, async (t) => {
  const child = execa(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../../src/main.ts', import.meta.url)), 'lab', 'up', '--name', signalName], { reject: false });
  const deadline = Date.now() + 20_000;
  while ((await listLabNamespaces(runner, signalName)).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.true(Date.now() < deadline, 'lab up started building');
  child.kill('SIGINT');
  const result = await child;
  t.is(result.exitCode, 130, String(result.stderr));
  t.regex(String(result.stderr), /lab up stopped by SIGINT; what it had built is removed/);
  t.deepEqual(await listLabNamespaces(runner, signalName), []);
  t.false(existsSync(`/run/vgwlab/${signalName}.json`));
});

/**
 * `lab up` from source in a child process, and the name of its router namespace, once that exists: the build goes
 * on for dozens of commands after it (every namespace is added first), so a test can take a lock on it before
 * `lab up` comes to apply there.
 */
async function labUpChild(labName: string) {
  const router = planLabTopology((await loadConfig(examplePath)).config, labName).router;
  const child = execa(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../../src/main.ts', import.meta.url)), 'lab', 'up', '--name', labName], { reject: false });
  let stderr = '';
  child.stderr?.on('data', (chunk) => (stderr += String(chunk)));
  // `ip netns add` makes the file, then mounts the namespace on it: until then its inode, which names the locks, is
  // the file's, not the namespace's.
  const nsfs = statSync('/proc/self/ns/net').dev;
  const mounted = () => existsSync(`/run/netns/${router}`) && statSync(`/run/netns/${router}`).dev === nsfs;
  const deadline = Date.now() + 20_000;
  while (!mounted() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  return { child, router, stderr: () => stderr, started: Date.now() < deadline };
}

const ourChains = async (ns: string) => (await runner.run(['ip', 'netns', 'exec', ns, 'iptables-save'])).stdout.split('\n').filter((l) => /^:VGW-/.test(l));

// lab up applied in its router without the lock apply takes: an apply (or a supervisor's start) on the same
// namespace at the same time could write beside it.
kernel(`lab up waits for an apply writing in its router namespace, and applies once it is done${NEEDS_ROOT}`, async (t) => {
  const up = await labUpChild(lockName);
  t.true(up.started, 'lab up made its router namespace');
  const lock = await WriteLock.wait(up.router, { timeoutMs: 5000, onWait: () => undefined });
  try {
    t.deepEqual(await ourChains(up.router), [], 'lab up has not applied before the lock was taken');
    const deadline = Date.now() + 30_000;
    const waiting = new RegExp(`waiting for another vlan-gateway apply or down \\(pid ${process.pid}\\) to finish with network namespace ${up.router}`);
    while (!waiting.test(up.stderr()) && up.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    t.regex(up.stderr(), waiting, `lab up says it waits (exit ${up.child.exitCode ?? 'not yet'})`);
    await new Promise((r) => setTimeout(r, 300));
    t.deepEqual(await ourChains(up.router), [], 'and writes nothing while the lock is held');
  } finally {
    await lock.release();
  }
  const result = await up.child;
  t.is(result.exitCode, 0, String(result.stderr));
  t.true((await ourChains(up.router)).includes(':VGW-FORWARD - [0:0]'), 'it applied once the lock was let go');
  await labDown(runner, lockName);
});

// A Ctrl-C once the build was done (while lab up applied, or waited for another apply to finish with its router)
// ended the process at once, saying nothing, and left the lab built without its config.
kernel(`a SIGINT while lab up waits to apply removes the lab it built, at once, and the process ends with 130${NEEDS_ROOT}`, async (t) => {
  const up = await labUpChild(stoppedName);
  t.true(up.started, 'lab up made its router namespace');
  const lock = await WriteLock.wait(up.router, { timeoutMs: 5000, onWait: () => undefined });
  try {
    const deadline = Date.now() + 30_000;
    while (!/waiting for another vlan-gateway apply or down/.test(up.stderr()) && up.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    t.regex(up.stderr(), /waiting for another vlan-gateway apply or down/, `lab up waits to apply (exit ${up.child.exitCode ?? 'not yet'})`);
    up.child.kill('SIGINT');
    const result = await up.child;
    t.is(result.exitCode, 130, String(result.stderr));
    t.regex(String(result.stderr), /lab up stopped by SIGINT; what it had built is removed$/);
    t.notRegex(String(result.stdout), /is built, but the config did not apply/);
  } finally {
    await lock.release();
  }
  t.deepEqual(await listLabNamespaces(runner, stoppedName), [], 'nothing of the lab stands');
  t.false(existsSync(`/run/vgwlab/${stoppedName}.json`), 'nor its record');
});

kernel(`lab up refuses to apply in a router namespace a supervisor manages, as apply does${NEEDS_ROOT}`, async (t) => {
  const up = await labUpChild(besideName);
  t.true(up.started, 'lab up made its router namespace');
  const supervisor = await InstanceLock.take(up.router);
  try {
    const result = await up.child;
    t.is(result.exitCode, 1, String(result.stderr));
    t.regex(String(result.stderr), new RegExp(`vlan-gateway run \\(pid ${process.pid}\\) manages network namespace ${up.router} and would undo this apply at its next check`));
    t.deepEqual(await ourChains(up.router), [], 'nothing was applied');
  } finally {
    await supervisor.release();
    await labDown(runner, besideName);
  }
});
