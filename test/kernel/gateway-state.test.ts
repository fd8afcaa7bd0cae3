/**
 * Kernel tier, state: what `vlan-gateway plan / apply / down` (the CLI, as a subprocess) leave in a router
 * namespace that, like a container's, already holds Docker's embedded-DNS chains in its nat table (nft backend).
 *
 * In order, on one lab: plan before the first apply reports changes (exit 2); the first apply converges and
 * leaves Docker's chains byte-identical, counters included (and Docker's DNS still answers); a second apply changes
 * nothing (no restore: packet counters keep their values) and plan exits 0; invalid configs exit 2 and change
 * nothing; `down` leaves what was there before the first apply, exactly as asserted (Docker's counters included;
 * ip_forward off again: the apply had switched it on; the default route stays); a fresh, empty namespace (the
 * container restart) converges with one apply; and a namespace that forwarded before the apply still forwards after
 * down.
 */
import test from 'ava';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../src/config/schema.js';
import { inNamespace } from '../../src/exec/runner.js';
import { labCheck, labDown, labUp, runProbe, startAgent, type LabTopology } from '../../src/lab/index.js';
import { tablesAfter } from '../../src/plan/after.js';
import { tablesInSync } from '../../src/plan/diff.js';
import { knownSetsAfter, reconcileOnce } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { tableShape } from '../helpers/tables.js';
import {
  addDockerDnsChains, buildLab, cli, dockerLines, EMPTY_NFT_FILTER, exampleDocument, FIXTURES, readState, recording,
  removeScratch, planCache, runner, save, settledState, writeConfig, writeYaml, type NamespaceState,
} from './gateway-harness.js';
import { tearDownAlways } from '../helpers/teardown.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('s');

let topology: LabTopology;
let router: string;
let example: { path: string; config: Config };
let example0: Record<string, unknown>;
/** The router namespace as the lab (and "Docker") left it, before the product ever ran. */
let pristine: NamespaceState;

test.before(async () => {
  if (!isRoot()) return;
  example0 = await exampleDocument();
  example = await writeConfig('example', example0);
  topology = await buildLab(example.config, name);
  router = topology.router;
  await addDockerDnsChains(router);
  pristine = await readState(router);
});

tearDownAlways('remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  await removeScratch();
});

const DOCKER_FIXTURE_LINES = [
  ':DOCKER_OUTPUT - [0:0]',
  ':DOCKER_POSTROUTING - [0:0]',
  '-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT',
  '-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING',
  '-A DOCKER_OUTPUT -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:40000',
  '-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:50000',
  '-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p tcp -m tcp --sport 40000 -j SNAT --to-source :53',
  '-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p udp -m udp --sport 50000 -j SNAT --to-source :53',
];

/** Docker's embedded DNS, for real: 127.0.0.11:53 is DNATed to the resolver's ports (here: agents on them). */
async function dockerDnsAnswers(): Promise<string[]> {
  const agent = await startAgent(runner, router, [
    { proto: 'udp', address: '127.0.0.11', port: 50000 },
    { proto: 'tcp', address: '127.0.0.11', port: 40000 },
  ], 30);
  try {
    const udp = await runProbe(runner, { namespace: router, kind: 'udp', target: '127.0.0.11', port: 53 });
    const tcp = await runProbe(runner, { namespace: router, kind: 'tcp', target: '127.0.0.11', port: 53 });
    return [udp, tcp].map((o) => o.reply?.local ?? o.detail);
  } finally {
    await agent.stop();
  }
}

kernel(`the fixture's Docker chains are in place (nft) and Docker's DNS answers${NEEDS_ROOT}`, async (t) => {
  t.deepEqual(dockerLines(pristine.nft), DOCKER_FIXTURE_LINES);
  t.is(pristine.legacy, '');
  t.deepEqual(await dockerDnsAnswers(), ['127.0.0.11:50000', '127.0.0.11:40000']);
});

