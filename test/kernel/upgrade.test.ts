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
 * leaves, stays).
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { labDown } from '../../src/lab/index.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { runMain } from '../helpers/main.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { buildLab, exampleDocument, inNs, readState, REPO, removeScratch, runner, writeConfig, type NamespaceState } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('u');
const UPGRADE_FIXTURES = join(REPO, 'test', 'fixtures', 'upgrade');

let router: string;
let example: string;
let pristine: NamespaceState;

test.before(async () => {
  if (!isRoot()) return;
  const written = await writeConfig('example', await exampleDocument());
  example = written.path;
  router = (await buildLab(written.config, name)).router;
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
