/**
 * driftOf (src/reconcile/drift.ts): a change a pass makes although the desired state did not change since the last
 * successful apply. Real plans from the real planner against the semantic netfilter fake (test/fakes/netfilter.ts):
 * apply once, let "someone" change the namespace behind the gateway's back, plan again, and ask driftOf what the
 * new plan repairs. A first apply, a config change and a NIC Docker attaches are not drift.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseConfigText } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { Desired, Plan } from '../../src/plan/types.js';
import { driftOf } from '../../src/reconcile/drift.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';
import { FakeNetns } from '../fakes/netfilter.js';

const templates = await loadTemplates();
const labText = await readFile(fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url)), 'utf8');
const lab = parseConfigText(labText, 'lab.yaml');
/** lab + a VLAN whose NIC is not attached yet. */
const withIot = parseConfigText(`${labText}\n`.replace(/^forwarding:/m, '  - {name: iot, id: 30, subnet: 192.168.30.0/24, gateway: 192.168.30.1}\nforwarding:'), 'iot.yaml');
/** lab + a forwarding rule (changes lab's chains only). */
const withRule: Config = { ...lab, forwarding: { ...lab.forwarding, rules: [{ from: 'lab', to: 'office', proto: 'tcp', ports: '80', action: 'drop' }] } };

/** The container's namespace as Docker hands it over: uplink eth0, office on eth1, lab on eth2. */
const scene = () => new FakeNetns({
  links: [
    { name: 'eth0', addresses: ['203.0.113.2/24'] },
    { name: 'eth1', addresses: ['192.168.10.2/24'] },
    { name: 'eth2', addresses: ['192.168.20.2/24'] },
  ],
  defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' },
  dockerDns: true,
});

/** A namespace with `config` applied once; `previous` is what the supervisor remembers as lastDesired. */
async function applied(config: Config = lab): Promise<{ ns: FakeNetns; previous: Desired; first: Plan }> {
  const ns = scene();
  const { plan } = await reconcileOnce(ns, config, templates);
  return { ns, previous: plan.desired, first: plan };
}

/** The next pass (which repairs) and what driftOf makes of it. */
async function next(ns: FakeNetns, previous: Desired, config: Config = lab): Promise<{ drift: string[]; plan: Plan }> {
  const { plan } = await reconcileOnce(ns, config, templates);
  return { drift: driftOf(previous, plan), plan };
}

const restore = (ns: FakeNetns, input: string) => ns.run(['iptables-nft-restore', '--noflush'], { input });

/** Our jump from `hook` as iptables-save prints it (its comment may carry a note), without the leading `-A HOOK `. */
function jumpRule(ns: FakeNetns, hook: string, target: string): string {
  const line = ns.save().split('\n').find((l) => l.startsWith(`-A ${hook} `) && l.endsWith(`-j ${target}`));
  if (!line) throw new Error(`no jump ${hook} → ${target} in\n${ns.save()}`);
  return line.slice(`-A ${hook} `.length);
}

test('the first apply is not drift, however much it changes', async (t) => {
  const { first } = await applied();
  t.true(first.steps.length >= 5, 'the first apply has work to do');
  t.deepEqual(driftOf(undefined, first), []);
});

test('a pass that finds everything in sync reports no drift', async (t) => {
  const { ns, previous } = await applied();
  const { drift, plan } = await next(ns, previous);
  t.is(plan.steps.length, 0);
  t.deepEqual(drift, []);
});

test('a chain of ours flushed by someone (iptables -F) is drift of kind "rules"', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, '*filter\n:VGW-FROM-10 - [0:0]\nCOMMIT\n');
  const { drift, plan } = await next(ns, previous);
  t.deepEqual(drift, ['rules']);
  t.true(plan.steps.some((s) => s.kind === 'table' && s.chains.some((c) => c.chain === 'VGW-FROM-10' && c.change === 'rewrite')));
});

test('a rule someone inserted into our chain is drift of kind "rules"', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, '*filter\n-I VGW-FROM-20 1 -j ACCEPT\nCOMMIT\n');
  t.deepEqual((await next(ns, previous)).drift, ['rules']);
});

