/**
 * Kernel tier, two behaviours of `vlan-gateway apply` that only the netfilter fake showed before, here with the real
 * tools and kernel:
 *
 * - /proc/sys read-only, as inside a container (the CLI runs in a mount namespace of its own with /proc/sys bound
 *   read-only; `ip netns exec` inherits it): the real sysctl's refusal is turned into the hint naming the docker
 *   flag, and the tables already written are rolled back, and the sets already destroyed made again with their
 *   members' counters. (The fake's refusal says "Read-only file system"; procps' sysctl says "permission denied on key".)
 * - A change to one VLAN's policy, written into real iptables-nft: only the chains it touches are rewritten, and
 *   every other rule (ours, the built-in chains', Docker's) keeps its packet counters, as do the accounting sets.
 */
import test from 'ava';
import type { Config } from '../../src/config/schema.js';
import { inNamespace } from '../../src/exec/runner.js';
import { formatMatrix, labCheck, labDown, type LabTopology } from '../../src/lab/index.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';
import {
  addDockerDnsChains, buildLab, cli, cliWithReadOnlyProcSys, EMPTY_NFT_FILTER, exampleDocument, inNs, outcomes, readState, removeScratch,
  runner, settledState, writeConfig,
} from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('c');

let topology: LabTopology;
let router: string;
let example: { path: string; config: Config };
let sshOnly: { path: string; config: Config }; // the example, with lab → office narrowed to TCP/22
let dropByDefault: { path: string; config: Config }; // the example with forwarding.default: drop (the NIC sets unused)

test.before(async () => {
  if (!isRoot()) return;
  const doc = await exampleDocument();
  example = await writeConfig('example', doc);
  sshOnly = await writeConfig('ssh-only', {
    ...doc,
    forwarding: {
      default: 'accept',
      rules: [
        { from: 'lab', to: 'office', proto: 'tcp', ports: '22', action: 'accept' },
        { from: 'lab', to: 'office', action: 'drop' },
      ],
    },
  });
  dropByDefault = await writeConfig('drop-by-default', { ...doc, forwarding: { default: 'drop' } });
  topology = await buildLab(example.config, name);
  router = topology.router;
  await addDockerDnsChains(router);
});

tearDownAlways('remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  await removeScratch();
});

const forwarding = async () => (await inNs(router, 'sysctl', '-n', 'net.ipv4.ip_forward')).trim();

kernel(`read-only /proc/sys with ip_forward off: apply exits 1 naming the --sysctl flag (from the real sysctl's words), and everything is rolled back${NEEDS_ROOT}`, async (t) => {
  t.is(await forwarding(), '0', 'the lab router starts with forwarding off');
  const before = await readState(router, true);
  const applied = await cliWithReadOnlyProcSys('apply', '--netns', router, '--config', example.path);
  t.is(applied.code, 1, applied.stdout);
  t.is(applied.stderr.trimEnd(), [
    'vlan-gateway: apply failed: setting net.ipv4.ip_forward=1 failed: sysctl: permission denied on key "net.ipv4.ip_forward"; /proc/sys is read-only here (a container): start it with '
      + '--sysctl net.ipv4.ip_forward=1 (docker run) or sysctls: [net.ipv4.ip_forward=1] (Compose)',
    '(the steps already done were rolled back)',
  ].join('\n'));
  const after = await readState(router, true);
  t.deepEqual({ ...after, nft: '' }, { ...before, nft: '' }, 'addresses, route, sets, ip_forward and legacy rules as before');
  // The filter table was written (our FORWARD policy first: fail closed) and rolled back; iptables-nft's empty table
  // stays. Docker's nat chains are as they were.
  t.is(after.nft, before.nft.replace(/^\*nat$/m, `${EMPTY_NFT_FILTER}\n*nat`));
});