kernel(`before the first apply, plan --detailed-exitcode exits 2, lists the changes and changes nothing${NEEDS_ROOT}`, async (t) => {
  const plan = await cli('plan', '--detailed-exitcode', '--netns', router, '--config', example.path);
  t.is(plan.code, 2, plan.stderr);
  t.regex(plan.stdout, /^vlan office \(id 10, 192\.168\.10\.0\/24\): on eth2$/m);
  t.regex(plan.stdout, /^\+ address 192\.168\.10\.1\/24 on eth2 \(vlan office\)$/m);
  t.regex(plan.stdout, /^ {4}\+ jump FORWARD -> VGW-FORWARD$/m);
  t.regex(plan.stdout, /^~ sysctl net\.ipv4\.ip_forward: 0 -> 1$/m);
  t.regex(plan.stdout, /^\d+ changes pending\.$/m);
  t.deepEqual(await readState(router), pristine);
});

/** Docker's lines of the nat table with their counters (iptables-nft-save -c): a chain of Docker's flushed and
 *  written again with the same rules shows only here, once lookups have been counted in it. */
const countedDockerLines = async () => dockerLines(await save(router, 'nft', '-c', '-t', 'nat'));
const COUNTED_DNS = /^\[[1-9]\d*:\d+\] -A DOCKER_OUTPUT -d 127\.0\.0\.11\/32 -p udp /m;

kernel(`the first apply converges, and Docker's DNS chains are byte-identical (counters included) and still answer${NEEDS_ROOT}`, async (t) => {
  t.deepEqual(await dockerDnsAnswers(), ['127.0.0.11:50000', '127.0.0.11:40000'], 'lookups first, counted in Docker\'s chains');
  const counted = await countedDockerLines();
  t.regex(counted.join('\n'), COUNTED_DNS);

  const applied = await cli('apply', '--netns', router, '--config', example.path);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /changes applied in \d+ ms\./);

  t.deepEqual(await countedDockerLines(), counted, 'Docker\'s chains, rules and counters as before the apply');
  const nat = await save(router, 'nft', '-t', 'nat');
  t.deepEqual(dockerLines(nat), DOCKER_FIXTURE_LINES);
  // Our hooks are one jump each, inserted first; Docker's jump stays where it was. Each remembers that this apply
  // switched ip_forward on (the lab's router starts with it off).
  t.regex(nat, /^-A POSTROUTING -m comment --comment "vgw:hook-fwd-was-0" -j VGW-POSTROUTING\n-A POSTROUTING -d 127\.0\.0\.11\/32 -j DOCKER_POSTROUTING$/m);
  t.regex(await save(router, 'nft', '-t', 'filter'), /^-A FORWARD -m comment --comment "vgw:hook-fwd-was-0" -j VGW-FORWARD$/m);
  t.deepEqual(await dockerDnsAnswers(), ['127.0.0.11:50000', '127.0.0.11:40000']);
});

