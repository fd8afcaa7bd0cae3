/**
 * Kernel tier, how apply writes: fail closed (the FORWARD policy is in place before ip_forward goes on, down
 * switches it off again before the policy goes, and a table the kernel rejects rolls back what was written before
 * it; the error quotes the rejected line), the iptables backend the namespace's rules
 * live in (legacy when Docker's chains are there, refusal when our chains are in both; a legacy restore waits for
 * the xtables lock, but not for ever), and a VLAN NIC that
 * Docker attaches after the first apply (waiting, then bound by the next apply).
 *
 * Labs, one per concern, each built by the product's lab builder: `f` (fail closed), `o` (fail closed where
 * forwarding is on before the first apply), `a` (fail closed when a VLAN is added), `b` (backend), `h` (hot-plug),
 * `p` (a legacy FORWARD policy). The CLI runs as a subprocess; the plan object comes from reconcileOnce where the test needs it.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../src/config/schema.js';
import { inNamespace } from '../../src/exec/runner.js';
import { labCheck, labDown, planLabTopology, runProbe, startAgent, type LabTopology } from '../../src/lab/index.js';
import { XTABLES_WAIT_SECONDS } from '../../src/observe/read.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { namespacePids, sleep, waitFor } from '../helpers/supervisor.js';
import {
  addDockerDnsChains, buildLab, cli, cliWatchingStderr, cliWithEnv, dockerLines, EMPTY_NFT_FILTER, exampleDocument, FIXTURES, inNs,
  readState, recording, removeScratch, REPO, runner, save, scratchDir, settledState, writeConfig,
} from './gateway-harness.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { holdXtablesLock } from '../helpers/xtables-lock.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const names = { failClosed: uniqueLabName('f'), backend: uniqueLabName('b'), hotPlug: uniqueLabName('h'), policy: uniqueLabName('p'), forwardingOn: uniqueLabName('o'), addedVlan: uniqueLabName('a') };

type File = { path: string; config: Config };
let example: File;
let rejectedByKernel: File; // nat/postrouting.hbs: TCPMSS on a UDP rule (the kernel refuses it at commit)
let rejectedByParser: File; // default drop (filter changes) + nat/postrouting.hbs: SNAT to 999.1.1.1
let rejectedAfterFilter: File; // default drop (filter changes) + the kernel-rejects nat/postrouting.hbs
let rejectedWithoutLab: File; // the example without VLAN lab (its accounting members go) + the kernel-rejects nat/postrouting.hbs
let withIot: File; // the example plus VLAN 30, whose NIC is not attached yet
let dropByDefault: File; // the example with forwarding.default: drop (a change to the filter table)
let offLinkGateway: File; // the example with uplink.gateway on no network of the uplink NIC (a typo)
let noNat: File; // the example with uplink.nat: none (a change to the nat table alone)
let withUserRules: File; // the example with test/fixtures/rules.d (rules iptables accepts)
let iotIsolated: File; // the example plus VLAN 30, and a rule dropping office → iot (default accept)
const labs: Partial<Record<keyof typeof names, LabTopology>> = {};

test.before(async () => {
  if (!isRoot()) return;
  const doc = await exampleDocument();
  example = await writeConfig('example', doc);
  rejectedByKernel = await writeConfig('kernel-rejects', { ...doc, rules: { dir: join(FIXTURES, 'rules-kernel-rejects') } });
  rejectedByParser = await writeConfig('bad-address', {
    ...doc, forwarding: { default: 'drop' }, rules: { dir: join(FIXTURES, 'rules-bad-address') },
  });
  rejectedAfterFilter = await writeConfig('kernel-rejects-drop', {
    ...doc, forwarding: { default: 'drop' }, rules: { dir: join(FIXTURES, 'rules-kernel-rejects') },
  });
  rejectedWithoutLab = await writeConfig('kernel-rejects-no-lab', {
    ...doc, vlans: (doc.vlans as { name: string }[]).filter((v) => v.name !== 'lab'), rules: { dir: join(FIXTURES, 'rules-kernel-rejects') },
  });
  dropByDefault = await writeConfig('drop-by-default', { ...doc, forwarding: { default: 'drop' } });
  noNat = await writeConfig('no-nat', { ...doc, uplink: { ...(doc.uplink as object), nat: 'none' } });
  withUserRules = await writeConfig('user-rules', { ...doc, rules: { dir: join(REPO, 'test', 'fixtures', 'rules.d') } });
  offLinkGateway = await writeConfig('off-link-gateway', { ...doc, uplink: { ...(doc.uplink as object), gateway: '203.0.114.1' } });
  withIot = await writeConfig('with-iot', {
    ...doc, vlans: [...(doc.vlans as unknown[]), { name: 'iot', id: 30, subnet: '192.168.30.0/24', gateway: '192.168.30.1' }],
  });
  iotIsolated = await writeConfig('iot-isolated', {
    ...doc,
    vlans: [...(doc.vlans as unknown[]), { name: 'iot', id: 30, subnet: '192.168.30.0/24', gateway: '192.168.30.1' }],
    forwarding: { default: 'accept', rules: [{ from: 'office', to: 'iot', action: 'drop' }] },
  });
  const [f, b, h, p, o, a] = await Promise.all([
    ...[names.failClosed, names.backend, names.hotPlug, names.policy, names.forwardingOn].map((n) => buildLab(example.config, n)),
    buildLab(iotIsolated.config, names.addedVlan),
  ]);
  Object.assign(labs, { failClosed: f, backend: b, hotPlug: h, policy: p, forwardingOn: o, addedVlan: a });
});

tearDownAlways('remove the labs and the scratch configs', async () => {
  if (!isRoot()) return;
  // The bare namespace of the --listen test (removed by it, but not when the file is interrupted).
  await runner.run(['ip', 'netns', 'del', `vgwk-bind-${process.pid}`], { allowFailure: true });
  for (const name of Object.values(names)) await labDown(runner, name);
  await removeScratch();
});

const apply = (router: string, file: File) => cli('apply', '--netns', router, '--config', file.path);
const plan = (router: string, file: File) => cli('plan', '--detailed-exitcode', '--netns', router, '--config', file.path);
/**
 * Our FORWARD jump as the apply that switches ip_forward on writes it (every lab router starts with forwarding off):
 * the comment's mark is how `down` knows to switch forwarding off again.
 */
const FORWARD_HOOK = '-A FORWARD -m comment --comment "vgw:hook-fwd-was-0" -j VGW-FORWARD';

// ---- fail closed ----

kernel(`fail closed, the plan: the filter and nat tables first, ip_forward last${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  const { plan: p } = await reconcileOnce(inNamespace(runner, router), example.config, await loadTemplates(), { dryRun: true });
  const order = p.steps.map((s) => (s.kind === 'table' ? `table ${s.table}` : s.kind));
  t.log(order.join(' → '));
  t.true(order.includes('table filter') && order.includes('table nat'));
  t.true(order.indexOf('table filter') < order.indexOf('sysctl'), 'the FORWARD policy before ip_forward');
  t.true(order.indexOf('table nat') < order.indexOf('sysctl'), 'NAT before ip_forward');
  t.is(order.at(-1), 'sysctl', 'ip_forward is the very last step');
  t.like(p.steps.at(-1), { kind: 'sysctl', key: 'net.ipv4.ip_forward', value: '1', previous: '0' });
  t.is((await inNs(router, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(), '0', 'a dry run changes nothing');
});

// A set of the gateway's name it did not make (here without counters, as by hand) failed every apply in the kernel,
// and plan did not show why. Now nothing is written, and the error says which set and how to remove it.
kernel(`a VGW- ipset the gateway did not make stops apply and plan before anything is written, naming it and the way out${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  await inNs(router, 'ipset', 'create', 'VGW-SUBNETS', 'hash:net');
  try {
    const before = await readState(router, true);
    for (const result of [await apply(router, example), await plan(router, example)]) {
      t.is(result.code, 1, result.stdout);
      t.is(result.stderr, 'vlan-gateway: nothing was applied: ipset VGW-SUBNETS exists as hash:net without counters, not as the gateway makes it '
        + `(hash:net with counters): the gateway did not make it; remove it (ip netns exec ${router} ipset destroy VGW-SUBNETS) and apply again`);
    }
    t.deepEqual(await readState(router, true), before, 'nothing written');
  } finally {
    await inNs(router, 'ipset', 'destroy', 'VGW-SUBNETS');
  }
});

