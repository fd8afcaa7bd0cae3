/**
 * The plan cache's file form of a desired state (src/cli/packed-desired.ts): what is packed comes back exactly as the
 * state the planner made (as its JSON gives it: every chain, rule line, hash, target and meaning, every set member
 * and its zones); a state that would not come back exactly is not packed; a file of any other shape gives nothing.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { packDesired, unpackDesired, type PackedDesired } from '../../src/cli/packed-desired.js';
import { loadConfig } from '../../src/config/load.js';
import { forgetRenderedChains, planDesired, type StoredDesired } from '../../src/plan/desired.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import { loadTemplates } from '../../src/template/load.js';

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));

/** A state as the planner makes it for a fixture, every NIC present, with ipset (so with sets). */
async function stateOf(path: string): Promise<StoredDesired> {
  forgetRenderedChains();
  const { config } = await loadConfig(root(path));
  const { vlans: _v, uplink: _u, ...stored } = planDesired(config, { ...syntheticFacts(config), sets: new Map() }, await loadTemplates(config.rules.dir));
  return stored;
}

/** Through a file and back, as a run writes it and the next one reads it. */
const throughFile = (packed: PackedDesired | undefined) => unpackDesired(JSON.parse(JSON.stringify(packed)));
/** What the state was as a file before it was packed: its JSON. */
const asJson = (state: StoredDesired) => JSON.parse(JSON.stringify(state)) as StoredDesired;

for (const path of ['examples/lab.yaml', 'test/fixtures/policy.yaml', 'test/fixtures/snat.yaml', 'test/fixtures/user-templates.yaml', 'test/fixtures/waiting.yaml']) {
  test(`a state comes back exactly: ${path}`, async (t) => {
    const state = await stateOf(path);
    t.true(state.chains.some((c) => c.rules.some((r) => r.meaning)), 'meanings are part of it');
    t.true(state.sets.length > 0, 'sets are part of it');
    t.deepEqual(throughFile(packDesired(state)), asJson(state));
  });
}

test('each member keeps its own zones, and each rule its own meaning, target and hash', async (t) => {
  const state = await stateOf('test/fixtures/policy.yaml');
  const back = throughFile(packDesired(state))!;
  const accounting = state.sets.find((s) => s.role === 'accounting')!;
  t.deepEqual(back.sets.find((s) => s.name === accounting.name)!.members, accounting.members.map((m) => ({ ...m })));
  const rules = state.chains.flatMap((c) => c.rules);
  const backRules = back.chains.flatMap((c) => c.rules);
  t.deepEqual(backRules.map((r) => [r.line, r.hash, r.target, r.meaning]), rules.map((r) => [r.line, r.hash, r.target, r.meaning]));
});

test('a state that would not come back exactly is not packed', async (t) => {
  const state = await stateOf('examples/lab.yaml');
  const [chain, ...others] = state.chains;
  const withRule = (rule: object) => ({ ...state, chains: [{ ...chain!, rules: [rule as never, ...chain!.rules.slice(1)] }, ...others] });
  const first = chain!.rules[0]!;
  t.not(packDesired(state), undefined);
  t.is(packDesired(withRule({ ...first, hash: 'AAAAAAAAAAAAAAAA' })), undefined, 'a line that does not carry its hash');
  t.is(packDesired(withRule({ ...first, line: first.line.replace('-m comment', '-m  comment') })), undefined, 'a line not as the planner writes it');
  t.is(packDesired(withRule({ ...first, counters: '[1:2]' })), undefined, 'a field of a rule this file does not know');
  t.is(packDesired({ ...state, extra: 1 } as StoredDesired), undefined, 'a field of the state this file does not know');
  const [set, ...rest] = state.sets;
  t.is(packDesired({ ...state, sets: [{ ...set!, maxelem: 5 } as never, ...rest] }), undefined, 'a field of a set this file does not know');
});

test('a file of another shape gives nothing: cut short, lists of other lengths, a meaning that is not there, an old format', async (t) => {
  const state = await stateOf('test/fixtures/policy.yaml');
  const packed = JSON.parse(JSON.stringify(packDesired(state))) as { chains: Array<Record<string, unknown[]>>; sets: Array<Record<string, unknown[]>>; meanings: unknown[] };
  const edit = (change: (p: typeof packed) => void) => {
    const copy = structuredClone(packed);
    change(copy);
    return unpackDesired(copy);
  };
  t.not(edit(() => {}), undefined);
  t.is(edit((p) => p.chains[0]!.targets!.pop()), undefined);
  t.is(edit((p) => p.chains[0]!.meanings!.push(-1)), undefined);
  t.is(edit((p) => { p.chains.find((c) => c.meanings!.some((n) => n !== -1))!.meanings![0] = p.meanings.length; }), undefined);
  t.is(edit((p) => { p.chains[0]!.lines![0] = 'ACCEPT'; }), undefined);
  t.is(edit((p) => p.sets[0]!.from!.pop()), undefined);
  t.is(edit((p) => { (p as unknown as Record<string, unknown>).packed = 2; }), undefined);
  t.is(unpackDesired(JSON.parse(JSON.stringify(state))), undefined, 'a state as objects (the format before)');
  t.is(unpackDesired(null), undefined);
});