kernel(`a change to one VLAN's policy rewrites only the chains it touches: every other rule, Docker's included, keeps its counters${NEEDS_ROOT}`, async (t) => {
  const applied = await cli('apply', '--netns', router, '--config', example.path);
  t.is(applied.code, 0, applied.stderr);
  t.true((await labCheck(runner, topology, example.config)).ok, 'traffic through every chain first');
  const before = await settledState(router);
  const rulesOf = (saved: string, chain: string) => saved.split('\n').filter((l) => l.includes(`-A ${chain} `));
  const counted = (saved: string) => saved.split('\n').filter((l) => /^\[[1-9]\d*:\d+\] -A /.test(l));
  t.true(counted(before.nft).length >= 8, `the probes were counted:\n${counted(before.nft).join('\n')}`);

  const changed = await cli('apply', '--netns', router, '--config', sshOnly.path);
  t.is(changed.code, 0, changed.stderr);
  const chainsShown = [...changed.stdout.matchAll(/^ {4}[~+-] chain (\S+)/gm)].map((m) => m[1]);
  t.deepEqual(chainsShown.sort(), ['VGW-FROM-20', 'VGW-P-20-10']);

  const after = await readState(router, true);
  const chains = [...new Set([...before.nft.matchAll(/^-A (\S+) /gm), ...before.nft.matchAll(/^\[\d+:\d+\] -A (\S+) /gm)].map((m) => m[1]!))];
  t.true(chains.includes('DOCKER_OUTPUT') && chains.includes('VGW-FROM-10') && chains.includes('VGW-POSTROUTING'));
  for (const chain of chains.filter((c) => c !== 'VGW-FROM-20')) {
    t.deepEqual(rulesOf(after.nft, chain), rulesOf(before.nft, chain), `${chain}: its rules and counters as before`);
  }
  t.true(rulesOf(after.nft, 'VGW-FROM-20').every((l) => l.startsWith('[0:0] ')), 'the rewritten chain starts from zero');
  t.is(rulesOf(after.nft, 'VGW-P-20-10').length, 2, 'the new pair chain: SSH accepted, the rest dropped');
  t.is(after.ipsets, before.ipsets, 'the accounting sets keep their members and counters');
  t.is(after.addresses, before.addresses);

  // And the new policy decides: the drop rule blocks ping, the accept rule above it lets TCP/22 through.
  const result = await labCheck(runner, topology, sshOnly.config);
  const seen = outcomes(result);
  t.like(seen, { 'lab → office ping': 'blocked', 'lab → office tcp/22': 'pass as 192.168.20.100', 'lab → office tcp/80': 'blocked', 'office → lab ping': 'pass' });
  t.true(result.ok, formatMatrix(result));
});

// A set the plan no longer wants is destroyed once the tables stop matching on it, before ip_forward is written; when
// that write fails, the rollback made the set again with its members from zero (its packet and byte counters lost).
kernel(`read-only /proc/sys after a set was destroyed: the rollback makes it again with its members' counters${NEEDS_ROOT}`, async (t) => {
  t.is((await cli('apply', '--netns', router, '--config', example.path)).code, 0);
  // The NIC set counts the sources routed through a VLAN's NIC, which the lab has none of: its counters are set here.
  const nic = topology.vlans[0]!.routerInterface;
  await inNs(router, 'ipset', 'add', 'VGW-NICS-0', `0.0.0.0/1,${nic}`, 'packets', '7', 'bytes', '588', '-exist');
  await inNs(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=0'); // switched off by hand: the apply writes it again
  const before = await settledState(router);
  t.regex(before.ipsets, new RegExp(`^add VGW-NICS-0 0\\.0\\.0\\.0/1,${nic} packets 7 bytes 588$`, 'm'));
  const { plan } = await reconcileOnce(inNamespace(runner, router), dropByDefault.config, await loadTemplates(), { dryRun: true });
  t.deepEqual(plan.steps.map((s) => (s.kind === 'set-destroy' ? `${s.kind} ${s.set}` : s.kind === 'table' ? s.table : s.kind)), ['filter', 'set-destroy VGW-NICS-0', 'sysctl']);
  const applied = await cliWithReadOnlyProcSys('apply', '--netns', router, '--config', dropByDefault.path);
  t.is(applied.code, 1, applied.stdout);
  t.regex(applied.stderr, /^vlan-gateway: apply failed: setting net\.ipv4\.ip_forward=1 failed: sysctl: permission denied/m);
  t.regex(applied.stderr, /\(the steps already done were rolled back\)$/m);
  // A set made again lists its members in its own hash order, with a new hash seed (initval): both are left out.
  const sets = (text: string) => text.replace(/ initval 0x[0-9a-f]+/g, '').split('\n').sort().join('\n');
  const after = await readState(router, true);
  t.is(sets(after.ipsets), sets(before.ipsets), 'every set, every member with its counters');
  t.deepEqual({ ...after, ipsets: '' }, { ...before, ipsets: '' }, 'iptables-save -c (both backends), addresses, routes, ip_forward');
});