kernel(`fail closed, the first apply fails in nat: exit 1, the failing table and line named, the fresh namespace left as it was (ip_forward 0)${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  const before = await readState(router, true);
  t.is(before.nft, '', 'a fresh namespace: no rules at all');

  const applied = await apply(router, rejectedByKernel);
  t.is(applied.code, 1, applied.stdout);
  t.regex(applied.stderr, /^vlan-gateway: apply failed: applying the nat table failed: /m);
  t.regex(applied.stderr, /iptables-nft-restore .*\n?line \d+: RULE_\w+ failed/, 'the kernel\'s refusal and its payload line number');
  // That format ("line N: RULE_APPEND failed (…)") is read too: the refused rule is quoted with its neighbours.
  t.regex(applied.stderr, /^> +\d+ \| -A VGW-USER-POSTROUTING .*-j TCPMSS --clamp-mss-to-pmtu$/m);
  t.regex(applied.stderr, /\(the steps already done were rolled back\)$/m);

  const after = await readState(router, true);
  t.deepEqual({ ...after, nft: '' }, { ...before, nft: '' }, 'addresses, route, ipset, ip_forward and legacy rules as before');
  // The filter table was written and rolled back: our chains are gone; iptables-nft's empty table stays.
  t.is(after.nft, `${EMPTY_NFT_FILTER}\n`);
});

kernel(`fail closed, sampled: while apply runs, ip_forward is never 1 without the FORWARD jump; afterwards both are on${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  // Spins on ip_forward (a read of /proc, no process per sample); the moment it reads 1, looks for our jump.
  // Our jump is never removed by a successful apply, so "absent right after ip_forward read 1" proves it was
  // absent while forwarding was on. A restore takes milliseconds, so sampling rarely lands inside one: that
  // ip_forward=1 is not even started before every restore has exited is test/component/converge.test.ts's
  // "fail closed, in time".
  const sampler = runner.start(['ip', 'netns', 'exec', router, 'timeout', '60', 'sh', '-c', [
    'n=0; echo sampling',
    'while read f < /proc/sys/net/ipv4/ip_forward; [ "$f" = 0 ]; do n=$((n+1)); done',
    `if iptables-nft-save -t filter | grep -qF -- '${FORWARD_HOOK}'; then echo "closed after $n samples"; else echo "OPEN after $n samples"; fi`,
  ].join('\n')]);
  const lines: string[] = [];
  const started = new Promise<void>((resolve) => sampler.onLine((line) => {
    lines.push(line);
    if (line === 'sampling') resolve();
  }));
  try {
    await started;
    const applied = await apply(router, example);
    t.is(applied.code, 0, applied.stderr);
    await sampler.exited;
  } finally {
    await sampler.stop();
  }
  t.regex(lines.at(-1) ?? '', /^closed after \d+ samples$/);
  t.log(lines.at(-1));
  t.true((await save(router, 'nft', '-t', 'filter')).split('\n').includes(FORWARD_HOOK));
  t.is((await inNs(router, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(), '1');
});

/**
 * The fail-closed lab's router with the example applied (the test before leaves it so; alone, with --match, it is
 * applied here), after one ping office → lab: our rules and VGW-PAIRS-0 have counters that a rollback could lose.
 */
async function exampleWithCounters(t: ExecutionContext): Promise<string> {
  const lab = labs.failClosed!;
  if (!(await save(lab.router, 'nft', '-t', 'filter')).split('\n').includes(FORWARD_HOOK)) {
    t.is((await apply(lab.router, example)).code, 0, 'the example, applied');
  }
  const ping = await runProbe(runner, { namespace: lab.vlans[0]!.client.namespace, kind: 'ping', target: lab.vlans[1]!.client.address });
  t.is(ping.actual, 'pass', 'office → lab, counted');
  return lab.router;
}

kernel(`a nat table that fails after the filter table changed: exit 1, filter rolled back with its counters${NEEDS_ROOT}`, async (t) => {
  const router = await exampleWithCounters(t);

  // The failing config changes filter (default drop) beside nat: the filter table IS written, then undone. (Under
  // default drop the NIC sets are not used, so they would be destroyed after the tables: they are kept too.) The
  // nat rule passes iptables' parser (so `apply`'s own --test check), and the kernel refuses it at the commit.
  const { plan: p } = await reconcileOnce(inNamespace(runner, router), rejectedAfterFilter.config, await loadTemplates(rejectedAfterFilter.config.rules.dir), { dryRun: true });
  t.deepEqual(p.steps.map((s) => (s.kind === 'table' ? s.table : s.kind)), ['filter', 'nat', 'set-destroy']);

  const before = await settledState(router);
  t.regex(before.nft, /^\[[1-9]\d*:\d+\] -A VGW-FORWARD /m);
  const applied = await apply(router, rejectedAfterFilter);
  t.is(applied.code, 1, applied.stdout);
  t.regex(applied.stderr, /^vlan-gateway: apply failed: applying the nat table failed: /m);
  t.regex(applied.stderr, /line \d+: RULE_\w+ failed/);
  t.regex(applied.stderr, /\(the steps already done were rolled back\)$/m);
  t.deepEqual(await readState(router, true), before, 'iptables-save -c (both backends), addresses, routes, sets, ip_forward');
});

// The accounting members a failing apply deleted (a VLAN taken out of the config) were put back by a plain `add`:
// the per-pair totals that office → lab had counted started again from zero.
kernel(`a nat table that fails as a VLAN goes: its accounting members are put back with their counters${NEEDS_ROOT}`, async (t) => {
  const router = await exampleWithCounters(t);
  const before = await settledState(router);
  t.regex(before.ipsets, /^add VGW-PAIRS-0 192\.168\.10\.0\/24,\S+ packets [1-9]\d* bytes [1-9]\d*$/m);

  const applied = await apply(router, rejectedWithoutLab);
  t.is(applied.code, 1, applied.stdout);
  t.regex(applied.stderr, /^vlan-gateway: apply failed: applying the nat table failed: /m);
  t.regex(applied.stderr, /\(the steps already done were rolled back\)$/m);
  // A member deleted and added again may come back elsewhere in its set's hash order: its lines are compared.
  const sorted = (text: string) => text.split('\n').sort().join('\n');
  const after = await readState(router, true);
  t.is(sorted(after.ipsets), sorted(before.ipsets), 'every member with its counters');
  t.deepEqual({ ...after, ipsets: '' }, { ...before, ipsets: '' }, 'iptables-save -c (both backends), addresses, routes, ip_forward');
});

// The rollback of our `route replace default` used to put back "via the old gateway", or delete the default
// outright when the old one had no single gateway: a multipath or a device-only default was lost, and the namespace
// cut off. Beside a default of another metric, it left a second one behind.
kernel(`a failed apply puts the default route back exactly: a multipath one beside a metric-50 one, and a metric-50 one alone${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  const uplinkNic = labs.failClosed!.uplink.routerInterface;
  const routes = async () => (await runner.run(['ip', '-n', router, 'route', 'show', 'default'])).stdout;
  try {
    await runner.run(['ip', '-n', router, 'route', 'replace', 'default', 'proto', 'static',
      'nexthop', 'via', '203.0.113.1', 'dev', uplinkNic, 'weight', '2', 'nexthop', 'via', '203.0.113.254', 'dev', uplinkNic]);
    await runner.run(['ip', '-n', router, 'route', 'add', 'default', 'via', '203.0.113.254', 'dev', uplinkNic, 'metric', '50']);
    for (const variant of ['multipath and metric 50', 'metric 50 alone']) {
      const before = await readState(router, true);
      t.regex(before.routes, /^default metric 50|^default via 203\.0\.113\.254 dev \S+ metric 50/m);
      const { plan: p } = await reconcileOnce(inNamespace(runner, router), rejectedAfterFilter.config, await loadTemplates(rejectedAfterFilter.config.rules.dir), { dryRun: true });
      t.true(p.steps.some((s) => s.kind === 'route'), `${variant}: the route is part of the failing apply`);
      const applied = await apply(router, rejectedAfterFilter);
      t.is(applied.code, 1, applied.stdout);
      t.regex(applied.stderr, /\(the steps already done were rolled back\)$/m);
      t.is(await routes(), before.routes.split('\n').filter((l) => l.startsWith('default') || l.startsWith('\tnexthop')).join('\n') + '\n', variant);
      t.deepEqual(await readState(router, true), before, `${variant}: everything as before`);
      if (variant === 'multipath and metric 50') await runner.run(['ip', '-n', router, 'route', 'del', 'default', 'metric', '0']);
    }
  } finally {
    await runner.run(['ip', '-n', router, 'route', 'flush', 'exact', '0.0.0.0/0']).catch(() => undefined);
    await runner.run(['ip', '-n', router, 'route', 'replace', 'default', 'via', '203.0.113.1', 'dev', uplinkNic, 'proto', '122']);
  }
});

// A down the kernel refuses (a chain of the user's still jumps to one of ours) used to say "apply failed", and its
// rollback put our FORWARD jump back first, above a rule the user had put before it.
kernel(`a down that fails says so, and its rollback leaves every rule where it was: a user's rule above our jump stays above it${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  t.is((await apply(router, example)).code, 0);
  await inNs(router, 'iptables-nft', '-I', 'FORWARD', '1', '-s', '192.168.10.100', '-j', 'DROP');
  // A rule of the other backend that matches one of our sets: its destroy fails after both tables were written.
  await inNs(router, 'iptables-legacy', '-A', 'FORWARD', '-m', 'set', '--match-set', 'VGW-SUBNETS', 'src', '-j', 'ACCEPT');
  try {
    const before = await settledState(router);
    t.regex(before.nft, /^\[\d+:\d+\] -A FORWARD -s 192\.168\.10\.100\/32 -j DROP\n\[\d+:\d+\] -A FORWARD -m comment/m);
    const down = await cli('down', '--netns', router, '--config', example.path);
    t.is(down.code, 1, down.stdout);
    t.regex(down.stderr, /^vlan-gateway: down failed: removing ipset VGW-SUBNETS failed: ipset VGW-SUBNETS is still in use /m);
    t.regex(down.stderr, /\(the steps already done were rolled back\)$/m);
    t.deepEqual(await readState(router, true), before, 'the rules in their order (the user\'s DROP first), addresses, sets, ip_forward');
  } finally {
    await inNs(router, 'iptables-legacy', '-D', 'FORWARD', '-m', 'set', '--match-set', 'VGW-SUBNETS', 'src', '-j', 'ACCEPT');
    await inNs(router, 'iptables-nft', '-D', 'FORWARD', '-s', '192.168.10.100', '-j', 'DROP');
  }
});

// DESIGN §3: an apply error names the table, the failing line and the lines around it.
kernel(`an apply error quotes the failing rule line with its neighbours${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(labs.failClosed!.router, rejectedAfterFilter);
  t.is(applied.code, 1);
  t.regex(applied.stderr, /^> +\d+ \| -A VGW-USER-POSTROUTING .*-j TCPMSS --clamp-mss-to-pmtu$/m);
  t.regex(applied.stderr, /^ {2,}\d+ \| /m, 'with its neighbours');
});

// With --netns the command runs as `ip netns exec NS iptables-nft-restore …`: the error names the restore, not "ip".
kernel(`an apply error names the restore command that failed, not "ip"${NEEDS_ROOT}`, async (t) => {
  const applied = await apply(labs.failClosed!.router, rejectedAfterFilter);
  t.is(applied.code, 1);
  t.regex(applied.stderr, /applying the nat table failed: iptables-nft-restore failed \(exit \d+\)/);
});

// A rule iptables' parser refuses (SNAT to 999.1.1.1) is found before anything is written: an invalid config.
kernel(`apply: a user rule iptables cannot parse is an invalid config (exit 2) naming the rule and its template; nothing is written, counters kept${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  const before = await settledState(router);
  const applied = await apply(router, rejectedByParser);
  t.is(applied.code, 2, applied.stdout);
  t.is(applied.stderr, `vlan-gateway: invalid rules (nothing was applied):\nnat VGW-USER-POSTROUTING rule 1 (from ${join(FIXTURES, 'rules-bad-address')}/nat/postrouting.hbs): `
    + 'iptables refuses it: Bad IP address "999.1.1.1"');
  t.notRegex(applied.stderr, /rolled back/, 'refused before the first write, not undone after it');
  t.deepEqual(await readState(router, true), before, 'iptables-save -c (both backends), addresses, routes, sets, ip_forward');
});

kernel(`fail closed on the way out: down switches ip_forward off (the apply had switched it on) before it removes the FORWARD policy${NEEDS_ROOT}`, async (t) => {
  const router = labs.failClosed!.router;
  t.true((await save(router, 'nft', '-t', 'filter')).split('\n').includes(FORWARD_HOOK), 'the apply above switched forwarding on and said so');
  const recorder = recording(runner);
  const { plan: p } = await reconcileOnce(inNamespace(recorder.runner, router), example.config, await loadTemplates(), { mode: 'down' });
  t.like(p.steps.find((s) => s.kind === 'sysctl'), { key: 'net.ipv4.ip_forward', value: '0', previous: '1' });
  const writes = recorder.commands.map((argv) => argv.slice(4).join(' ')) // drop "ip netns exec NS"
    .filter((c) => c.startsWith('sysctl -w') || c.startsWith('iptables-nft-restore'));
  t.deepEqual(writes, ['sysctl -w net.ipv4.ip_forward=0', 'iptables-nft-restore --noflush --wait=10', 'iptables-nft-restore --noflush --wait=10']);
  t.is((await inNs(router, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(), '0');
  t.notRegex(await save(router, 'nft'), /VGW-|vgw:/);
});

// A container started with --sysctl net.ipv4.ip_forward=1 (as the README runs it) forwards before the first apply;
// what keeps its VLANs' hosts from routing through it is that their gateway address is not there yet. The apply
// added the addresses beside the table restores: while a restore waited for the xtables lock (or just ran), the
// hosts' gateway answered and forwarded everything, here office → lab under `forwarding.default: drop`.
kernel(`fail closed with forwarding already on: while the first apply's restores wait for the xtables lock, no VLAN host is routed${NEEDS_ROOT}`, async (t) => {
  const lab = labs.forwardingOn!;
  const router = lab.router;
  const [office, other] = [lab.vlans.find((v) => v.name === 'office')!, lab.vlans.find((v) => v.name === 'lab')!];
  await addDockerDnsChains(router, 'legacy'); // a legacy namespace: its restores take the xtables lock
  await inNs(router, 'sysctl', '-w', 'net.ipv4.ip_forward=1');
  const applied = await applyWhileLockHeld(router, dropByDefault.path, 'forwarding-on', async () => {
    const ping = await runProbe(runner, { namespace: office.client.namespace, kind: 'ping', target: other.client.address, timeoutMs: 1000 });
    t.is(ping.actual, 'blocked', `office → lab while no rule is written yet: ${ping.detail}`);
    t.notRegex(await inNs(router, 'ip', '-4', 'addr'), /inet 192\.168\.(10|20)\.1\//, 'no gateway address yet');
  });
  t.is(applied.code, 0, applied.stderr);
  t.regex(await inNs(router, 'ip', '-4', 'addr'), /inet 192\.168\.10\.1\/24 /, 'the gateway addresses, once the tables are written');
  const after = await runProbe(runner, { namespace: office.client.namespace, kind: 'ping', target: other.client.address, timeoutMs: 1000 });
  t.is(after.actual, 'blocked', `office → lab under default drop: ${after.detail}`);
  const internet = await runProbe(runner, { namespace: office.client.namespace, kind: 'ping', target: lab.uplink.internetHost, timeoutMs: 1000 });
  t.is(internet.actual, 'pass', `office → the Internet host through its gateway: ${internet.detail}`);
});

// With ipset and `default: accept`, a VLAN's chain accepts the new connections of the pairs without rules by set
// lookups (VGW-NICS-n, VGW-PAIRS-n). Adding a VLAN whose NIC Docker had attached already wrote that NIC into the
// sets before the filter restore: until the restore ran (here: while it waits for the xtables lock), the rules in
// force accepted office → iot, which the new config drops, and conntrack kept what got through.
kernel(`fail closed, a VLAN added under default accept: while the filter restore waits, its NIC is not yet let in by the old rules${NEEDS_ROOT}`, async (t) => {
  const lab = labs.addedVlan!;
  const router = lab.router;
  const [office, iot] = [lab.vlans.find((v) => v.name === 'office')!, lab.vlans.find((v) => v.name === 'iot')!];
  await addDockerDnsChains(router, 'legacy');
  t.is((await apply(router, example)).code, 0, 'office and lab; the iot NIC is there, not in the config');
  // The iot host answers through the router's own (Docker) address: its gateway address comes later.
  await runner.run(['ip', '-n', iot.client.namespace, 'route', 'replace', office.subnet, 'via', iot.routerAddress]);
  const applied = await applyWhileLockHeld(router, iotIsolated.path, 'added-vlan', async () => {
    const ping = await runProbe(runner, { namespace: office.client.namespace, kind: 'ping', target: iot.client.address, timeoutMs: 1000 });
    t.is(ping.actual, 'blocked', `office → iot while the old rules are in force: ${ping.detail}`);
  });
  t.is(applied.code, 0, applied.stderr);
  const after = await runProbe(runner, { namespace: office.client.namespace, kind: 'ping', target: iot.client.address, timeoutMs: 1000 });
  t.is(after.actual, 'blocked', `office → iot, dropped by the rule: ${after.detail}`);
  const traffic = await labCheck(runner, lab, iotIsolated.config);
  t.true(traffic.ok, 'routes as configured once applied');
});

// ---- backend ----

kernel(`backend: with Docker's chains in iptables-legacy, apply writes legacy rules and none in nft${NEEDS_ROOT}`, async (t) => {
  const lab = labs.backend!;
  await addDockerDnsChains(lab.router, 'legacy');
  const dockerBefore = dockerLines(await save(lab.router, 'legacy'));
  t.is(dockerBefore.length, 8);

  const applied = await apply(lab.router, example);
  t.is(applied.code, 0, applied.stderr);
  const legacy = await save(lab.router, 'legacy');
  t.true(legacy.split('\n').includes(FORWARD_HOOK));
  t.regex(legacy, /^-A VGW-POSTROUTING -s 192\.168\.10\.0\/24 -o eth0 .*-j MASQUERADE$/m);
  t.deepEqual(dockerLines(legacy), dockerBefore);
  t.notRegex(await save(lab.router, 'nft'), /VGW-/);

  const again = await plan(lab.router, example);
  t.is(again.code, 0, `in sync under legacy too: ${again.stdout}`);
  const traffic = await labCheck(runner, lab, example.config);
  t.true(traffic.ok, 'the legacy rules route as configured');
});

// The kernel runs both rule sets. A FORWARD policy DROP in iptables-legacy, with no legacy rule, used to leave the
// gateway writing to nft (legacy "held no rules"): apply and plan said all was well, and nothing was routed.
kernel(`backend: a FORWARD policy DROP in iptables-legacy is where the rules live; beside Docker's chains in nft it is a warning${NEEDS_ROOT}`, async (t) => {
  const lab = labs.policy!;
  await inNs(lab.router, 'iptables-legacy', '-P', 'FORWARD', 'DROP');
  const applied = await apply(lab.router, example);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /^backend: iptables-legacy \(the namespace's rules are there\)$/m);
  t.true((await save(lab.router, 'legacy')).split('\n').includes(FORWARD_HOOK));
  t.true((await labCheck(runner, lab, example.config)).ok, 'routed as configured, past the legacy policy');

  // Docker's chains in nft decide for nft: the legacy policy then drops what the gateway accepts, and plan says so.
  t.is((await cli('down', '--netns', lab.router, '--config', example.path)).code, 0);
  await addDockerDnsChains(lab.router, 'nft');
  const planned = await cli('plan', '--netns', lab.router, '--config', example.path);
  t.is(planned.code, 0, planned.stderr);
  t.regex(planned.stdout, /^backend: iptables-nft \(Docker's DNS chains are there\)$/m);
  t.regex(planned.stdout, new RegExp(`^warning: iptables-legacy's FORWARD chain \\(policy DROP\\) filters forwarded packets too .*\\(ip netns exec ${lab.router} iptables-legacy -P FORWARD ACCEPT;`, 'm'));
});

// `down` switches forwarding back off when the gateway had switched it on: every jump of ours remembers it, so an
// admin's `iptables -F` (the filter table: our FORWARD jump goes) and an apply that puts the jump back keep it.
kernel(`down after iptables -F and a re-apply still switches ip_forward back off${NEEDS_ROOT}`, async (t) => {
  const lab = labs.policy!;
  await inNs(lab.router, 'iptables-legacy', '-P', 'FORWARD', 'ACCEPT');
  t.is((await cli('down', '--netns', lab.router, '--config', example.path)).code, 0);
  t.is((await inNs(lab.router, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(), '0');
  t.is((await apply(lab.router, example)).code, 0);
  await inNs(lab.router, 'iptables-nft', '-F');
  const again = await apply(lab.router, example);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /^ {4}\+ jump FORWARD -> VGW-FORWARD$/m);
  t.true((await save(lab.router, 'nft', '-t', 'filter')).split('\n').includes(FORWARD_HOOK), 'the jump put back carries the note');
  t.is((await cli('down', '--netns', lab.router, '--config', example.path)).code, 0);
  t.is((await inNs(lab.router, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim(), '0');
});

// Docker disconnect and connect: the VLAN's accounting members are deleted, then added again. Added without
// counters, the kernel handed a member back the counters its slot last had, and the metrics counted them twice.
kernel(`a NIC detached and attached again: its accounting members start from zero${NEEDS_ROOT}`, async (t) => {
  const lab = labs.policy!;
  const office = lab.vlans.find((v) => v.name === 'office')!;
  const nic = office.routerInterface;
  t.is((await apply(lab.router, example)).code, 0);
  const members = async () => (await inNs(lab.router, 'ipset', 'save')).split('\n').filter((l) => l.startsWith('add VGW-PAIRS-') && l.includes(`,${nic} `));
  const [line] = await members();
  t.truthy(line, 'a pair member towards office');
  const [, set, member] = line!.split(' ');
  await inNs(lab.router, 'ipset', 'add', set!, member!, 'packets', '617', 'bytes', '61700', '-exist'); // its history
  await inNs(lab.router, 'ip', 'link', 'del', nic);
  t.is((await apply(lab.router, example)).code, 0);
  t.deepEqual(await members(), [], 'gone with the NIC');
  // As `docker network connect` (and the lab) attach it: a macvlan child made on the host, moved in, renamed.
  await runner.run(['ip', '-n', lab.switch, 'link', 'add', 'link', office.parent, 'name', 'mre', 'type', 'macvlan', 'mode', 'bridge']);
  await runner.run(['ip', '-n', lab.switch, 'link', 'set', 'mre', 'netns', lab.router, 'name', nic]);
  await inNs(lab.router, 'ip', 'addr', 'add', `${office.routerAddress}/${office.prefix}`, 'dev', nic);
  await inNs(lab.router, 'ip', 'link', 'set', nic, 'up');
  t.is((await apply(lab.router, example)).code, 0);
  const back = (await members()).find((l) => l.split(' ')[2] === member);
  t.is(back, `add ${set} ${member} packets 0 bytes 0`);
});

/**
 * `vlan-gateway apply --config configPath` in a legacy namespace while the xtables lock is held: `during` runs once
 * its first restore waits for the lock (and what it started beside that restore has had time to run); then the lock
 * is released and the apply's result returned.
 */
async function applyWhileLockHeld(router: string, configPath: string, name: string, during: () => Promise<void>): Promise<Awaited<ReturnType<typeof cliWithEnv>>> {
  const env = { XTABLES_LOCKFILE: join(await scratchDir(), `xtables-${name}.lock`) };
  const held = await holdXtablesLock(env.XTABLES_LOCKFILE, 60);
  let applying: ReturnType<typeof cliWithEnv> | undefined;
  try {
    applying = cliWithEnv(env, 'apply', '--netns', router, '--config', configPath);
    await waitFor('the apply to wait for the xtables lock', async () => ((await restoresIn(router)) > 0 ? true : undefined), 30_000);
    await sleep(500);
    await during();
  } finally {
    await held.release();
  }
  return applying;
}

kernel(`backend legacy: a restore waits for the xtables lock, and gives up after ${XTABLES_WAIT_SECONDS} s with iptables' message, changing nothing${NEEDS_ROOT}`, async (t) => {
  const router = labs.backend!.router;
  // The test before leaves the example applied under legacy; alone (--match), this test does the same first.
  if (!(await save(router, 'legacy')).split('\n').includes(FORWARD_HOOK)) {
    await addDockerDnsChains(router, 'legacy');
    t.is((await apply(router, example)).code, 0, 'the example, under legacy');
  }
  const lockFile = join(await scratchDir(), 'xtables.lock');
  const env = { XTABLES_LOCKFILE: lockFile };
  const before = await readState(router, true);

  // Held for longer than the wait: the apply fails with iptables' own words, and nothing changed.
  const stuck = await holdXtablesLock(lockFile, XTABLES_WAIT_SECONDS + 20);
  try {
    const started = Date.now();
    const applied = await cliWithEnv(env, 'apply', '--netns', router, '--config', dropByDefault.path);
    const ms = Date.now() - started;
    t.is(applied.code, 1, applied.stdout);
    t.regex(applied.stderr, /applying the filter table failed: iptables-legacy-restore failed \(exit 4\): .*\n?.*Another app is currently holding the xtables lock\. Stopped waiting after 10s\./);
    t.true(ms >= XTABLES_WAIT_SECONDS * 1000 - 500 && ms < XTABLES_WAIT_SECONDS * 1000 + 15_000, `gave up after ${ms} ms`);
    t.deepEqual(await readState(router, true), before, 'tables, addresses, routes, sets and sysctls as before');
  } finally {
    await stuck.release();
  }

  // Held for a moment: the apply waits for it, then applies.
  const brief = await holdXtablesLock(lockFile, 1.5);
  try {
    const started = Date.now();
    const applied = await cliWithEnv(env, 'apply', '--netns', router, '--config', dropByDefault.path);
    t.is(applied.code, 0, applied.stderr);
    t.true(Date.now() - started >= 1000, 'it waited for the lock');
    t.regex(await save(router, 'legacy'), /-j DROP$/m);
  } finally {
    await brief.release();
  }
  t.is((await apply(router, example)).code, 0, 'back to the example');
});

// Before an apply writes rules of rules.dir, `iptables-legacy-restore --test` parses them, and it waits for the
// xtables lock too. Held past the wait, its failure was taken for iptables refusing the rules: exit 2 "invalid
// rules (nothing was applied): iptables refuses the rules of rules.dir: Can't lock /run/xtables.lock", for a config
// that was fine; the operator was sent to fix templates with nothing wrong in them.
kernel(`backend legacy: an apply with rules.dir whose check finds the xtables lock held past the wait fails as a runtime error (exit 1, iptables' message), not as invalid rules${NEEDS_ROOT}`, async (t) => {
  const router = labs.backend!.router;
  if (!(await save(router, 'legacy')).split('\n').includes(FORWARD_HOOK)) {
    await addDockerDnsChains(router, 'legacy');
    t.is((await apply(router, example)).code, 0, 'the example, under legacy');
  }
  const env = { XTABLES_LOCKFILE: join(await scratchDir(), 'xtables-rules-check.lock') };
  const before = await readState(router, true);
  const stuck = await holdXtablesLock(env.XTABLES_LOCKFILE, XTABLES_WAIT_SECONDS + 20);
  try {
    const applied = await cliWithEnv(env, 'apply', '--netns', router, '--config', withUserRules.path);
    t.is(applied.code, 1, applied.stdout);
    t.regex(applied.stderr, new RegExp(`^vlan-gateway: ip netns exec ${router} iptables-legacy-restore --noflush --wait=10 --test exited 4: .*\n?.*Another app is currently holding the xtables lock\\. Stopped waiting after 10s\\.$`));
    t.notRegex(applied.stderr, /invalid|refuses/);
    t.deepEqual(await readState(router, true), before, 'nothing written');
  } finally {
    await stuck.release();
  }
  const applied = await cliWithEnv(env, 'apply', '--netns', router, '--config', withUserRules.path);
  t.is(applied.code, 0, applied.stderr);
  t.regex(await save(router, 'legacy'), /^-A VGW-USER-FORWARD .*-j REJECT/m, 'the rules of rules.dir, once the lock is free');
  t.is((await apply(router, example)).code, 0, 'back to the example');
});

// iptables-legacy opens its lock file before it writes or tests anything. Under `docker run --read-only` (the README's
// volume on /run/vlan-gateway alone) /run is read-only, and every restore failed with "Fatal: can't open lock file
// /run/xtables.lock: Read-only file system": pass after pass, no word of the way out; with rules.dir, apply said
// "invalid rules" (exit 2). Here the lock file is in a directory that does not exist: the same failure.
kernel(`backend legacy: where iptables-legacy cannot open its lock file, apply exits 1 naming the writable /run it needs, and changes nothing${NEEDS_ROOT}`, async (t) => {
  const router = labs.backend!.router;
  if (!(await save(router, 'legacy')).split('\n').includes(FORWARD_HOOK)) {
    await addDockerDnsChains(router, 'legacy');
    t.is((await apply(router, example)).code, 0, 'the example, under legacy');
  }
  const lockFile = join(await scratchDir(), 'no-such-directory', 'xtables.lock');
  const before = await readState(router, true);
  const hint = 'iptables-legacy takes its lock in /run/xtables.lock (or $XTABLES_LOCKFILE), which must be writable: '
    + 'with docker run --read-only, add --tmpfs /run (Compose: tmpfs: [/run])';
  for (const file of [dropByDefault, withUserRules]) {
    const applied = await cliWithEnv({ XTABLES_LOCKFILE: lockFile }, 'apply', '--netns', router, '--config', file.path);
    t.is(applied.code, 1, applied.stdout);
    t.true(applied.stderr.includes(`Fatal: can't open lock file ${lockFile}: No such file or directory; ${hint}`), applied.stderr);
    t.notRegex(applied.stderr, /invalid|refuses/);
  }
  t.deepEqual(await readState(router, true), before, 'nothing written');
});

/** How many iptables restores are running in `ns` (waiting for the xtables lock, say). */
async function restoresIn(ns: string): Promise<number> {
  const commands = await Promise.all((await namespacePids(ns)).map((pid) => readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')));
  return commands.filter((c) => /-restore\0/.test(c)).length;
}

// Two applies at once used to each read the namespace before the other wrote, and each wrote what its own reading
// called for: here the first's filter change and the second's nat change both stayed, a mix of the two configs
// that neither plan called in sync, and both exited 0. (With other configs, one failed on an address the other had
// just added, and its rollback failed too.) The xtables lock holds the first between its reading and its writing.
kernel(`two applies at once in one namespace: the second waits for the first, then applies its own config whole${NEEDS_ROOT}`, async (t) => {
  const router = labs.backend!.router;
  if (!(await save(router, 'legacy')).split('\n').includes(FORWARD_HOOK)) await addDockerDnsChains(router, 'legacy');
  t.is((await apply(router, example)).code, 0, 'the example, under legacy');
  const env = { XTABLES_LOCKFILE: join(await scratchDir(), 'xtables-two-applies.lock') };

  const held = await holdXtablesLock(env.XTABLES_LOCKFILE, 60);
  let first: ReturnType<typeof cliWithEnv> | undefined;
  let second: ReturnType<typeof cliWithEnv> | undefined;
  try {
    first = cliWithEnv(env, 'apply', '--netns', router, '--config', dropByDefault.path);
    await waitFor('the first apply to have read the namespace and to wait for the xtables lock', async () => ((await restoresIn(router)) > 0 ? true : undefined), 30_000);
    // Released once the second says it waits (a fixed 5 s was not enough for it to start on a busy machine, and it
    // then found the first gone and had nothing to wait for); then 1 s more, in which it would read and plan were it
    // not waiting.
    let secondSays = '';
    second = cliWatchingStderr(env, (piece) => { secondSays += piece; }, 'apply', '--netns', router, '--config', noNat.path);
    await waitFor('the second apply to say it waits', async () => (/waiting for another vlan-gateway apply/.test(secondSays) ? true : undefined), 30_000);
    await sleep(1000);
  } finally {
    await held.release();
  }
  const [a, b] = await Promise.all([first, second]);
  t.is(a?.code, 0, a?.stderr);
  t.is(b?.code, 0, b?.stderr);
  const inSync = await plan(router, noNat);
  t.is(inSync.code, 0, `the second config, whole (the first's filter change undone):\n${inSync.stdout}`);
  t.is((await save(router, 'legacy')).split('\n').filter((line) => line === FORWARD_HOOK).length, 1);
  t.regex(b?.stderr ?? '', /^vlan-gateway: waiting for another vlan-gateway apply or down \(pid \d+\) to finish with network namespace vgwlab-/m);
  t.is((await apply(router, example)).code, 0, 'back to the example');
});

/** The vlan-gateway process (node on the bundle) whose iptables restore is running in `ns`. */
async function applyWithRestoreIn(ns: string): Promise<number | undefined> {
  for (const pid of await namespacePids(ns)) {
    if (!/-restore\0/.test(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''))) continue;
    // `ip netns exec` execs the restore, started by the command helper's shell for it (src/exec/shell-helper.ts), a
    // child of the helper, a child of the gateway's process: the first of its ancestors that is the gateway.
    let ancestor = pid;
    for (let up = 0; up < 4; up++) {
      ancestor = Number(/^PPid:\s+(\d+)/m.exec(await readFile(`/proc/${ancestor}/status`, 'utf8').catch(() => ''))?.[1]);
      if ((await readFile(`/proc/${ancestor}/cmdline`, 'utf8').catch(() => '')).includes('vlan-gateway.mjs')) return ancestor;
    }
  }
  return undefined;
}

// An apply stopped in its terminal (Ctrl-Z) holds the namespace's write lock and cannot say its pid: the next apply
// (or a supervisor starting) said "waiting for another vlan-gateway apply or down to finish", named no process, and
// after 60 s gave up, no wiser. It names the holder found in /proc, says it is stopped, and how to let it go on.
kernel(`an apply waiting behind one that is stopped (Ctrl-Z) names its pid, says it is stopped and how to continue it${NEEDS_ROOT}`, async (t) => {
  const router = labs.backend!.router;
  if (!(await save(router, 'legacy')).split('\n').includes(FORWARD_HOOK)) {
    await addDockerDnsChains(router, 'legacy');
    t.is((await apply(router, example)).code, 0, 'the example, under legacy');
  }
  const env = { XTABLES_LOCKFILE: join(await scratchDir(), 'xtables-stopped-apply.lock') };
  // The first apply is held inside its write (its restore waits for the xtables lock), and stopped there.
  const held = await holdXtablesLock(env.XTABLES_LOCKFILE, 60);
  let stopped: number | undefined;
  let first: ReturnType<typeof cliWithEnv> | undefined;
  let second: ReturnType<typeof cliWithEnv> | undefined;
  let secondSays = '';
  try {
    first = cliWithEnv(env, 'apply', '--netns', router, '--config', dropByDefault.path);
    stopped = (await waitFor('the first apply to write, and to wait for the xtables lock', () => applyWithRestoreIn(router), 30_000)).value;
    process.kill(stopped, 'SIGSTOP');
    second = cliWatchingStderr(env, (piece) => { secondSays += piece; }, 'apply', '--netns', router, '--config', example.path);
    await waitFor('the second apply to say it waits', async () => (/waiting for another/.test(secondSays) ? true : undefined), 30_000);
  } finally {
    if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
    await held.release();
  }
  const [a, b] = await Promise.all([first, second]);
  t.is(a?.code, 0, a?.stderr);
  t.is(b?.code, 0, b?.stderr);
  t.is(secondSays.split('\n').find((line) => line.includes('waiting for')), `vlan-gateway: waiting for another vlan-gateway apply or down (pid ${stopped}) to finish with network namespace ${router}; `
    + `pid ${stopped} is stopped (a SIGSTOP, Ctrl-Z in its terminal, or a debugger): it holds the lock and goes on only once continued (kill -CONT ${stopped})`);
  t.is((await plan(router, example)).code, 0, 'the second config, whole');
});

// The refusal used to tell everyone to remove the legacy set: here, where Docker's DNS chains are in legacy, the very
// set the gateway maintains; done so, the next apply wrote nft, away from Docker's rules. It names the set to keep
// and prints the commands that remove the other; run as printed, they leave the legacy gateway as it was.
kernel(`backend: VGW- chains in both nft and legacy: apply, plan and down exit 1, say which set to keep and how to remove the other, and change nothing${NEEDS_ROOT}`, async (t) => {
  const router = labs.backend!.router;
  // The test before leaves the example applied under legacy, beside Docker's chains; alone (--match), this one does it first.
  if (!(await save(router, 'legacy')).split('\n').includes(FORWARD_HOOK)) {
    await addDockerDnsChains(router, 'legacy');
    t.is((await apply(router, example)).code, 0, 'the example, under legacy');
  }
  await inNs(router, 'iptables-nft', '-t', 'filter', '-N', 'VGW-FORWARD');
  await inNs(router, 'iptables-nft', '-t', 'filter', '-A', 'FORWARD', '-j', 'VGW-FORWARD');
  const before = await readState(router, true);

  const applied = await apply(router, example);
  t.is(applied.code, 1, applied.stdout);
  t.is(applied.stderr, [
    'vlan-gateway: VGW- chains exist in both the iptables-nft and the iptables-legacy rule sets; the kernel runs both, so rules would '
      + 'be enforced twice, and the gateway cannot tell which set is current. Keep the ones in iptables-legacy (Docker\'s DNS chains are '
      + 'there), and remove those in iptables-nft (in the gateway\'s network namespace), then run again:',
    // As the operator runs them: in the gateway's namespace (they printed bare, and acted on the operator's own).
    `  ip netns exec ${router} iptables-nft -t filter -D FORWARD -j VGW-FORWARD`,
    `  ip netns exec ${router} iptables-nft -t filter -F VGW-FORWARD`,
    `  ip netns exec ${router} iptables-nft -t filter -X VGW-FORWARD`,
  ].join('\n'));
  for (const command of ['plan', 'down']) {
    const refused = await cli(command, ...(command === 'plan' ? ['--detailed-exitcode'] : []), '--netns', router, '--config', example.path);
    t.is(refused.code, 1, command);
    t.is(refused.stderr, applied.stderr, command);
  }
  t.deepEqual(await readState(router, true), before);

  // The way out, as printed: the legacy gateway is in sync again, and nft holds nothing of ours.
  for (const line of applied.stderr.split('\n').filter((l) => l.startsWith('  '))) await inNs(router, ...line.trim().split(' '));
  t.notRegex(await save(router, 'nft'), /VGW-/);
  const again = await plan(router, example);
  t.is(again.code, 0, again.stdout + again.stderr);
  t.regex(again.stdout, /^backend: iptables-legacy \(the gateway's chains are there\)$/m);
  t.is((await readState(router, true)).legacy, before.legacy, 'the legacy rules, counters included, as they were');
});

// Alpine 3.22 (the image's base) ships no iptables-legacy. In a namespace whose rules live there (Docker on a host
// set to iptables-legacy writes the container's DNS chains there), the legacy read failed as "not installed", and plan
// said "backend: iptables-nft (no rules in either: the default)", with no word of the legacy tables the kernel still
// runs: here a legacy FORWARD policy DROP that drops everything the gateway's nft rules accept.
kernel(`backend: legacy tables where iptables-legacy is not installed: plan says it writes nft without reading them, and warns${NEEDS_ROOT}`, async (t) => {
  const ns = `vgwtest-${uniqueLabName('l')}`;
  const bin = join(await scratchDir(), 'bin-without-legacy');
  await mkdir(bin, { recursive: true });
  for (const command of ['ip', 'ipset', 'cat', 'sysctl', 'iptables-nft', 'iptables-nft-save', 'iptables-nft-restore']) {
    const found = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].map((dir) => join(dir, command)).find((path) => existsSync(path));
    if (!found) throw new Error(`${command} not found`);
    await symlink(found, join(bin, command)).catch(() => undefined);
  }
  await runner.run(['ip', 'netns', 'add', ns]);
  try {
    await addDockerDnsChains(ns, 'legacy');
    await inNs(ns, 'iptables-legacy', '-P', 'FORWARD', 'DROP');
    const planned = await cliWithEnv({ PATH: bin }, 'plan', '--detailed-exitcode', '--netns', ns, '--config', example.path);
    t.is(planned.code, 2, planned.stderr);
    t.regex(planned.stdout, /^backend: iptables-nft \(iptables-legacy is not installed here, or its save failed: the legacy tables \(filter, nat\) are not read\)$/m);
    t.true(planned.stdout.includes('warning: this namespace has iptables-legacy tables (filter, nat), and iptables-legacy is not installed '
      + 'here (or its save failed): the gateway cannot read them, and writes its rules to iptables-nft. The kernel runs both rule sets: a FORWARD policy '
      + 'or rule there still filters forwarded packets'), planned.stdout);
  } finally {
    await runner.run(['ip', 'netns', 'del', ns]);
  }
});

// iptables-nft-save leaves out a table holding a rule it cannot show ("# Table `filter' is incompatible") and fails
// on one it cannot parse. The first was read as an empty table (our chains and jumps added again at every apply,
// unseen by down), the second as "iptables-nft is not installed" (every rule written to legacy beside nft's).
const NFT = '/usr/sbin/nft';

kernel(`backend: rules iptables-nft cannot read (written by nft itself) stop plan and apply, saying so, and nothing is written${NEEDS_ROOT}`, async (t) => {
  const ns = `vgwtest-${uniqueLabName('n')}`;
  await runner.run(['ip', 'netns', 'add', ns]);
  try {
    await inNs(ns, 'iptables-nft', '-A', 'FORWARD', '-j', 'ACCEPT');
    for (const [rule, why] of [
      ['ct state established counter accept', /iptables-nft-save cannot read the filter table \(iptables-nft-save says it is incompatible\)/],
      ['meta mark set 5', /iptables-nft-save cannot read the filter table \(.*Parsing nftables rule failed/],
    ] as const) {
      // By its path: node_modules/.bin has an `nft` of its own (@vercel/nft), ahead of nftables' on the tests' PATH.
      await inNs(ns, NFT, 'flush', 'chain', 'ip', 'filter', 'FORWARD');
      await inNs(ns, NFT, `add rule ip filter FORWARD ${rule}`);
      // nft's own listing: iptables-nft-save is what fails here.
      const state = async () => [await inNs(ns, NFT, 'list', 'ruleset'), await save(ns, 'legacy'), await inNs(ns, 'ipset', 'save'),
        await inNs(ns, 'ip', 'addr'), await inNs(ns, 'sysctl', 'net.ipv4.ip_forward')];
      const before = await state();
      for (const command of [apply, plan]) {
        const result = await command(ns, example);
        t.is(result.code, 1, `${rule}: ${result.stdout}`);
        t.regex(result.stderr, why);
        t.regex(result.stderr, /so it changes nothing/);
      }
      t.deepEqual(await state(), before, `${rule}: nothing written, in nft or legacy`);
    }
    // The same rules in a table the gateway does not use (mangle) are none of its business.
    await inNs(ns, NFT, 'flush', 'chain', 'ip', 'filter', 'FORWARD');
    await inNs(ns, 'iptables-nft', '-t', 'mangle', '-A', 'PREROUTING', '-j', 'ACCEPT');
    await inNs(ns, NFT, 'add rule ip mangle PREROUTING meta mark set 5');
    await inNs(ns, NFT, 'add rule ip mangle PREROUTING ct state established counter accept');
    const applied = await apply(ns, example);
    t.is(applied.code, 0, applied.stderr);
    t.is((await plan(ns, example)).code, 0, 'in sync: our tables were read, one by one');
  } finally {
    await runner.run(['ip', 'netns', 'del', ns]);
  }
});

// ---- hot-plug: a VLAN NIC attached after the first apply ----

/** What `docker network connect` does for VLAN `id`: a new parent (here with its bridge and a client host), a
 *  macvlan child made in the "host" (the switch namespace), moved into the router, renamed, given an address. */
async function dockerNetworkConnect(lab: LabTopology, config: Config, id: number, nic: string): Promise<void> {
  const v = planLabTopology(config, lab.name).vlans.find((x) => x.id === id)!;
  const c = v.client;
  const ip = (ns: string, ...args: string[]) => runner.run(['ip', '-n', ns, ...args]);
  await runner.run(['ip', 'netns', 'add', c.namespace]);
  await ip(c.namespace, 'link', 'set', 'lo', 'up');
  await ip(lab.switch, 'link', 'add', v.bridge, 'type', 'bridge');
  await ip(lab.switch, 'link', 'set', v.bridge, 'up');
  await ip(lab.switch, 'link', 'add', v.parent, 'type', 'veth', 'peer', 'name', v.parentPeer);
  await ip(lab.switch, 'link', 'set', v.parentPeer, 'master', v.bridge, 'up');
  await ip(lab.switch, 'link', 'set', v.parent, 'up');
  await ip(c.namespace, 'link', 'add', c.interface, 'type', 'veth', 'peer', 'name', c.switchPort, 'netns', lab.switch);
  await ip(lab.switch, 'link', 'set', c.switchPort, 'master', v.bridge, 'up');
  await ip(c.namespace, 'addr', 'add', `${c.address}/${v.prefix}`, 'dev', c.interface);
  await ip(c.namespace, 'link', 'set', c.interface, 'up');
  await ip(c.namespace, 'route', 'add', 'default', 'via', v.gateway);
  await ip(lab.switch, 'link', 'add', 'link', v.parent, 'name', `m${id}`, 'type', 'macvlan', 'mode', 'bridge');
  await ip(lab.switch, 'link', 'set', `m${id}`, 'netns', lab.router, 'name', nic);
  await ip(lab.router, 'addr', 'add', `${v.routerAddress}/${v.prefix}`, 'dev', nic);
  await ip(lab.router, 'link', 'set', nic, 'up');
}

const IOT_WAITING = /^vlan iot \(id 30, 192\.168\.30\.0\/24\): (waiting: )?waiting for a NIC with an address in 192\.168\.30\.0\/24$/m;

kernel(`hot-plug: a VLAN whose NIC is missing waits, and apply binds the others${NEEDS_ROOT}`, async (t) => {
  const lab = labs.hotPlug!;
  const planned = await plan(lab.router, withIot);
  t.is(planned.code, 2);
  t.regex(planned.stdout, IOT_WAITING);

  const applied = await apply(lab.router, withIot);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, IOT_WAITING);
  const addresses = (await runner.run(['ip', '-n', lab.router, '-4', '-o', 'addr'])).stdout;
  t.regex(addresses, /eth2 +inet 192\.168\.10\.1\/24/);
  t.regex(addresses, /eth1 +inet 192\.168\.20\.1\/24/);
  t.notRegex(addresses, /192\.168\.30\./);
  t.notRegex(await save(lab.router, 'nft'), /VGW-FROM-30/);
  const [office, labVlan] = lab.vlans;
  const ping = await runProbe(runner, { namespace: office!.client.namespace, kind: 'ping', target: labVlan!.client.address });
  t.is(ping.actual, 'pass', 'office and lab are routed meanwhile');
});

kernel(`hot-plug: after Docker attaches the NIC, the next apply gives it the gateway address and its rules${NEEDS_ROOT}`, async (t) => {
  const lab = labs.hotPlug!;
  await dockerNetworkConnect(lab, withIot.config, 30, 'eth3');

  const planned = await plan(lab.router, withIot);
  t.is(planned.code, 2);
  t.regex(planned.stdout, /^vlan iot \(id 30, 192\.168\.30\.0\/24\): on eth3$/m);
  t.regex(planned.stdout, /^\+ address 192\.168\.30\.1\/24 on eth3 \(vlan iot\)$/m);
  t.regex(planned.stdout, /^ {4}\+ chain VGW-FROM-30$/m);

  const applied = await apply(lab.router, withIot);
  t.is(applied.code, 0, applied.stderr);
  const eth3 = (await runner.run(['ip', '-n', lab.router, '-4', '-o', 'addr', 'show', 'dev', 'eth3'])).stdout;
  t.regex(eth3, /inet 192\.168\.30\.2\/24 /, 'Docker\'s address stays');
  t.regex(eth3, /inet 192\.168\.30\.1\/24 /);
  const filter = await save(lab.router, 'nft', '-t', 'filter');
  t.regex(filter, /^-A VGW-FORWARD -i eth3 .*-j VGW-FROM-30$/m);
  // default: accept with ipset: the new VLAN's pairs are accepted (and counted) by the set lookups, which now
  // hold its subnet and its NIC.
  t.regex(filter, /^-A VGW-FROM-30 .*--match-set VGW-PAIRS-0 src,dst -j ACCEPT$/m);
  const sets = (await runner.run(['ip', 'netns', 'exec', lab.router, 'ipset', 'save'])).stdout;
  for (const member of ['VGW-PAIRS-0 192.168.30.0/24,eth0', 'VGW-PAIRS-0 192.168.10.0/24,eth3', 'VGW-NICS-0 0.0.0.0/1,eth3']) {
    t.true(sets.split('\n').some((line) => line.startsWith(`add ${member}`)), `${member} in:\n${sets}`);
  }

  // Real packets to and from the new VLAN: its client (attached above) reaches office and the Internet host.
  const iot = planLabTopology(withIot.config, lab.name).vlans.find((v) => v.id === 30)!.client;
  const office = lab.vlans.find((v) => v.name === 'office')!.client;
  const agents = await Promise.all([
    startAgent(runner, office.namespace, [{ proto: 'tcp', address: '0.0.0.0', port: 22 }], 30),
    startAgent(runner, lab.inet, [{ proto: 'tcp', address: '0.0.0.0', port: 80 }], 30),
  ]);
  try {
    const [toOffice, toInternet, fromOffice] = await Promise.all([
      runProbe(runner, { namespace: iot.namespace, kind: 'tcp', target: office.address, port: 22 }),
      runProbe(runner, { namespace: iot.namespace, kind: 'tcp', target: lab.uplink.internetHost, port: 80 }),
      runProbe(runner, { namespace: office.namespace, kind: 'ping', target: iot.address }),
    ]);
    t.like(toOffice, { actual: 'pass', reply: { peer: '192.168.30.100', local: '192.168.10.100:22' } });
    t.like(toInternet, { actual: 'pass', reply: { peer: '203.0.113.2' } }, 'masqueraded like the others');
    t.is(fromOffice.actual, 'pass', fromOffice.detail);
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }

  const again = await plan(lab.router, withIot);
  t.is(again.code, 0, again.stdout);
});

kernel(`an uplink.gateway on no network of the uplink NIC: the route waits with a note, and the VLANs are routed${NEEDS_ROOT}`, async (t) => {
  // The kernel refuses such a next hop ("Nexthop has invalid gateway"); planning the route anyway failed the whole
  // apply, so a typo in one address kept every VLAN unrouted.
  const lab = labs.hotPlug!;
  const routeBefore = (await runner.run(['ip', '-n', lab.router, 'route', 'show', 'default'])).stdout;
  const applied = await apply(lab.router, offLinkGateway);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /^uplink: on eth0 \(uplink\.gateway 203\.0\.114\.1 is not on a network of eth0 \(it has 203\.0\.113\.2\/24\): no default route is set until it is\)$/m);
  t.notRegex(applied.stdout, /route default via 203\.0\.114\.1/);
  t.is((await runner.run(['ip', '-n', lab.router, 'route', 'show', 'default'])).stdout, routeBefore, 'the route is left as it was');
  const [office, labVlan] = lab.vlans;
  const ping = await runProbe(runner, { namespace: office!.client.namespace, kind: 'ping', target: labVlan!.client.address });
  t.is(ping.actual, 'pass', 'office and lab are routed');
  t.is((await plan(lab.router, offLinkGateway)).code, 0, 'and the plan is in sync: the note is not a pending change');
});

kernel(`IPv6 forwarding switched on in the namespace: plan warns that IPv6 passes none of the policy, and changes nothing${NEEDS_ROOT}`, async (t) => {
  const lab = labs.hotPlug!;
  const ipv6 = (value: string) => runner.run(['ip', 'netns', 'exec', lab.router, 'sysctl', '-w', `net.ipv6.conf.all.forwarding=${value}`]);
  await ipv6('1');
  try {
    const planned = await plan(lab.router, offLinkGateway);
    t.is(planned.code, 0, 'a warning is not a pending change');
    t.regex(planned.stdout, /^warning: net\.ipv6\.conf\.all\.forwarding is 1 and no ip6tables FORWARD policy drops: IPv6 is routed between the VLANs, and between them and the uplink, with none of this policy /m);
  } finally {
    await ipv6('0');
  }
  t.notRegex((await plan(lab.router, offLinkGateway)).stdout, /^warning:/m);
});

kernel(`down with a broken config still removes what the gateway added (found by its marks), and says the config is broken${NEEDS_ROOT}`, async (t) => {
  const lab = labs.hotPlug!;
  const applied = await apply(lab.router, example);
  t.is(applied.code, 0, applied.stderr);
  t.regex(await save(lab.router, 'nft'), /VGW-FORWARD/);
  const broken = join(await scratchDir(), 'broken.yaml');
  await writeFile(broken, 'vlans:\n  - {name: office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.30.1}\n');

  const preview = await cli('plan', '--down', '--detailed-exitcode', '--netns', lab.router, '--config', broken);
  t.is(preview.code, 2, `changes pending: ${preview.stdout}${preview.stderr}`);
  const down = await cli('down', '--netns', lab.router, '--config', broken);
  t.is(down.code, 0, down.stderr);
  t.regex(down.stderr, /vlans\[0\]\.gateway: 192\.168\.30\.1 is outside 192\.168\.10\.0\/24/);
  t.regex(down.stderr, /down goes on without it: removing what the gateway added by its own marks/);
  t.regex(down.stdout, /^- address 192\.168\.10\.1\/24 on eth\d+ \(no longer configured\)$/m);
  t.notRegex(await save(lab.router, 'nft'), /VGW-|vgw:/);
  t.notRegex(await inNs(lab.router, 'ipset', 'list', '-n'), /VGW-/);
  t.notRegex(await inNs(lab.router, 'ip', '-4', 'address', 'show'), /metric 7010/);
  t.is((await cli('plan', '--down', '--detailed-exitcode', '--netns', lab.router, '--config', broken)).code, 0, 'nothing of ours is left');
  // An apply with it changes nothing: an invalid config applies nothing.
  const refused = await cli('apply', '--netns', lab.router, '--config', broken);
  t.is(refused.code, 2);
  t.notRegex(await save(lab.router, 'nft'), /VGW-/);
});

kernel(`run that cannot serve its HTTP endpoints exits 1 naming the address and where it came from, having applied nothing${NEEDS_ROOT}`, async (t) => {
  const ns = `vgwk-bind-${process.pid}`;
  await runner.run(['ip', 'netns', 'add', ns]);
  try {
    // No NIC in a fresh namespace holds 10.254.254.254.
    const run = await cli('run', '--netns', ns, '--config', example.path, '--listen', '10.254.254.254:1234');
    t.is(run.code, 1, run.stdout);
    t.regex(run.stderr, /^vlan-gateway: cannot serve the HTTP endpoints on 10\.254\.254\.254:1234 \(--listen\): no interface has that address$/m);
    t.notRegex(run.stderr, /^\s+at /m, 'no stack trace');
    t.notRegex(await save(ns, 'nft'), /VGW-/);
  } finally {
    await runner.run(['ip', 'netns', 'del', ns]);
  }
});

kernel(`validate has iptables parse the user's rules: a match it does not have is a config error (exit 2) naming the template, and nothing is touched${NEEDS_ROOT}`, async (t) => {
  const router = labs.hotPlug!.router;
  const doc = await exampleDocument();
  const bad = await writeConfig('unknown-match', { ...doc, rules: { dir: join(FIXTURES, 'rules-unknown-match') } });
  const before = await readState(router, true);
  const validated = await cli('validate', '--netns', router, '--config', bad.path);
  t.is(validated.code, 2, validated.stdout);
  t.is(validated.stderr, `vlan-gateway: invalid rules (nothing was applied):\nfilter VGW-USER-FORWARD rule 2 (from ${join(FIXTURES, 'rules-unknown-match')}/filter/forward.hbs line 3): `
    + "iptables refuses it: Couldn't load match `nosuchmatch':No such file or directory");
  t.deepEqual(await readState(router, true), before, '--test commits nothing');
  t.is((await cli('validate', '--netns', router, '--config', example.path)).code, 0);
});

// Docker attaches the NICs after the container starts: a rule that needs the uplink's NIC is checked without it too.
kernel(`validate renders the user's templates with no NIC attached as well: an unguarded {{uplink.nic}} is a config error saying how to guard it${NEEDS_ROOT}`, async (t) => {
  const router = labs.hotPlug!.router;
  const doc = await exampleDocument();
  const dir = join(FIXTURES, 'rules-uplink-unguarded');
  const bad = await writeConfig('uplink-unguarded', { ...doc, rules: { dir } });
  const validated = await cli('validate', '--netns', router, '--config', bad.path);
  t.is(validated.code, 2, validated.stdout);
  t.is(validated.stderr, `vlan-gateway: invalid rules (nothing was applied):\nfilter VGW-USER-FORWARD rule 1 (from ${dir}/filter/forward.hbs): `
    + "iptables refuses it: Bad argument `tcp'\n(rendered as at a start before Docker attaches the NICs: no VLAN has its NIC yet, and "
    + 'uplink.nic has no value; put a rule that needs it inside {{#if uplink.nic}})');
});

/** A PATH of this test's own that finds every program of the machine's but `program` (a prefix, with `*`). */
async function pathWithout(program: string): Promise<string> {
  const dir = join(await scratchDir(), `path-without-${program.replace('*', '')}`);
  const left = (name: string) => (program.endsWith('*') ? name.startsWith(program.slice(0, -1)) : name === program);
  await mkdir(dir, { recursive: true });
  for (const from of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    for (const name of await readdir(from).catch(() => [] as string[])) {
      if (!left(name)) await symlink(join(from, name), join(dir, name)).catch(() => undefined); // the first one found wins, as on the PATH
    }
  }
  return dir;
}

// The reverse: iptables-nft-restore missing with iptables-nft-save there. The pass read the tables, then its first
// restore failed with `exec of "iptables-nft-restore" failed: No such file or directory`, and no word of what to do.
kernel(`with iptables-nft-restore missing and iptables-nft-save there, apply and down stop saying what to install, and change nothing; plan warns${NEEDS_ROOT}`, async (t) => {
  const router = labs.hotPlug!.router;
  const path = await pathWithout('iptables-nft-restore');
  t.true(existsSync(join(path, 'iptables-nft-save')) && existsSync(join(path, 'ipset')), 'only iptables-nft-restore is missing');
  const missing = 'iptables-nft-restore is not installed, though iptables-nft-save is (both are normally links to xtables-nft-multi, of one package): '
    + 'the gateway cannot write the iptables-nft rule set. Install iptables again (Alpine: apk fix iptables; Debian: apt-get install --reinstall iptables), '
    + 'or put iptables-nft-restore back on the PATH';
  const says = (command: string) => `vlan-gateway: ${command} failed: applying the filter table failed: ${missing}\n(the steps already done were rolled back)`;
  try {
    t.is((await apply(router, example)).code, 0, 'the example, with iptables');
    let before = await readState(router);
    const down = await cliWithEnv({ PATH: path }, 'down', '--netns', router, '--config', example.path);
    t.is(down.code, 1, down.stdout);
    t.is(down.stderr, says('down'));
    t.deepEqual(await readState(router), before, 'down: the addresses, rules, sets and ip_forward as they were');
    t.is((await cli('down', '--netns', router, '--config', example.path)).code, 0, 'down, with iptables');
    before = await readState(router);
    const plan = await cliWithEnv({ PATH: path }, 'plan', '--netns', router, '--config', example.path);
    t.is(plan.code, 0, plan.stderr);
    t.regex(plan.stdout, /^~ table filter:$[^~]*^ {4}\+ chain VGW-FORWARD$/m, 'the changes, read with iptables-nft-save');
    t.is(plan.stderr, `vlan-gateway: warning: ${missing}; apply would fail`);
    const up = await cliWithEnv({ PATH: path }, 'apply', '--netns', router, '--config', example.path);
    t.is(up.code, 1, up.stdout);
    t.is(up.stderr, says('apply'));
    t.deepEqual(await readState(router), before, 'apply: nothing added');
  } finally {
    await apply(router, example); // as the other tests on this lab find it
  }
});

// Without the ipset tool (an image rebuilt without it, a PATH that lost /usr/sbin), the gateway works without sets,
// and cannot see the ones an earlier apply made: down removed the rules that used them and exited 0 saying nothing,
// and the sets stayed in the kernel.
kernel(`without the ipset tool, down names the gateway's sets it leaves in the kernel; with ipset back, down removes them${NEEDS_ROOT}`, async (t) => {
  const router = labs.hotPlug!.router;
  t.is((await apply(router, example)).code, 0, 'the example, with ipset');
  const setsNow = async () => (await inNs(router, 'ipset', 'list', '-n')).split('\n').filter(Boolean).sort();
  const sets = await setsNow();
  t.deepEqual(sets, ['VGW-NICS-0', 'VGW-PAIRS-0', 'VGW-SUBNET-NICS', 'VGW-SUBNETS']);

  const down = await cliWithEnv({ PATH: await pathWithout('ipset') }, 'down', '--netns', router, '--config', example.path);
  t.is(down.code, 0, down.stderr);
  t.notRegex(await save(router, 'nft'), /VGW-|vgw:/, 'the rules are gone');
  t.deepEqual(await setsNow(), sets, 'the sets are not: nothing can remove them without ipset');
  t.regex(down.stdout, new RegExp(`^warning: the ipset tool is not installed \\(not on the PATH\\): the gateway's rules use its sets ${sets.join(', ')}, `
    + 'which it can neither read nor remove without it: they stay in the kernel, unused once these rules are gone, until ipset is installed and apply or down runs again$', 'm'));

  const again = await cli('down', '--netns', router, '--config', example.path);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(await setsNow(), []);
});

// Without iptables at all (neither iptables-nft nor iptables-legacy on the PATH), a namespace with no legacy table
// in the kernel was taken for an empty iptables-legacy: plan listed every rule to add (exit 0, "backend:
// iptables-legacy (iptables-nft is not installed)"), and down removed the gateway addresses, left every VGW- chain and
// jump in force in nft, exited 0 and said it was done.
kernel(`without iptables, plan, apply and down stop saying to install it, and change nothing${NEEDS_ROOT}`, async (t) => {
  const router = labs.hotPlug!.router;
  t.is((await apply(router, example)).code, 0, 'the example, with iptables');
  const before = await readState(router);
  const path = await pathWithout('iptables*');
  for (const command of [['plan'], ['plan', '--detailed-exitcode'], ['apply'], ['down']]) {
    const result = await cliWithEnv({ PATH: path }, ...command, '--netns', router, '--config', example.path);
    t.is(result.code, 1, `${command.join(' ')}: ${result.stdout}`);
    t.is(result.stderr, 'vlan-gateway: neither iptables-nft-save nor iptables-legacy-save works here; install iptables', command.join(' '));
    t.is(result.stdout, '', command.join(' '));
  }
  t.deepEqual(await readState(router), before, 'the addresses, rules, sets and ip_forward as they were');
});

// iptables-nft-save missing with iptables-nft-restore there (both are links to xtables-nft-multi: a half-installed
// iptables) was taken for "iptables-nft is not installed": plan said "backend: iptables-legacy", and apply wrote the
// gateway's chains into legacy, beside its own in nft, where the kernel runs both.
kernel(`with iptables-nft-save missing and iptables-nft-restore there, plan, apply and down stop saying what to install, and change nothing${NEEDS_ROOT}`, async (t) => {
  const router = labs.hotPlug!.router;
  t.is((await apply(router, example)).code, 0, 'the example, with iptables');
  const before = await readState(router);
  const path = await pathWithout('iptables-nft-save');
  t.true(existsSync(join(path, 'iptables-nft-restore')) && existsSync(join(path, 'iptables-legacy-save')), 'only iptables-nft-save is missing');
  for (const command of [['plan'], ['apply'], ['down']]) {
    const result = await cliWithEnv({ PATH: path }, ...command, '--netns', router, '--config', example.path);
    t.is(result.code, 1, `${command.join(' ')}: ${result.stdout}`);
    t.is(result.stderr, 'vlan-gateway: iptables-nft-save is not installed, though iptables-nft-restore is (both are normally links to xtables-nft-multi, '
      + 'of one package): the gateway cannot read the iptables-nft rule set, so it cannot tell which backend the namespace\'s rules are in, and '
      + 'changes nothing. Install iptables again (Alpine: apk fix iptables; Debian: apt-get install --reinstall iptables), or put '
      + 'iptables-nft-save back on the PATH', command.join(' '));
    t.is(result.stdout, '', command.join(' '));
  }
  t.deepEqual(await readState(router), before, 'the addresses, rules (none in legacy), sets and ip_forward as they were');
});