kernel(`a second apply changes nothing: "No changes", no restore (counters keep their values), plan exits 0${NEEDS_ROOT}`, async (t) => {
  const traffic = await labCheck(runner, topology, example.config);
  t.true(traffic.ok, 'the applied router routes as configured');

  const before = await settledState(router);
  const counted = before.nft.split('\n').filter((line) => /^\[[1-9]\d*:\d+\] -A VGW-/.test(line));
  t.true(counted.length >= 4, `our rules counted the traffic:\n${counted.join('\n')}`);

  // A new process, planning from the state the runs before it rendered and left in the plan cache.
  t.is((await readdir(await planCache())).filter((f) => /^desired-.*\.json$/.test(f)).length, 1);
  const again = await cli('apply', '--netns', router, '--config', example.path);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /^No changes: the namespace is in sync\.$/m);
  t.deepEqual(await readState(router, true), before, 'iptables-save -c, ipset counters, addresses, routes, sysctl unchanged');

  // The same pass in-process, recording every command: reads only.
  const recorder = recording(runner);
  const { plan } = await reconcileOnce(inNamespace(recorder.runner, router), example.config, await loadTemplates());
  t.deepEqual(plan.steps, []);
  const commands = recorder.commands.map((argv) => argv.slice(4).join(' ')); // drop "ip netns exec NS"
  const reads = /^(ip -json |sysctl -n |iptables-(nft|legacy)-save |ipset save$|cat \/proc\/)/;
  t.deepEqual(commands.filter((c) => !reads.test(c)), [], `only reads ran:\n${commands.join('\n')}`);
  t.true(commands.includes('iptables-nft-save -c'));

  // As a supervisor's later pass: what its last pass left in the sets is known, and the real `ipset list -t`
  // shows every count as it was, so no member is read.
  const later = recording(runner);
  const second = await reconcileOnce(inNamespace(later.runner, router), example.config, await loadTemplates(), {
    backend: 'nft', memory: { knownSets: knownSetsAfter(plan) },
  });
  t.deepEqual(second.plan.steps, []);
  const laterCommands = later.commands.map((argv) => argv.slice(4).join(' '));
  t.deepEqual(laterCommands.filter((c) => c.startsWith('ipset')), ['ipset list -t'], laterCommands.join('\n'));

  // And while the stats collector finds the tables as planned (its check holds on what the kernel prints back),
  // a later pass reads no table at all.
  t.true(tablesInSync(plan.desired, second.facts.tables), 'the collector\'s check holds on the real iptables-save');
  const known = { backend: second.facts.backend, tables: second.facts.tables };
  const quiet = recording(runner);
  const third = await reconcileOnce(inNamespace(quiet.runner, router), example.config, await loadTemplates(), {
    backend: 'nft', memory: { knownSets: knownSetsAfter(plan), knownTables: known },
  });
  t.deepEqual(third.plan.steps, []);
  const quietCommands = quiet.commands.map((argv) => argv.slice(4).join(' '));
  t.deepEqual(quietCommands.filter((c) => /^iptables/.test(c)), [], quietCommands.join('\n'));

  // Drift in a table is the collector's to find (the pass above would not look): its check fails on the next
  // read, and the pass it asks for reads the tables and repairs them.
  await runner.run(['ip', 'netns', 'exec', router, 'iptables-nft', '-F', 'VGW-FROM-20']);
  const drifted = await reconcileOnce(inNamespace(runner, router), example.config, await loadTemplates(), { backend: 'nft', dryRun: true });
  t.false(tablesInSync(plan.desired, drifted.facts.tables));
  const repaired = await reconcileOnce(inNamespace(runner, router), example.config, await loadTemplates(), { backend: 'nft' });
  t.deepEqual(repaired.plan.steps.map((s) => (s.kind === 'table' ? s.chains.map((c) => c.chain) : s.kind)), [['VGW-FROM-20']]);
  const after = await reconcileOnce(inNamespace(runner, router), example.config, await loadTemplates(), { backend: 'nft', dryRun: true });
  t.true(tablesInSync(plan.desired, after.facts.tables));
  // What the repairing pass works out it left (a supervisor's known tables) is what the kernel prints back.
  t.deepEqual(tableShape(tablesAfter(repaired.facts.tables, repaired.plan)), tableShape(after.facts.tables));

  const plan0 = await cli('plan', '--detailed-exitcode', '--netns', router, '--config', example.path);
  t.is(plan0.code, 0, plan0.stderr);
  t.regex(plan0.stdout, /No changes: the namespace is in sync\./);

  // The CLI plans from its plan cache here (same inputs as every run before): the cache stands in for the
  // render only, so the drifted chain is still found in the kernel and rewritten.
  const cacheFiles = async () => {
    const dir = await planCache();
    const files = (await readdir(dir)).filter((f) => f.startsWith('desired-')).sort();
    return Promise.all(files.map(async (f) => `${f} ${(await stat(join(dir, f))).mtimeMs}`));
  };
  const cached = await cacheFiles();
  await runner.run(['ip', 'netns', 'exec', router, 'iptables-nft', '-F', 'VGW-FROM-20']);
  const planDrift = await cli('plan', '--detailed-exitcode', '--netns', router, '--config', example.path);
  t.is(planDrift.code, 2, planDrift.stderr);
  t.regex(planDrift.stdout, /VGW-FROM-20/);
  const repair = await cli('apply', '--netns', router, '--config', example.path);
  t.is(repair.code, 0, repair.stderr);
  t.regex(await save(router, 'nft', '-t', 'filter'), /^-A VGW-FROM-20 /m);
  t.is((await cli('plan', '--detailed-exitcode', '--netns', router, '--config', example.path)).code, 0);
  t.deepEqual(await cacheFiles(), cached, 'no state was rendered (and written) anew');
});

const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const fixtures = literal(FIXTURES);