test('a deleted chain of ours (re-created by the repair) is drift of kind "rules"', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, `*nat\n-D PREROUTING ${jumpRule(ns, 'PREROUTING', 'VGW-PREROUTING')}\n-F VGW-PREROUTING\n-X VGW-PREROUTING\nCOMMIT\n`);
  const { drift } = await next(ns, previous);
  t.deepEqual([...drift].sort(), ['jump', 'rules'], 'the chain and its jump');
});

test('a stray jump into our chains (someone hooked VGW-FROM-10 into INPUT) is drift of kind "jump"', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, '*filter\n-A INPUT -j VGW-FROM-10\nCOMMIT\n');
  t.deepEqual((await next(ns, previous)).drift, ['jump']);
});

test('a VGW- chain we never wrote is removed, and that is drift of kind "rules"', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, '*filter\n:VGW-STRAY - [0:0]\n-A VGW-STRAY -j ACCEPT\nCOMMIT\n');
  const { drift, plan } = await next(ns, previous);
  t.deepEqual(drift, ['rules']);
  t.true(plan.steps.some((s) => s.kind === 'table' && s.chains.some((c) => c.chain === 'VGW-STRAY' && c.change === 'delete')));
});

test('a deleted FORWARD jump is drift of kind "jump"', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, `*filter\n-D FORWARD ${jumpRule(ns, 'FORWARD', 'VGW-FORWARD')}\nCOMMIT\n`);
  t.deepEqual((await next(ns, previous)).drift, ['jump']);
});

test('a removed gateway address is drift of kind "address"', async (t) => {
  const { ns, previous } = await applied();
  await ns.run(['ip', 'addr', 'del', '192.168.10.1/24', 'dev', 'eth1']);
  t.deepEqual((await next(ns, previous)).drift, ['address']);
});

test('a NIC someone set down is drift of kind "link" (its link-up repair)', async (t) => {
  const { ns, previous } = await applied();
  await ns.run(['ip', 'link', 'set', 'eth2', 'down']);
  const { drift, plan } = await next(ns, previous);
  t.true(plan.steps.some((s) => s.kind === 'link-up'), JSON.stringify(plan.steps.map((s) => s.kind)));
  t.deepEqual(drift, ['link']);
});

test('ip_forward switched off is drift of kind "sysctl"', async (t) => {
  const { ns, previous } = await applied();
  await ns.run(['sysctl', '-w', 'net.ipv4.ip_forward=0']);
  t.deepEqual((await next(ns, previous)).drift, ['sysctl']);
});

test('a deleted default route (the config names the uplink gateway) is drift of kind "route"', async (t) => {
  const { ns, previous } = await applied();
  await ns.run(['ip', 'route', 'del', 'default']);
  t.deepEqual((await next(ns, previous)).drift, ['route']);
});

test('an accounting-set member someone deleted is drift of kind "set"', async (t) => {
  const { ns, previous } = await applied();
  const set = previous.sets[0]!;
  await ns.run(['ipset', 'restore', '-exist'], { input: `del ${set.name} ${set.members[0]!.member}\n` });
  t.deepEqual((await next(ns, previous)).drift, ['set']);
});

test('several things at once: one kind per repaired thing', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, `*filter\n:VGW-FROM-10 - [0:0]\n-D FORWARD ${jumpRule(ns, 'FORWARD', 'VGW-FORWARD')}\nCOMMIT\n`);
  await ns.run(['sysctl', '-w', 'net.ipv4.ip_forward=0']);
  await ns.run(['ip', 'addr', 'del', '192.168.20.1/24', 'dev', 'eth2']);
  t.deepEqual([...(await next(ns, previous)).drift].sort(), ['address', 'jump', 'rules', 'sysctl']);
});

test('a config change is not drift, although it rewrites chains', async (t) => {
  const { ns, previous } = await applied();
  const { drift, plan } = await next(ns, previous, withRule);
  t.true(plan.steps.length > 0);
  t.deepEqual(drift, []);
});

