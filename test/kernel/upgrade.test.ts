/**
 * Kernel tier, upgrades: a router namespace whose rules and sets an older vlan-gateway wrote, taken over by this one,
 * as an operator does it (a newer `apply` over the namespace, or a newer supervisor's start pass, which plans the
 * same way). The old states are fixtures captured from real runs of older commits on the lab with the example
 * config (test/fixtures/upgrade/<commit>.rules and .ipset): 831212f wrote no anti-spoofing chain or sets, and
 * nat jumps without the "forwarding was off" note; 551f662 wrote no hairpin drop in VGW-FROM-UP, and sized its
 * sets the older way.
 *
 * For each: one apply converges (`plan --detailed-exitcode` then exits 0, which it does only with no stale chain,
 * jump, set or address of ours left), and `down` leaves exactly what the lab held before the old version ran
 * (ip_forward off again: the old version had switched it on, and its jumps say so; the default route, which a down
 * leaves, stays). And a set made smaller than this version makes it is made again at its size, under the rules.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { labDown, type LabTopology } from '../../src/lab/index.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { runMain } from '../helpers/main.js';
import { ping } from '../helpers/supervisor.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { buildLab, exampleDocument, inNs, readState, REPO, removeScratch, runner, writeConfig, type NamespaceState } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('u');
const UPGRADE_FIXTURES = join(REPO, 'test', 'fixtures', 'upgrade');

let lab: LabTopology;
let router: string;
let example: string;
let pristine: NamespaceState;

test.before(async () => {
  if (!isRoot()) return;
  const written = await writeConfig('example', await exampleDocument());
  example = written.path;
  lab = await buildLab(written.config, name);
  router = lab.router;
  await inNs(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=0');
  // What a down leaves of any version's apply: the default route it set stays, and so do the tables iptables-nft made.
  for (const command of ['apply', 'down']) {
    const run = await runMain(command, '--netns', router, '--config', example);
    if (run.code !== 0) throw new Error(`${command}: ${run.stderr}`);
  }
  pristine = await readState(router);
});

tearDownAlways('remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  await removeScratch();
});

const withoutComments = (text: string) => `${text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).join('\n')}\n`;

/** The namespace as the old version's apply of the example left it: its sets, its rules, its marked addresses, forwarding on. */
async function writeOldState(commit: string): Promise<void> {
  const ipsets = withoutComments(await readFile(join(UPGRADE_FIXTURES, `${commit}.ipset`), 'utf8'));
  const rules = withoutComments(await readFile(join(UPGRADE_FIXTURES, `${commit}.rules`), 'utf8'));
  await runner.run(['ip', 'netns', 'exec', router, 'ipset', 'restore'], { input: ipsets });
  await runner.run(['ip', 'netns', 'exec', router, 'iptables-nft-restore', '--noflush'], { input: rules });
  // The lab attaches VLAN 20 first (eth1) and VLAN 10 second (eth2): the NICs the fixtures name.
  await runner.run(['ip', '-n', router, '-batch', '-'], {
    input: 'address add 192.168.10.1/24 dev eth2 metric 7010\naddress add 192.168.20.1/24 dev eth1 metric 7010\n',
  });
  await inNs(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
}

for (const commit of ['831212f', '551f662']) {
  kernel(`the rules and sets vlan-gateway ${commit} wrote: one apply converges, and down removes everything it had added${NEEDS_ROOT}`, async (t) => {
    await writeOldState(commit);
    const apply = await runMain('apply', '--netns', router, '--config', example);
    t.is(apply.code, 0, apply.stderr);
    const plan = await runMain('plan', '--detailed-exitcode', '--netns', router, '--config', example);
    t.is(plan.code, 0, `${plan.stdout}${plan.stderr}`);
    const down = await runMain('down', '--netns', router, '--config', example);
    t.is(down.code, 0, down.stderr);
    t.deepEqual(await readState(router), pristine);
  });
}

// Sets are made with their hash table sized for their members (BENCHMARKS.md, run ai), and `ipset create -exist`
// keeps a set of another size as it is: one an older version had made smaller stayed so, rehashed as it filled. Here
// VGW-PAIRS-0 is made again by hand with 64 buckets (the gateway makes it with 1,024), its members and counters
// kept, and swapped in under the rules; the next apply makes it again at its size while office pings lab.
kernel(`an accounting set made smaller than the gateway makes it: apply makes it again at its size, members and counters kept, no ping lost${NEEDS_ROOT}`, async (t) => {
  t.is((await runMain('apply', '--netns', router, '--config', example)).code, 0);
  const [office, labVlan] = [lab.vlans.find((v) => v.name === 'office')!, lab.vlans.find((v) => v.name === 'lab')!];
  t.is((await ping(office.client.namespace, labVlan.client.address)).received, 1);
  const members = async () => (await inNs(router, 'ipset', 'save', 'VGW-PAIRS-0')).split('\n').filter((l) => l.startsWith('add ')).sort();
  const header = async () => inNs(router, 'ipset', 'list', '-t', 'VGW-PAIRS-0');
  const counted = (await members()).map((l) => l.replace(/ packets \d+ bytes \d+$/, ' packets 617 bytes 61700'));
  await runner.run(['ip', 'netns', 'exec', router, 'ipset', 'restore'], {
    input: ['create VGW-OLD hash:net,iface counters hashsize 64', ...counted.map((l) => l.replace('VGW-PAIRS-0', 'VGW-OLD')), 'swap VGW-OLD VGW-PAIRS-0', 'destroy VGW-OLD', ''].join('\n'),
  });
  const old = await header();
  t.regex(old, /^Header: family inet hashsize 64 maxelem 65536 counters /m);
  const references = /^References: (\d+)$/m.exec(old)![1]!;
  t.not(references, '0', 'the rules match on it');

  const plan = await runMain('plan', '--detailed-exitcode', '--netns', router, '--config', example);
  t.is(plan.code, 2, plan.stderr);
  t.regex(plan.stdout, /^~ ipset VGW-PAIRS-0 \(hash:net,iface\): made again with hashsize 1024, members and counters kept$/m);
  const pinging = ping(office.client.namespace, labVlan.client.address, 200, 0.02);
  const apply = await runMain('apply', '--netns', router, '--config', example);
  t.is(apply.code, 0, apply.stderr);
  const pings = await pinging;
  t.true(pings.sent >= 150, pings.output);
  t.is(pings.received, pings.sent, `no ping lost while the set was made again: ${pings.output}`);

  const now = await header();
  t.regex(now, /^Header: family inet hashsize 1024 maxelem 65536 counters /m);
  t.regex(now, new RegExp(`^References: ${references}$`, 'm'), 'the same rules match on it');
  const after = await members();
  t.deepEqual(after.map((l) => l.replace(/ packets .*/, '')), counted.map((l) => l.replace(/ packets .*/, '')), 'the same members');
  for (const line of after) t.true(Number(/ packets (\d+) /.exec(line)![1]) >= 617, `counted on from 617: ${line}`);
  t.notRegex(await inNs(router, 'ipset', 'list', '-n'), /VGW-PAIRS-0-NEW|VGW-OLD/);
  const again = await runMain('plan', '--detailed-exitcode', '--netns', router, '--config', example);
  t.is(again.code, 0, `${again.stdout}${again.stderr}`);

  t.is((await runMain('down', '--netns', router, '--config', example)).code, 0);
  t.deepEqual(await readState(router), pristine);
});
