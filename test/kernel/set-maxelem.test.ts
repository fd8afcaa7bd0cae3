/**
 * Kernel tier: VGW-ROUTED beyond the kernel's default maxelem. The set holds a member per network routed behind a
 * VLAN's host, read from the namespace's routes: nothing in the config bounds it. Made with the default (65,536), its
 * 65,537th member was refused ("Hash is full, cannot add more elements") and every apply failed, the namespace's
 * rules left as they were. The steps here are those the planner makes for it (match.test.ts: created with room, or
 * made again where an earlier pass made it with the default), applied by the product's apply in a bare namespace.
 */
import test from 'ava';
import { applyPlan } from '../../src/apply/apply.js';
import { inNamespace } from '../../src/exec/runner.js';
import type { Desired, Plan, Step } from '../../src/plan/types.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { inNs, runner } from './gateway-harness.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const ns = `vgwtest-${uniqueLabName('m')}`;

test.before(async () => {
  if (isRoot()) await runner.run(['ip', 'netns', 'add', ns]);
});

tearDownAlways('remove the namespace', async () => {
  if (isRoot()) await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
});

/** The i-th network routed behind the VLAN host on eth1, as ipset prints it back (a host's without its /32). */
const routed = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => {
  const i = from + k;
  return `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255},eth1`;
});
const plan = (steps: Step[]): Plan => ({ desired: {} as Desired, steps });
const set = { kind: 'set-update', set: 'VGW-ROUTED', type: 'hash:net,iface', role: 'verdict', del: [] } as const;
const header = async () => (await inNs(ns, 'ipset', 'list', 'VGW-ROUTED', '-t')).split('\n').filter((l) => /^(Header|Number of entries): /.test(l));

kernel(`VGW-ROUTED of 65,537 networks: made with room for them, and one made with the default maxelem is made again and filled${NEEDS_ROOT}`, async (t) => {
  const there = inNamespace(runner, ns);
  await applyPlan(there, 'nft', plan([{ ...set, create: true, add: routed(0, 65_537), maxelem: 131_072 }]));
  const [header1, entries1] = await header();
  t.regex(header1!, /^Header: family inet hashsize 131072 maxelem 131072 counters /);
  t.is(entries1, 'Number of entries: 65537');

  // As an earlier pass made it: the default maxelem, full. Another network is routed: it is made again, members kept.
  await inNs(ns, 'ipset', 'destroy', 'VGW-ROUTED');
  await runner.run(['ip', 'netns', 'exec', ns, 'ipset', 'restore'], {
    input: `create VGW-ROUTED hash:net,iface counters hashsize 131072\n${routed(0, 65_536).map((m) => `add VGW-ROUTED ${m}\n`).join('')}`,
  });
  await applyPlan(there, 'nft', plan([{ ...set, create: false, add: routed(65_536, 65_538), remake: 131_072, maxelem: 131_072 }]));
  const [made, entries] = await header();
  t.regex(made!, /^Header: family inet hashsize 131072 maxelem 131072 counters /);
  t.is(entries, 'Number of entries: 65538');
});
