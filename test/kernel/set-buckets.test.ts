/**
 * Kernel tier: an accounting set (hash:net,iface) whose bucket size the kernel has raised to its limit. The kernel
 * raises it as one net gathers members in a set, up to 64, and never lowers it: a set that got there grows no bucket
 * again, and refuses a third member of a net "Hash is full" however few it holds (a flush keeps it so). A pass whose
 * adds landed before its deletions left VGW-PAIRS-0 so under NIC churn (100 VLANs detached and attached again), and
 * every pass after it failed: the VLANs never got their gateway addresses back. The set must be made again.
 *
 * One lab of three VLANs (three members of each source net per set), built by the product's lab builder.
 */
import test from 'ava';
import type { Config } from '../../src/config/schema.js';
import { labDown, type LabTopology } from '../../src/lab/index.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { buildLab, cli, exampleDocument, inNs, removeScratch, runner, writeConfig } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const name = uniqueLabName('b');

let file: { path: string; config: Config };
let lab: LabTopology;

test.before(async () => {
  if (!isRoot()) return;
  const doc = await exampleDocument();
  file = await writeConfig('three-vlans', {
    ...doc, vlans: [...(doc.vlans as unknown[]), { name: 'iot', id: 30, subnet: '192.168.30.0/24', gateway: '192.168.30.1' }],
  });
  lab = await buildLab(file.config, name);
});

tearDownAlways('remove the lab and the scratch configs', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  await removeScratch();
});

const header = async (set: string) => (await inNs(lab.router, 'ipset', 'list', set, '-t')).split('\n').find((l) => l.startsWith('Header: ')) ?? '';

kernel(`an accounting set at the kernel's bucket limit, emptied: apply makes it again and fills it; plan is then in sync${NEEDS_ROOT}`, async (t) => {
  t.is((await cli('apply', '--netns', lab.router, '--config', file.path)).code, 0);
  // 64 members of one net (what a pass's adds before its deletions leave for a moment), then the set emptied.
  const net = Array.from({ length: 64 }, (_, i) => `10.99.0.0/24,x${i}`);
  await runner.run(['ip', 'netns', 'exec', lab.router, 'ipset', 'restore'], { input: `${net.map((m) => `add VGW-PAIRS-0 ${m}`).join('\n')}\n` });
  await inNs(lab.router, 'ipset', 'flush', 'VGW-PAIRS-0');
  t.regex(await header('VGW-PAIRS-0'), / bucketsize 64 /, 'the kernel keeps the bucket size at its limit');

  const apply = await cli('apply', '--netns', lab.router, '--config', file.path);
  t.is(apply.code, 0, apply.stderr);
  t.regex(apply.stdout, /~ ipset VGW-PAIRS-0 \(hash:net,iface\): made again with hashsize \d+, members and counters kept \(its buckets are at the kernel's limit: it takes no more members\)$/m);
  t.notRegex(await header('VGW-PAIRS-0'), / bucketsize 64 /);
  const plan = await cli('plan', '--netns', lab.router, '--config', file.path, '--detailed-exitcode');
  t.is(plan.code, 0, plan.stdout);
});