test('a config change in the same pass as a flush: only the flushed chain counts', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, '*filter\n:VGW-FROM-10 - [0:0]\nCOMMIT\n'); // office's chain; the change is in lab's
  t.deepEqual((await next(ns, previous, withRule)).drift, ['rules']);
});

test('a NIC Docker attaches later (a waiting VLAN comes up) is not drift', async (t) => {
  const { ns, previous } = await applied(withIot);
  t.true(previous.vlans.some((b) => b.vlan.name === 'iot' && b.nic === undefined), 'iot is waiting');
  ns.addLink({ name: 'eth3', addresses: ['192.168.30.2/24'] });
  const { drift, plan } = await next(ns, previous, withIot);
  t.true(plan.steps.some((s) => s.kind === 'address-add' && s.vlan === 'iot'));
  t.deepEqual(drift, []);
});

test('a NIC Docker detaches is not drift', async (t) => {
  const { ns, previous } = await applied();
  ns.removeLink('eth2');
  const { drift, plan } = await next(ns, previous);
  t.true(plan.steps.length > 0, 'lab\'s rules are withdrawn');
  t.deepEqual(drift, []);
});

test('a VLAN gateway changed in the config is not drift, although the new address goes on the same NIC', async (t) => {
  const { ns, previous } = await applied();
  const moved: Config = { ...lab, vlans: lab.vlans.map((v) => (v.name === 'office' ? { ...v, gateway: '192.168.10.254' } : v)) };
  const { drift, plan } = await next(ns, previous, moved);
  t.true(plan.steps.some((s) => s.kind === 'address-add' && s.nic === 'eth1' && s.address === '192.168.10.254'));
  t.deepEqual(drift, []);
});

test('a VLAN\'s NIC that Docker attaches again under another name is not drift, although its set members are swapped one for one', async (t) => {
  const { ns, previous } = await applied();
  ns.removeLink('eth2');
  ns.addLink({ name: 'eth3', addresses: ['192.168.20.3/24'] });
  const { drift, plan } = await next(ns, previous);
  t.true(plan.steps.some((s) => s.kind === 'set-update' && s.set === 'VGW-SUBNET-NICS' && s.add.length === 1 && s.del.length === 1),
    'lab\'s member of VGW-SUBNET-NICS is swapped: 192.168.20.0/24,eth2 for 192.168.20.0/24,eth3');
  t.deepEqual(drift, []);
});

test('driftOf is pure: an empty plan is no drift, whatever came before', (t) => {
  const desired: Desired = { vlans: [], uplink: {}, addresses: [], sysctls: {}, chains: [], jumps: [], sets: [] };
  t.deepEqual(driftOf(desired, { desired, steps: [] }), []);
  t.deepEqual(driftOf(undefined, { desired, steps: [{ kind: 'sysctl', key: 'net.ipv4.ip_forward', value: '1' }] }), []);
  t.deepEqual(driftOf({ ...desired, sysctls: { 'net.ipv4.ip_forward': '1' } }, { desired, steps: [{ kind: 'sysctl', key: 'net.ipv4.ip_forward', value: '1' }] }), ['sysctl']);
});

test('a duplicate of our jump, inserted by someone and removed by the repair, is drift of kind "jump"', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, `*filter\n-I FORWARD 1 ${jumpRule(ns, 'FORWARD', 'VGW-FORWARD')}\nCOMMIT\n`);
  const { drift, plan } = await next(ns, previous);
  t.true(plan.steps.some((s) => s.kind === 'table' && s.jumps.some((j) => j.change === 'remove')), 'the duplicate is removed');
  t.deepEqual(drift, ['jump']);
});

test('our jump found below an ACCEPT of someone else\'s is moved back: one repair of kind "jump", not a removal and an add', async (t) => {
  const { ns, previous } = await applied();
  await restore(ns, '*filter\n-I FORWARD 1 -s 10.9.9.9/32 -j ACCEPT\nCOMMIT\n');
  const { drift, plan } = await next(ns, previous);
  t.deepEqual(plan.steps.flatMap((s) => (s.kind === 'table' ? s.jumps.map((j) => j.change) : [])), ['add', 'remove']);
  t.deepEqual(drift, ['jump']);
});
