/**
 * The planner remembers rendered chains by everything they depend on, so a reload that changes one VLAN's policy
 * renders only that VLAN's chains, and a NIC that comes or goes only the chains that show it. Observable as
 * identity: a chain that was not rendered again is the very same array of rules as in the plan before. And the
 * result is always what a fresh render gives.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { generateConfig } from '../../bench/configs.js';
import { chainsRendered, forgetRenderedChains, planDesired, type Templates } from '../../src/plan/desired.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import type { Desired } from '../../src/plan/types.js';
import { loadTemplates } from '../../src/template/load.js';

const lab = (await loadConfig(fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url)))).config;
const templates = await loadTemplates();

/** The lab with rules for lab → office, and a variant with one more (each a new config object, as a reload makes). */
const withRules = (extra: boolean): Config => ({
  ...structuredClone(lab),
  forwarding: {
    ...lab.forwarding,
    rules: [
      ...(extra ? [{ from: 'lab', to: 'office', proto: 'udp' as const, ports: '53', action: 'accept' as const }] : []),
      { from: 'lab', to: 'office', proto: 'tcp', ports: '22', action: 'accept' },
      { from: 'lab', to: 'office', action: 'drop' },
    ],
  },
});

const chain = (desired: Desired, name: string) => desired.chains.find((c) => c.name === name)!;
const plan = (config: Config, t: Templates = templates) => planDesired(config, syntheticFacts(config), t);

test.serial('a changed rule re-renders only its pair chain; every other chain is the same array as before', (t) => {
  forgetRenderedChains();
  const before = plan(withRules(false));
  const after = plan(withRules(true));
  const rewritten = after.chains.filter((c) => c.rules !== chain(before, c.name)?.rules).map((c) => c.name);
  t.deepEqual(rewritten, ['VGW-P-20-10']);
  t.not(chain(after, 'VGW-P-20-10').rules.length, chain(before, 'VGW-P-20-10').rules.length);
});

test.serial('what the cache gives is exactly what a fresh render gives', (t) => {
  plan(withRules(false));
  const cached = plan(withRules(true));
  forgetRenderedChains();
  t.deepEqual(plan(withRules(true)), cached);
});

test.serial('a changed template or a changed NIC renders again', (t) => {
  forgetRenderedChains();
  const before = plan(structuredClone(lab));
  const edited: Templates = { ...templates, from: { ...templates.from, source: `${templates.from.source}\n{{!-- edited --}}` } };
  const afterTemplate = plan(structuredClone(lab), edited);
  t.true(afterTemplate.chains.filter((c) => c.name.startsWith('VGW-FROM-')).every((c) => c.rules !== chain(before, c.name).rules));
  t.is(chain(afterTemplate, 'VGW-FORWARD').rules, chain(before, 'VGW-FORWARD').rules);

  const config = structuredClone(lab);
  const facts = syntheticFacts(config);
  const renamed = { ...facts, links: facts.links.map((l) => (l.name === 'eth2' ? { ...l, name: 'eth7' } : l)) };
  const afterNic = planDesired(config, renamed, templates);
  const rewritten = afterNic.chains.filter((c) => c.rules !== chain(afterTemplate, c.name).rules).map((c) => c.name);
  t.deepEqual(rewritten, ['VGW-SOURCES', 'VGW-FORWARD', 'VGW-FROM-10', 'VGW-FROM-20', 'VGW-FROM-UP'], 'the chains that show the NIC, no others');
  t.regex(chain(afterNic, 'VGW-FORWARD').rules.map((r) => r.line).join('\n'), /-i eth7 /);
  forgetRenderedChains();
  t.deepEqual(planDesired(structuredClone(config), renamed, edited), afterNic);
});

/** 30 VLANs with ipset (the compact dispatch), as the benchmarks make them: NIC eth<i> carries VLAN v<i>. */
const thirty = generateConfig({ vlans: 30, partners: 1, rulesPerPair: 2, uplink: true });
const thirtyFacts = { ...syntheticFacts(thirty), sets: new Map() };
const withoutNic = (name: string) => ({ ...thirtyFacts, links: thirtyFacts.links.filter((l) => l.name !== name) });

