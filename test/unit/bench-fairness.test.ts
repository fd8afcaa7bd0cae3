/**
 * The benchmark compares like with like (issue 2 §7): the raw restore and the per-rule commands do the work of the
 * product's full apply, neither more nor less, and each one-VLAN change is a new policy for one VLAN.
 */
import test from 'ava';
import { holdingsOf, perRuleScript, sameHoldings, setScript, tablePayloads } from '../../bench/apply-bench.js';
import { generateConfig, SIZES, vlanName } from '../../bench/configs.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import { planFor } from '../../src/reconcile/once.js';
import { loadTemplates } from '../../src/template/load.js';

const templates = await loadTemplates();

test('every variant of the one-VLAN change differs from the base and from each other in that VLAN\'s rules alone', (t) => {
  const shape = SIZES['1k'];
  const rulesOf = (v?: number) => (v === undefined ? generateConfig(shape) : generateConfig(shape, 10, v)).forwarding.rules;
  const base = rulesOf();
  const variants = [1, 2, 14, 40].map((v) => rulesOf(v));
  for (const rules of variants) {
    t.is(rules.length, base.length);
    const differing = rules.flatMap((r, i) => (JSON.stringify(r) === JSON.stringify(base[i]) ? [] : [r.from]));
    t.deepEqual([...new Set(differing)], [vlanName(10)]);
  }
  // Each sample of (e) a policy the planner has not rendered before: no two variants share a port.
  const ports = variants.map((rules) => rules.filter((r) => r.from === vlanName(10)).map((r) => r.ports).join(','));
  t.is(new Set([...ports, base.filter((r) => r.from === vlanName(10)).map((r) => r.ports).join(',')]).size, ports.length + 1);
  t.false(variants.flat().some((r) => r.ports === '5201'), 'the forwarding benchmark\'s port stays unmatched');
  t.throws(() => generateConfig(shape, 10, 41), { message: 'variant 41: 1 to 40' });
});

test('the raw payloads and the per-rule commands make what the plan makes, and a difference stops the benchmark', (t) => {
  const config = generateConfig(SIZES['1k']);
  const plan = planFor(config, { ...syntheticFacts(config), sets: new Map() }, templates, 'up');
  const payloads = tablePayloads(plan);
  const want = holdingsOf(payloads, setScript(plan));
  t.deepEqual(payloads.map((p) => p.table), ['filter', 'nat']);
  t.true(want.rules > 1000 && want.chains > 0 && want.sets > 0 && want.members > 0);
  // One command per chain made and per rule line, no more, no fewer.
  t.is(perRuleScript(payloads).calls, want.rules + want.chains);
  t.notThrows(() => sameHoldings('(b) the raw restores', { ...want }, want));
  const error = t.throws(() => sameHoldings('(b) the raw restores', { ...want, members: want.members - 1 }, want));
  t.is(error.message, `(b) the raw restores left ${want.rules} rules, ${want.chains} VGW- chains, ${want.sets} sets, ${want.members - 1} set members, `
    + `where the payloads make ${want.rules} rules, ${want.chains} VGW- chains, ${want.sets} sets, ${want.members} set members: not the same work`);
});

test('holdings count a payload\'s rule lines and declared chains, and a set script\'s sets and members', (t) => {
  const text = '*filter\n:VGW-FORWARD - [0:0]\n-A VGW-FORWARD -j ACCEPT\n-I FORWARD 1 -j VGW-FORWARD\nCOMMIT\n';
  t.deepEqual(holdingsOf([{ table: 'filter', text }], 'create VGW-S hash:net\nadd VGW-S 10.64.1.0/24 -exist\n'), { rules: 2, chains: 1, sets: 1, members: 1 });
});
