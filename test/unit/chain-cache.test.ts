/**
 * The planner remembers rendered chains by everything they depend on, so a reload that changes one VLAN's policy
 * renders only that VLAN's chains. Observable as identity: a chain that was not rendered again is the very same
 * array of rules as in the plan before. And the result is always what a fresh render gives.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { forgetRenderedChains, planDesired, type Templates } from '../../src/plan/desired.js';
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
  t.true(afterNic.chains.every((c) => c.rules !== chain(before, c.name)?.rules), 'every template sees the NICs, so all chains render again');
  t.regex(chain(afterNic, 'VGW-FORWARD').rules.map((r) => r.line).join('\n'), /-i eth7 /);
});
