/**
 * The render cache of the CLI (src/cli/desired-store.ts): a state rendered by one run is what the next run with the
 * same inputs plans with, and it gives exactly the plan a fresh render gives (the golden restore text included).
 * Anything that would render otherwise (another config, another template, other code) or a file that cannot be
 * trusted is not used. Each "run" here starts as a new process does: the config and templates loaded again, and
 * nothing rendered in memory.
 */
import test from 'ava';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_RENDER_CACHE, FileDesiredStore, renderCacheDir } from '../../src/cli/desired-store.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { forgetRenderedChains, planDesired, useDesiredStore, type Templates } from '../../src/plan/desired.js';
import { diff } from '../../src/plan/diff.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import type { Plan } from '../../src/plan/types.js';
import { loadTemplates } from '../../src/template/load.js';

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));

interface Run {
  readonly config: Config;
  readonly templates: Templates;
}

/** What a new process has: the config and templates read from disk, nothing rendered. */
async function newRun(path = 'examples/lab.yaml', edit: (c: Config) => Config = (c) => c): Promise<Run> {
  forgetRenderedChains();
  const config = edit((await loadConfig(root(path))).config);
  return { config, templates: await loadTemplates(config.rules.dir) };
}

/** One run's plan against synthetic facts (with the ipset tool, so the sets are part of the state too). */
function planWith(run: Run, store: FileDesiredStore | undefined): Plan {
  useDesiredStore(store);
  try {
    const facts = { ...syntheticFacts(run.config), sets: new Map() };
    return diff(planDesired(run.config, facts, run.templates), facts);
  } finally {
    useDesiredStore(undefined);
  }
}

const payloads = (plan: Plan) => plan.steps.flatMap((s) => (s.kind === 'table' ? [s.payload] : [])).join('');

async function cacheDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-render-cache-')); // mode 0700, ours
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const stored = async (dir: string) => (await readdir(dir)).filter((f) => f.startsWith('desired-')).sort();

/** Rewrites every stored state's first rule line: if a run plans with the edit, it planned from the file. */
async function markStored(dir: string, mark: string): Promise<void> {
  for (const file of await stored(dir)) {
    const body = JSON.parse(await readFile(join(dir, file), 'utf8'));
    body.desired.chains[0].rules[0].line += ` ${mark}`;
    await writeFile(join(dir, file), JSON.stringify(body));
  }
}

const fixtures = ['examples/lab.yaml', 'test/fixtures/policy.yaml', 'test/fixtures/snat.yaml', 'test/fixtures/user-templates.yaml', 'test/fixtures/waiting.yaml'];

for (const path of fixtures) {
  test.serial(`the next run plans exactly what a fresh render plans: ${path}`, async (t) => {
    const dir = await cacheDir(t);
    const fresh = planWith(await newRun(path), undefined);
    const first = new FileDesiredStore(dir);
    t.deepEqual(planWith(await newRun(path), first), fresh);
    first.flush();
    t.is((await stored(dir)).length, 1);
    const next = planWith(await newRun(path), new FileDesiredStore(dir));
    t.deepEqual(next, fresh);
    t.is(payloads(next), payloads(fresh));
  });
}

test.serial('the next run with the same inputs takes the state from the file; nothing is written for it again', async (t) => {
  const dir = await cacheDir(t);
  const first = new FileDesiredStore(dir);
  planWith(await newRun(), first);
  first.flush();
  await markStored(dir, 'MARK');
  const next = new FileDesiredStore(dir);
  t.regex(payloads(planWith(await newRun(), next)), / MARK\n/);
  next.flush();
  t.regex(await readFile(join(dir, (await stored(dir))[0]!), 'utf8'), /MARK/);
});

test.serial('another config, another template or other code renders afresh', async (t) => {
  const dir = await cacheDir(t);
  const first = new FileDesiredStore(dir);
  planWith(await newRun(), first);
  first.flush();
  await markStored(dir, 'MARK');

  const changed = (c: Config): Config => ({ ...c, forwarding: { ...c.forwarding, default: 'drop' } });
  const otherConfig = planWith(await newRun('examples/lab.yaml', changed), new FileDesiredStore(dir));
  t.deepEqual(otherConfig, planWith(await newRun('examples/lab.yaml', changed), undefined));
  t.notRegex(payloads(otherConfig), /MARK/);

  const run = await newRun();
  const edited = { ...run, templates: { ...run.templates, pair: { ...run.templates.pair, source: `${run.templates.pair.source}\n` } } };
  t.notRegex(payloads(planWith(edited, new FileDesiredStore(dir))), /MARK/);

  t.notRegex(payloads(planWith(await newRun(), new FileDesiredStore(dir, () => 'other code'))), /MARK/);
  t.regex(payloads(planWith(await newRun(), new FileDesiredStore(dir))), /MARK/); // and the file was still there
});

test.serial('a file cut short, or not a state, is not used', async (t) => {
  const dir = await cacheDir(t);
  const fresh = planWith(await newRun(), undefined);
  const first = new FileDesiredStore(dir);
  planWith(await newRun(), first);
  first.flush();
  const [file] = await stored(dir);
  const text = await readFile(join(dir, file!), 'utf8');
  await writeFile(join(dir, file!), text.slice(0, text.length >> 1));
  t.deepEqual(planWith(await newRun(), new FileDesiredStore(dir)), fresh);
  const body = JSON.parse(text);
  await writeFile(join(dir, file!), JSON.stringify({ ...body, desired: { ...body.desired, chains: 'none' } }));
  t.deepEqual(planWith(await newRun(), new FileDesiredStore(dir)), fresh);
});

test.serial('a directory others can write to is neither read nor written', async (t) => {
  const dir = await cacheDir(t);
  const first = new FileDesiredStore(dir);
  planWith(await newRun(), first);
  first.flush();
  await markStored(dir, 'MARK');
  await chmod(dir, 0o777);
  t.notRegex(payloads(planWith(await newRun(), new FileDesiredStore(dir))), /MARK/);
  const other = new FileDesiredStore(dir);
  planWith(await newRun('test/fixtures/snat.yaml'), other);
  other.flush();
  t.is((await stored(dir)).length, 1);
});

test.serial('the newest eight states are kept', async (t) => {
  const dir = await cacheDir(t);
  for (let i = 0; i < 10; i++) {
    const store = new FileDesiredStore(dir);
    planWith(await newRun('examples/lab.yaml', (c) => ({ ...c, uplink: { ...c.uplink, gateway: `192.0.2.${i + 1}` } })), store);
    store.flush();
  }
  t.is((await stored(dir)).length, 8);
});

test('VLAN_GATEWAY_RENDER_CACHE: a directory, off, or the default', (t) => {
  t.is(renderCacheDir({ VLAN_GATEWAY_RENDER_CACHE: '/tmp/x' }), '/tmp/x');
  t.is(renderCacheDir({ VLAN_GATEWAY_RENDER_CACHE: 'off' }), undefined);
  t.is(renderCacheDir({}), DEFAULT_RENDER_CACHE);
});