/** Each: a config that must be refused (exit 2) with this stderr, before anything is touched. */
const INVALID: Array<{ title: string; document: () => Record<string, unknown>; stderr: (path: string) => RegExp }> = [
  {
    title: 'a VLAN gateway outside its subnet',
    document: () => ({
      ...example0,
      vlans: [{ name: 'office', id: 10, subnet: '192.168.10.0/24', gateway: '192.168.30.1' }, (example0.vlans as unknown[])[1]],
    }),
    stderr: (path) => new RegExp(`^vlan-gateway: invalid config: ${path}: 1 problem:\n {2}vlans\\[0\\]\\.gateway: 192\\.168\\.30\\.1 is outside 192\\.168\\.10\\.0/24 \\(line \\d+\\)$`, 'm'),
  },
  {
    title: 'a user template using a value the model does not have',
    document: () => ({ ...example0, rules: { dir: join(FIXTURES, 'rules-undefined-value') } }),
    stderr: () => new RegExp(`^vlan-gateway: invalid rule template: ${fixtures}/rules-undefined-value/nat/postrouting\\.hbs: "publicAddress" is not defined \\(template line 2, column \\d+\\)$`, 'm'),
  },
  {
    title: 'a user template jumping to a chain declared nowhere',
    document: () => ({ ...example0, rules: { dir: join(FIXTURES, 'rules-unknown-chain') } }),
    stderr: () => new RegExp(`^vlan-gateway: invalid rules \\(nothing was applied\\):\nfilter VGW-USER-FORWARD rule 1 \\(from ${fixtures}/rules-unknown-chain/filter/forward\\.hbs line 2\\) jumps to VGW-TELNET, which is not a chain declared in the filter table$`, 'm'),
  },
  {
    title: 'a user template writing a command instead of a rule body',
    document: () => ({ ...example0, rules: { dir: join(FIXTURES, 'rules-command') } }),
    stderr: () => new RegExp(`^vlan-gateway: invalid rule template: ${fixtures}/rules-command/filter/forward\\.hbs line 2: "-F FORWARD -j ACCEPT" uses -F: templates write rule bodies, the planner writes commands$`, 'm'),
  },
];

for (const [index, invalid] of INVALID.entries()) {
  kernel(`invalid config (${invalid.title}): apply exits 2, names the problem, and every table, address, route, set and sysctl is byte-identical${NEEDS_ROOT}`, async (t) => {
    const path = await writeYaml(`invalid-${index}`, invalid.document());
    const before = await readState(router, true);
    const applied = await cli('apply', '--netns', router, '--config', path);
    t.is(applied.code, 2, applied.stdout);
    t.regex(applied.stderr, invalid.stderr(literal(path)));
    t.is(applied.stdout, '');
    t.deepEqual(await readState(router, true), before);
    t.true(before.nft.includes('VGW-FORWARD'), 'there was state to lose');
  });
}

kernel(`down leaves what was there before the first apply (Docker's chains included, with their counters; ip_forward off again); the default route stays${NEEDS_ROOT}`, async (t) => {
  t.deepEqual(await dockerDnsAnswers(), ['127.0.0.11:50000', '127.0.0.11:40000'], 'lookups first, counted in Docker\'s chains');
  const counted = await countedDockerLines();
  t.regex(counted.join('\n'), COUNTED_DNS);

  const down = await cli('down', '--netns', router, '--config', example.path);
  t.is(down.code, 0, down.stderr);
  t.deepEqual(await countedDockerLines(), counted, 'Docker\'s chains, rules and counters as before the down');
  t.regex(down.stdout, /^- address 192\.168\.10\.1\/24 on eth2 \(vlan office\)$/m);

  const after = await readState(router);
  t.is(after.addresses, pristine.addresses, 'the gateway addresses are gone; Docker\'s own addresses stay');
  t.is(after.ipsets, pristine.ipsets, 'the accounting set is destroyed');
  t.is(after.legacy, pristine.legacy);
  t.deepEqual(dockerLines(after.nft), DOCKER_FIXTURE_LINES);
  // iptables-nft created an `ip filter` table for our chains; emptied, it remains with its built-in chains
  // (policy ACCEPT, no rules). Everything else in the nft rule set is as before.
  t.is(after.nft, `${EMPTY_NFT_FILTER}\n${pristine.nft}`);
  // As documented: the default route the apply set stays.
  t.is(after.routes, `default via 203.0.113.1 dev eth0 proto 122 \n${pristine.routes}`);
  // The apply switched ip_forward on (its FORWARD jump said so), so down switched it off again.
  t.is(pristine.forwarding.trim(), 'net.ipv4.ip_forward = 0');
  t.is(after.forwarding.trim(), 'net.ipv4.ip_forward = 0');
  t.regex(down.stdout, /^~ sysctl net\.ipv4\.ip_forward: 1 -> 0$/m);

  const again = await cli('plan', '--down', '--detailed-exitcode', '--netns', router, '--config', example.path);
  t.is(again.code, 0, `down is idempotent: ${again.stdout}`);
});

