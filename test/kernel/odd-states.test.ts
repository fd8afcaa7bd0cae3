/**
 * Kernel tier: odd but realistic states a Docker host leaves in the gateway's namespace, and what apply, plan, down
 * and the supervisor make of them. Rules of someone else's that refer to the gateway's chains or sets (a chain of
 * theirs jumping to one of ours, a `-m set --match-set VGW-…`, in the same rule set or in the other backend).
 *
 * One lab (the write-up's example), built by the product's lab builder; the CLI runs as a subprocess.
 */
import test from 'ava';
import type { Config } from '../../src/config/schema.js';
import { labDown, type LabTopology } from '../../src/lab/index.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';
import {
  buildLab, cli, exampleDocument, inNs, readState, removeScratch, runner, setsInOrder, settledState, writeConfig,
} from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('o');

type File = { path: string; config: Config };
let example: File;
let lab: LabTopology;

test.before(async () => {
  if (!isRoot()) return;
  const doc = await exampleDocument();
  example = await writeConfig('example', doc);
  lab = await buildLab(example.config, name);
});

tearDownAlways('remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  await removeScratch();
});

const run = (command: 'apply' | 'down', file: File) => cli(command, '--netns', lab.router, '--config', file.path);

/** Runs `iptables-<backend> ARGS…` in the router's namespace. */
const iptables = (backend: 'nft' | 'legacy', ...args: string[]) => inNs(lab.router, `iptables-${backend}`, ...args);

// A rule of the other backend is not in the tables the plan is made from: the set's destroy fails after the tables
// were written. The message said only "in use by a kernel component"; and the rollback made the sets again in
// reverse order, so `ipset list` showed them swapped.
kernel(`a rule in iptables-legacy matching one of our sets (ours in nft): down says where to look, and its rollback leaves everything as it was${NEEDS_ROOT}`, async (t) => {
  t.is((await run('apply', example)).code, 0);
  await iptables('legacy', '-A', 'FORWARD', '-m', 'set', '--match-set', 'VGW-SUBNETS', 'src', '-j', 'ACCEPT');
  try {
    const before = await settledState(lab.router);
    const down = await run('down', example);
    t.is(down.code, 1, down.stdout);
    t.regex(down.stderr, /^vlan-gateway: down failed: removing ipset VGW-SUBNETS failed: .*Set cannot be destroyed: it is in use by a kernel component; /m);
    t.true(down.stderr.includes('a rule outside the gateway\'s chains still refers to it: in iptables-legacy (iptables-legacy-save | grep -w VGW-SUBNETS), '
      + 'or in a table the gateway does not write (iptables-nft-save -t mangle, -t raw); delete that rule and run again\n(the steps already done were rolled back)'),
    down.stderr);
    const after = await readState(lab.router, true);
    t.deepEqual({ ...after, ipsets: setsInOrder(after.ipsets) }, { ...before, ipsets: setsInOrder(before.ipsets) },
      'rules with their counters, addresses, the sets in their order with their members, ip_forward');
  } finally {
    await iptables('legacy', '-D', 'FORWARD', '-m', 'set', '--match-set', 'VGW-SUBNETS', 'src', '-j', 'ACCEPT');
    await run('down', example);
  }
});