test.serial('one NIC of 30 gone, then back: only the chains that show it are rendered again', (t) => {
  forgetRenderedChains();
  const all = planDesired(thirty, thirtyFacts, templates);
  t.is(all.chains.length, 65);
  let count = chainsRendered();
  const gone = planDesired(thirty, withoutNic('eth7'), templates);
  const goneRendered = gone.chains.filter((c) => c.rules !== chain(all, c.name)?.rules).map((c) => c.name);
  // VLAN v7's chains go; the lists of VLANs and zones (VGW-SOURCES, VGW-FORWARD), v8's branch to v7, the uplink's
  // branch to it and v7's NAT are what change: 5 chains of 62, not all of them.
  t.deepEqual(goneRendered, ['VGW-SOURCES', 'VGW-FORWARD', 'VGW-FROM-8', 'VGW-FROM-UP', 'VGW-POSTROUTING']);
  t.is(chainsRendered() - count, 5);
  count = chainsRendered();
  const back = planDesired(thirty, thirtyFacts, templates);
  const backRendered = back.chains.filter((c) => c.rules !== chain(gone, c.name)?.rules).map((c) => c.name);
  t.deepEqual(backRendered, ['VGW-SOURCES', 'VGW-FORWARD', 'VGW-P-7-6', 'VGW-FROM-7', 'VGW-P-8-7', 'VGW-FROM-8', 'VGW-FROM-UP', 'VGW-POSTROUTING']);
  t.is(chainsRendered() - count, 8);
  forgetRenderedChains();
  t.deepEqual(planDesired(structuredClone(thirty), thirtyFacts, templates), back);
  t.deepEqual(planDesired(structuredClone(thirty), withoutNic('eth7'), templates), gone);
});

test.serial('a value a template reads from the model, not from its own data, renders it again when it changes', (t) => {
  forgetRenderedChains();
  const snat = (to: string): Config => ({ ...structuredClone(lab), uplink: { ...lab.uplink, nat: 'snat', snatTo: to } });
  plan(snat('203.0.113.5'));
  const after = plan(snat('203.0.113.6'));
  // VGW-POSTROUTING's own data (the subnets to NAT) is the same; the template reads uplink.snatTo from the model.
  t.deepEqual(chain(after, 'VGW-POSTROUTING').rules.map((r) => r.line.replace(/^-m comment --comment \S+ /, '')), [
    '-s 192.168.10.0/24 -o eth0 -j SNAT --to-source 203.0.113.6',
    '-s 192.168.20.0/24 -o eth0 -j SNAT --to-source 203.0.113.6',
  ]);
});

test.serial('a VLAN renamed: a chain served from the cache counts its rules under the new name', (t) => {
  forgetRenderedChains();
  const before = plan(withRules(false));
  const renamed = withRules(false);
  renamed.vlans = renamed.vlans.map((v) => (v.name === 'lab' ? { ...v, name: 'bench' } : v));
  renamed.forwarding.rules = renamed.forwarding.rules.map((r) => ({ ...r, from: r.from === 'lab' ? 'bench' : r.from }));
  const after = plan(renamed);
  const pair = chain(after, 'VGW-P-20-10');
  // The rules' text is the same (the pair's chain is named by VLAN id), and their meaning is the new name's.
  t.deepEqual(pair.rules.map((r) => r.line), chain(before, 'VGW-P-20-10').rules.map((r) => r.line));
  t.deepEqual(pair.rules.map((r) => r.meaning), [
    { kind: 'forward', from: 'bench', to: 'office', action: 'accept' },
    { kind: 'forward', from: 'bench', to: 'office', action: 'drop' },
  ]);
  forgetRenderedChains();
  t.deepEqual(plan(structuredClone(renamed)), after);
});