// Without its FORWARD policy and with ip_forward still 1, the namespace would be an open router: anything a VLAN host
// sends to the router's MAC forwarded to every other VLAN (FORWARD policy ACCEPT), against DESIGN §4 "Fail closed".
// Shown with the clients routing via the router's own (Docker) addresses, so no ARP cache is involved.
kernel(`after down, the namespace no longer forwards between the VLANs (fail closed)${NEEDS_ROOT}`, async (t) => {
  const [office, lab] = [topology.vlans.find((v) => v.name === 'office')!, topology.vlans.find((v) => v.name === 'lab')!];
  await runner.run(['ip', '-n', office.client.namespace, 'route', 'replace', lab.subnet, 'via', office.routerAddress]);
  await runner.run(['ip', '-n', lab.client.namespace, 'route', 'replace', office.subnet, 'via', lab.routerAddress]);
  t.false((await save(router, 'nft')).includes('VGW-'), 'down has run: no chain of ours is left');
  const ping = await runProbe(runner, { namespace: office.client.namespace, kind: 'ping', target: lab.client.address, timeoutMs: 1000 });
  t.is(ping.actual, 'blocked', `office → lab through the router after down: ${ping.detail}`);
});

kernel(`the container restart: a fresh, empty namespace converges with one apply, then plan says in sync${NEEDS_ROOT}`, async (t) => {
  await labDown(runner, name);
  await labUp(runner, topology);
  await addDockerDnsChains(router);
  const fresh = await readState(router);
  t.false(fresh.nft.includes('VGW-'));
  t.is(fresh.forwarding.trim(), 'net.ipv4.ip_forward = 0');

  const applied = await cli('apply', '--netns', router, '--config', example.path);
  t.is(applied.code, 0, applied.stderr);
  const plan = await cli('plan', '--detailed-exitcode', '--netns', router, '--config', example.path);
  t.is(plan.code, 0, plan.stdout);
  t.regex(plan.stdout, /No changes: the namespace is in sync\./);

  const traffic = await labCheck(runner, topology, example.config);
  t.true(traffic.ok, 'routes as configured after one apply');
  t.deepEqual(dockerLines(await save(router, 'nft')), DOCKER_FIXTURE_LINES);
});

kernel(`a namespace that forwarded before the first apply (docker run --sysctl net.ipv4.ip_forward=1) still forwards after down${NEEDS_ROOT}`, async (t) => {
  // The restarted container above was applied with forwarding off: down switches it off again.
  const first = await cli('down', '--netns', router, '--config', example.path);
  t.is(first.code, 0, first.stderr);
  t.is((await readState(router)).forwarding.trim(), 'net.ipv4.ip_forward = 0');

  await runner.run(['ip', 'netns', 'exec', router, 'sysctl', '-w', 'net.ipv4.ip_forward=1']);
  const before = await readState(router);
  const applied = await cli('apply', '--netns', router, '--config', example.path);
  t.is(applied.code, 0, applied.stderr);
  t.notRegex(applied.stdout, /sysctl/, 'forwarding was on: the apply does not touch it');
  t.regex(await save(router, 'nft', '-t', 'filter'), /^-A FORWARD -m comment --comment "vgw:hook" -j VGW-FORWARD$/m, 'a plain jump: no mark');

  const down = await cli('down', '--netns', router, '--config', example.path);
  t.is(down.code, 0, down.stderr);
  t.notRegex(down.stdout, /sysctl/);
  t.deepEqual(await readState(router), before, 'everything as before the apply, ip_forward still 1');
});