test.serial('a template of rules.dir sees the whole model: a NIC renamed renders it again', (t) => {
  forgetRenderedChains();
  const user: Templates = { ...templates, user: [{ hook: 'forward', template: { file: 'rules.d/filter/forward.hbs', source: '{{#each zones}}\n-i {{nic}} -j RETURN\n{{/each}}\n' } }] };
  const config = structuredClone(lab);
  const facts = syntheticFacts(config);
  planDesired(config, facts, user);
  const renamed = { ...facts, links: facts.links.map((l) => (l.name === 'eth2' ? { ...l, name: 'eth7' } : l)) };
  const after = planDesired(config, renamed, user);
  t.regex(chain(after, 'VGW-USER-FORWARD').rules.map((r) => r.line).join('\n'), /-i eth7 -j RETURN/);
});

test.serial('a reload that changes rules, not VLANs, keeps the very same sets; a NIC gone makes them again', (t) => {
  const withSets = (config: Config) => ({ ...syntheticFacts(config), sets: new Map() });
  const before = planDesired(withRules(false), withSets(lab), templates);
  const after = planDesired(withRules(true), withSets(lab), templates);
  t.deepEqual(after.sets.map((s) => s.name), ['VGW-PAIRS-0', 'VGW-NICS-0', 'VGW-SUBNETS', 'VGW-SUBNET-NICS']);
  // The same objects: a supervisor that knows their members in the kernel (by these sets) does not compare them again.
  t.true(after.sets.slice(0, 2).every((set, i) => set === before.sets[i]));
  const facts = withSets(lab);
  const gone = planDesired(withRules(true), { ...facts, links: facts.links.filter((l) => l.name !== 'eth2') }, templates);
  t.deepEqual(gone.sets[0]!.members.map((m) => m.member), ['0.0.0.0/1,eth1', '128.0.0.0/1,eth1', '192.168.10.0/24,eth0']);
});

// A pass plans from its interfaces as soon as they are read, then again with the tables, and the bindings of the
// first are taken up by the second (the same objects). A supervisor's next pass, one config object all along, reads
// the interfaces afresh: a NIC gone, another one's address, another default route are each seen.
test.serial('one config planned again from other interface facts matches its NICs again', (t) => {
  const config = structuredClone(lab);
  const facts = syntheticFacts(config);
  const first = planDesired(config, facts, templates);
  t.is(planDesired(config, { ...facts, sets: new Map() }, templates).vlans, first.vlans, 'the same interface facts: the same bindings');
  t.deepEqual(first.vlans.map((b) => b.nic?.name), ['eth1', 'eth2']);

  const officeGone = { ...facts, links: facts.links.filter((l) => l.name !== 'eth1') };
  t.deepEqual(planDesired(config, officeGone, templates).vlans.map((b) => b.nic?.name), [undefined, 'eth2']);

  const moved = {
    ...facts,
    links: facts.links.map((l) => (l.name === 'eth2' ? { ...l, addresses: [{ address: '192.168.99.2', prefix: 24 }] } : l)),
  };
  t.deepEqual(planDesired(config, moved, templates).vlans.map((b) => b.nic?.name), ['eth1', undefined]);

  t.deepEqual(planDesired(config, facts, templates).vlans.map((b) => b.nic?.name), ['eth1', 'eth2'], 'and back');
  const routed = { ...facts, routed: [{ prefix: '10.20.0.0/16', dev: 'eth2' }] };
  t.deepEqual(planDesired(config, routed, templates).vlans.map((b) => b.routed), [undefined, ['10.20.0.0/16']], 'a network routed behind lab');

  // An uplink found by the default route alone (neither uplink.interface nor uplink.gateway).
  const byRoute: Config = { ...config, uplink: { nat: config.uplink.nat } };
  const viaEth0 = { ...facts, defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' } };
  t.is(planDesired(byRoute, viaEth0, templates).uplink.nic?.name, 'eth0');
  const { defaultRoute: _gone, ...noRoute } = viaEth0;
  t.is(planDesired(byRoute, noRoute, templates).uplink.nic, undefined);
  t.is(planDesired(byRoute, viaEth0, templates).uplink.nic?.name, 'eth0');
});
