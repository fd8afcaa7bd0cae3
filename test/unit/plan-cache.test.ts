/**
 * The plan cache of the CLI (src/cli/plan-cache.ts). A state rendered by one run is what the next run with the
 * same inputs plans with, and it gives exactly the plan a fresh render gives (the golden restore text included).
 * A config validated by one run is what the next run with the same file gets, a relative rules.dir still resolved
 * against where the file is; an invalid config is never kept.
 * Anything that would render otherwise (another config, another template, other code) or a file that cannot be
 * trusted is not used. Each "run" here starts as a new process does: the config and templates loaded again, and
 * nothing rendered in memory.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, chown, lchown, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withPlanCache } from '../../src/cli/context.js';
import { DEFAULT_PLAN_CACHE, PlanCache, planCacheDir } from '../../src/cli/plan-cache.js';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { EMPTY_TABLE, type Facts } from '../../src/observe/facts.js';
import { forgetRenderedChains, planDesired, planEmpty, rememberDesired, useDesiredStore, type Templates } from '../../src/plan/desired.js';
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
function planWith(run: Run, store: PlanCache | undefined): Plan {
  useDesiredStore(store?.desired);
  try {
    const facts = { ...syntheticFacts(run.config), sets: new Map() };
    return diff(planDesired(run.config, facts, run.templates), facts);
  } finally {
    useDesiredStore(undefined);
  }
}

/** A whole run with the cache in `dir`: planned, then the cache written, as the CLI does at its end. */
async function runWith(dir: string, path = 'examples/lab.yaml', edit?: (c: Config) => Config): Promise<Plan> {
  const cache = new PlanCache(dir);
  const plan = planWith(await newRun(path, edit), cache);
  cache.flush();
  return plan;
}

const payloads = (plan: Plan) => plan.steps.flatMap((s) => (s.kind === 'table' ? [s.payload] : [])).join('');

async function cacheDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-plan-cache-')); // mode 0700, ours
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const stored = async (dir: string) => (await readdir(dir)).filter((f) => f.startsWith('desired-')).sort();

/** Rewrites every stored state's first rule line: if a run plans with the edit, it planned from the file. */
async function markStored(dir: string, mark: string): Promise<void> {
  for (const file of await stored(dir)) {
    const body = JSON.parse(await readFile(join(dir, file), 'utf8'));
    body.value.chains[0].lines[0] += ` ${mark}`;
    await writeFile(join(dir, file), JSON.stringify(body));
  }
}

const ONLY_PRIVATE = 'only a directory that root owns and nobody else can write to, reached through none that others can change, is used';

const fixtures = ['examples/lab.yaml', 'test/fixtures/policy.yaml', 'test/fixtures/snat.yaml', 'test/fixtures/user-templates.yaml', 'test/fixtures/waiting.yaml'];

for (const path of fixtures) {
  test.serial(`the next run plans exactly what a fresh render plans: ${path}`, async (t) => {
    const dir = await cacheDir(t);
    const fresh = planWith(await newRun(path), undefined);
    const first = new PlanCache(dir);
    t.deepEqual(planWith(await newRun(path), first), fresh);
    first.flush();
    t.is((await stored(dir)).length, 1);
    const next = planWith(await newRun(path), new PlanCache(dir));
    t.deepEqual(next, fresh);
    t.is(payloads(next), payloads(fresh));
  });
}

test.serial('the next run with the same inputs takes the state from the file; nothing is written for it again', async (t) => {
  const dir = await cacheDir(t);
  await runWith(dir);
  await markStored(dir, 'MARK');
  t.regex(payloads(await runWith(dir)), / MARK\n/);
  t.regex(await readFile(join(dir, (await stored(dir))[0]!), 'utf8'), /MARK/);
});

test.serial('another config, another template or other code renders afresh', async (t) => {
  const dir = await cacheDir(t);
  await runWith(dir);
  await markStored(dir, 'MARK');

  const changed = (c: Config): Config => ({ ...c, forwarding: { ...c.forwarding, default: 'drop' } });
  const otherConfig = planWith(await newRun('examples/lab.yaml', changed), new PlanCache(dir));
  t.deepEqual(otherConfig, planWith(await newRun('examples/lab.yaml', changed), undefined));
  t.notRegex(payloads(otherConfig), /MARK/);

  const run = await newRun();
  const edited = { ...run, templates: { ...run.templates, pair: { ...run.templates.pair, source: `${run.templates.pair.source}\n` } } };
  t.notRegex(payloads(planWith(edited, new PlanCache(dir))), /MARK/);

  t.notRegex(payloads(planWith(await newRun(), new PlanCache(dir, () => 'other code'))), /MARK/);
  t.regex(payloads(planWith(await newRun(), new PlanCache(dir))), /MARK/); // and the file was still there
});

test.serial('a file cut short, or not a state, is not used', async (t) => {
  const dir = await cacheDir(t);
  const fresh = planWith(await newRun(), undefined);
  await runWith(dir);
  const [file] = await stored(dir);
  const text = await readFile(join(dir, file!), 'utf8');
  await writeFile(join(dir, file!), text.slice(0, text.length >> 1));
  t.deepEqual(planWith(await newRun(), new PlanCache(dir)), fresh);
  const body = JSON.parse(text);
  await writeFile(join(dir, file!), JSON.stringify({ ...body, value: { ...body.value, chains: 'none' } }));
  t.deepEqual(planWith(await newRun(), new PlanCache(dir)), fresh);
});

test.serial('a directory others can write to is neither read nor written', async (t) => {
  const dir = await cacheDir(t);
  await runWith(dir);
  await markStored(dir, 'MARK');
  await chmod(dir, 0o777);
  t.notRegex(payloads(planWith(await newRun(), new PlanCache(dir))), /MARK/);
  await runWith(dir, 'test/fixtures/snat.yaml');
  t.is((await stored(dir)).length, 1);
  // And says why, for the supervisor to log once.
  const cache = new PlanCache(dir);
  planWith(await newRun('test/fixtures/policy.yaml'), cache);
  t.is(cache.flush(), `${dir} is writable by users other than root (${ONLY_PRIVATE})`);
});

/**
 * A shared directory like /tmp (sticky, writable by all) as the way to the cache: another user (nobody) can put a
 * link there, or own a directory on the way, and swap what it leads to between root's check and root's read. Root
 * alone, to give files to another user.
 */
const asRoot = process.getuid?.() === 0 ? test.serial : test.serial.skip;
const NOBODY = 65534;

async function sharedDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await cacheDir(t);
  await chmod(dir, 0o1777);
  return dir;
}

asRoot('a cache reached through a link another user made (in /tmp) is neither read nor written', async (t) => {
  const shared = await sharedDir(t);
  const real = join(shared, 'real');
  await mkdir(real, { mode: 0o700 });
  await runWith(real);
  await markStored(real, 'MARK');
  // nobody's link to root's own cache: it could as well lead to a directory of nobody's making, or to /etc
  const link = join(shared, 'vgw-cache');
  await symlink(real, link);
  await lchown(link, NOBODY, NOBODY);
  t.notRegex(payloads(planWith(await newRun(), new PlanCache(link))), /MARK/);
  const cache = new PlanCache(link);
  planWith(await newRun('test/fixtures/policy.yaml'), cache);
  t.is(cache.flush(), `${link} is a link that uid ${NOBODY} owns, not root (${ONLY_PRIVATE})`);
  t.is((await stored(real)).length, 1, 'nothing written through it');
  // root's own link to it is fine
  const own = join(shared, 'root-link');
  await symlink(real, own);
  t.regex(payloads(planWith(await newRun(), new PlanCache(own))), /MARK/);
});

asRoot('a cache in a directory another user owns, or can write to, is neither read nor written', async (t) => {
  const shared = await sharedDir(t);
  const theirs = join(shared, 'theirs');
  await mkdir(theirs, { mode: 0o755 });
  await chown(theirs, NOBODY, NOBODY); // nobody can rename root's cache away and put another in its place
  const inTheirs = join(theirs, 'cache');
  await mkdir(inTheirs, { mode: 0o700 });
  const open = join(shared, 'open');
  await mkdir(open);
  await chmod(open, 0o777); // writable by all, and not sticky
  const inOpen = join(open, 'cache');
  await mkdir(inOpen, { mode: 0o700 });
  for (const [dir, why] of [[inTheirs, `${theirs} belongs to uid ${NOBODY}, not root`], [inOpen, `${open}, on the way to ${inOpen}, is writable by users other than root (and not sticky, as /tmp is)`]] as const) {
    await runWith(dir);
    t.deepEqual(await readdir(dir), [], 'nothing written there');
    const good = await cacheDir(t);
    await runWith(good);
    await markStored(good, 'MARK');
    for (const file of await stored(good)) await writeFile(join(dir, file), await readFile(join(good, file)));
    t.notRegex(payloads(planWith(await newRun(), new PlanCache(dir))), /MARK/, dir);
    const cache = new PlanCache(dir);
    planWith(await newRun('test/fixtures/policy.yaml'), cache);
    t.is(cache.flush(), `${why} (${ONLY_PRIVATE})`);
  }
});

asRoot('a cache directory that does not exist yet is made one directory at a time, never through a link another user made', async (t) => {
  const shared = await sharedDir(t);
  const target = await cacheDir(t);
  const link = join(shared, 'vlan-gateway');
  await symlink(target, link);
  await lchown(link, NOBODY, NOBODY);
  const cache = new PlanCache(join(link, 'plan-cache'));
  planWith(await newRun(), cache);
  t.is(cache.flush(), `${link} is a link that uid ${NOBODY} owns, not root (${ONLY_PRIVATE})`);
  t.deepEqual(await readdir(target), [], 'no directory made where the link leads');
  // Where nothing is in the way: made, 0700, and used.
  const fresh = join(shared, 'run', 'vlan-gateway', 'plan-cache');
  await runWith(fresh);
  t.is((await stat(fresh)).mode & 0o777, 0o700);
  t.is((await stored(fresh)).length, 1);
});

test.serial('a cache that cannot be written says why (a read-only /run); one written, or with nothing due, says nothing', async (t) => {
  const dir = await cacheDir(t);
  const cache = new PlanCache(dir);
  planWith(await newRun(), cache);
  t.is(cache.flush(), undefined, 'written');
  t.is(cache.flush(), undefined, 'nothing due');
  const blocked = new PlanCache(join(dir, 'file', 'sub')); // a path through a regular file: mkdir fails (ENOTDIR)
  await writeFile(join(dir, 'file'), '');
  planWith(await newRun('test/fixtures/snat.yaml'), blocked);
  t.regex(blocked.flush() ?? '', /ENOTDIR|not a directory/);
});

// A full /run (a small tmpfs): root only, to mount one of our own.
(process.getuid?.() === 0 ? test.serial : test.serial.skip)('a cache that runs out of space says so and leaves no file cut short behind', async (t) => {
  const dir = await cacheDir(t);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k,mode=700', 'tmpfs', dir]); // one page: the config's file fits, the state does not
  t.teardown(() => execFileSync('umount', [dir]));
  const cache = new PlanCache(dir);
  planWith(await newRun(), cache);
  t.is(cache.flush(), 'no space left');
  t.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.tmp')), []);
});

test.serial('the newest four states are kept, and a temporary file a run left behind is removed', async (t) => {
  const dir = await cacheDir(t);
  const abandoned = join(dir, 'desired-abandoned.json.1234.tmp');
  await writeFile(abandoned, '{');
  await utimes(abandoned, new Date(Date.now() - 120_000), new Date(Date.now() - 120_000));
  for (let i = 0; i < 10; i++) await runWith(dir, 'examples/lab.yaml', (c) => ({ ...c, uplink: { ...c.uplink, gateway: `192.0.2.${i + 1}` } }));
  t.is((await stored(dir)).length, 4);
  t.false((await readdir(dir)).includes('desired-abandoned.json.1234.tmp'));
});

// A run killed between a write and its rename (kill -9, the OOM killer) left its temporary, and a start within the
// minute (docker restart) left it too, until a flush a minute later.
test.serial('a temporary whose writer is gone is removed at the next flush at once; one a live process may be writing stays', async (t) => {
  const dir = await cacheDir(t);
  const gone = spawnSync('true').pid; // exited, and reaped
  const names = {
    gone: `desired-killed.json.${gone}.tmp`,
    // A container restarted with the same pid as the run that left it: this process writes and renames at once.
    ours: `desired-restarted.json.${process.pid}.tmp`,
    live: `desired-writing.json.${process.ppid}.tmp`,
  };
  // Written before this process started, as a killed run's are.
  const before = new Date(performance.timeOrigin - 5000);
  for (const name of Object.values(names)) {
    await writeFile(join(dir, name), '{');
    await utimes(join(dir, name), before, before);
  }
  // Being written now, in a plan cache on a volume two containers share: by a run of another PID namespace, whose pid
  // is no process here, or is this process's own (the gateway has the same pid in each container).
  const writing = [`desired-other.json.${gone}.tmp`, `desired-another.json.${process.pid}.tmp`];
  for (const name of writing) await writeFile(join(dir, name), '{');
  await runWith(dir);
  const left = (await readdir(dir)).filter((f) => f.endsWith('.tmp')).sort();
  t.deepEqual(left, [names.live, ...writing].sort());
});

test('VLAN_GATEWAY_PLAN_CACHE: a directory, off, or the default', (t) => {
  t.is(planCacheDir({ VLAN_GATEWAY_PLAN_CACHE: '/tmp/x' }), '/tmp/x');
  t.is(planCacheDir({ VLAN_GATEWAY_PLAN_CACHE: 'off' }), undefined);
  t.is(planCacheDir({}), DEFAULT_PLAN_CACHE);
});

/** A copy of a config file in a directory of its own (a relative rules.dir then points elsewhere). */
async function copyConfig(t: { teardown(fn: () => Promise<void>): void }, from: string, text?: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-plan-cache-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'gateway.yaml');
  await writeFile(path, text ?? await readFile(root(from), 'utf8'));
  return path;
}

const configFiles = async (dir: string) => (await readdir(dir)).filter((f) => f.startsWith('config-'));

test.serial('the next run with the same config file gets the config as validated, without parsing it again', async (t) => {
  const dir = await cacheDir(t);
  const path = await copyConfig(t, 'examples/lab.yaml');
  const fresh = await loadConfig(path);
  const first = new PlanCache(dir);
  t.deepEqual(await loadConfig(path, first.config), fresh);
  first.flush();
  t.is((await configFiles(dir)).length, 1);
  t.deepEqual(await loadConfig(path, new PlanCache(dir).config), fresh);

  // An edit to the kept config shows: the second run took it from the file, not from the YAML.
  const [file] = await configFiles(dir);
  const body = JSON.parse(await readFile(join(dir, file!), 'utf8'));
  body.value.vlans[0].name = 'kept';
  await writeFile(join(dir, file!), JSON.stringify(body));
  t.is((await loadConfig(path, new PlanCache(dir).config)).config.vlans[0]!.name, 'kept');
  // Another text (one more space) is parsed and validated afresh.
  await writeFile(path, `${await readFile(path, 'utf8')}\n`);
  t.is((await loadConfig(path, new PlanCache(dir).config)).config.vlans[0]!.name, fresh.config.vlans[0]!.name);
});

test.serial('a kept config with a relative rules.dir resolves it against where the file is now', async (t) => {
  const dir = await cacheDir(t);
  const text = (await readFile(root('test/fixtures/user-templates.yaml'), 'utf8'));
  const a = await copyConfig(t, '', text);
  const b = await copyConfig(t, '', text);
  const first = new PlanCache(dir);
  const fromA = await loadConfig(a, first.config);
  first.flush();
  const fromB = await loadConfig(b, new PlanCache(dir).config);
  t.is((await configFiles(dir)).length, 1, 'one text, one kept config');
  t.not(fromA.config.rules.dir, fromB.config.rules.dir);
  t.deepEqual(fromB, await loadConfig(b));
});

test.serial('an invalid config is never kept: each run reports its problems', async (t) => {
  const dir = await cacheDir(t);
  const path = await copyConfig(t, '', 'vlans:\n  - {name: Office, id: 10, subnet: 192.168.10.0/24, gateway: 192.168.30.1}\n');
  for (let run = 0; run < 2; run++) {
    const cache = new PlanCache(dir);
    await t.throwsAsync(loadConfig(path, cache.config), { message: /vlans\[0\]/ });
    cache.flush();
  }
  t.deepEqual(await readdir(dir), []);
});

test.serial('rememberDesired keeps a state under the key of the inputs it was made from; a state planDesired did not make is not kept', async (t) => {
  const dir = await cacheDir(t);
  // The supervisor: plans without the store (later passes), then keeps its last state at stop.
  const run = await newRun('test/fixtures/policy.yaml');
  const facts = { ...syntheticFacts(run.config), sets: new Map() };
  const last = planDesired(run.config, facts, run.templates);
  const atStop = new PlanCache(dir);
  rememberDesired(atStop.desired, last);
  rememberDesired(atStop.desired, planEmpty(run.config, { ...facts, tables: { filter: EMPTY_TABLE, nat: EMPTY_TABLE } } as Facts));
  atStop.flush();
  t.is((await stored(dir)).length, 1, 'the empty state is not kept');
  // The next start, with the same inputs, finds it (and plans what a fresh render plans).
  const next = new PlanCache(dir);
  const plan = planWith(await newRun('test/fixtures/policy.yaml'), next);
  t.is(next.hits.desired, 1);
  t.deepEqual(plan, planWith(await newRun('test/fixtures/policy.yaml'), undefined));
});

test.serial('a state kept again that was read whole is only marked recent; a file that could not be used is written anew', async (t) => {
  const dir = await cacheDir(t);
  await runWith(dir);
  const [file] = await stored(dir);
  const path = join(dir, file!);
  await utimes(path, new Date(1_000_000), new Date(1_000_000));
  const before = await readFile(path, 'utf8');
  // A supervisor that started from the file and keeps the same state at its stop.
  const run = await newRun();
  const cache = new PlanCache(dir);
  useDesiredStore(cache.desired);
  const desired = planDesired(run.config, { ...syntheticFacts(run.config), sets: new Map() }, run.templates);
  useDesiredStore(undefined);
  t.is(cache.hits.desired, 1);
  rememberDesired(cache.desired, desired);
  cache.flush();
  t.is(await readFile(path, 'utf8'), before);
  t.true((await stat(path)).mtimeMs > 1_000_000_000, 'marked as recent, for pruning');
  await writeFile(path, before.slice(0, before.length / 2)); // cut short: not used, so rendered and written again
  const again = new PlanCache(dir);
  planWith(await newRun(), again);
  again.flush();
  t.is(again.hits.desired, 0);
  t.is(await readFile(path, 'utf8'), before);
});

// plan, apply and down went on without the cache and said nothing: a cache set where others can change it (here a
// directory anyone can write to) is a mistake to be told, as the supervisor tells it. A missing directory is not.
test.serial('a one-shot command says once that the plan cache is not used where others can change it; nothing where it is fine', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'vgw-plan-cache-open-'));
  const open = join(base, 'open');
  await mkdir(open);
  await chmod(open, 0o777);
  const was = process.env.VLAN_GATEWAY_PLAN_CACHE;
  const write = process.stderr.write.bind(process.stderr);
  let said = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    said += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    process.env.VLAN_GATEWAY_PLAN_CACHE = open;
    t.is(await withPlanCache(async () => 'planned'), 'planned');
    process.env.VLAN_GATEWAY_PLAN_CACHE = join(base, 'fine');
    await withPlanCache(async () => 'planned');
  } finally {
    process.stderr.write = write;
    if (was === undefined) delete process.env.VLAN_GATEWAY_PLAN_CACHE;
    else process.env.VLAN_GATEWAY_PLAN_CACHE = was;
    await rm(base, { recursive: true, force: true });
  }
  t.is(said, `vlan-gateway: warning: the plan cache ${open} is not used: ${open} is writable by users other than root (${ONLY_PRIVATE})\n`);
});

// A supervisor flushes its plan cache at its start and at its stop only; every reload in between that read a new text
// of the config remembered it for the stop's flush. A supervisor reloaded for months held every config it had ever
// reloaded in memory (about 20 KB apiece at 100 VLANs), and its stop wrote them all, to keep the newest few.
test('a supervisor\'s reloads between two flushes hold only the configs the flush keeps: the newest, found by the next start', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-plan-cache-reloads-'));
  try {
    const script = `
      import { writeFileSync } from 'node:fs';
      import { join } from 'node:path';
      import { PlanCache } from './src/cli/plan-cache.ts';
      import { loadConfig } from './src/config/load.ts';
      const [dir] = process.argv.slice(1);
      const path = join(dir, 'gateway.yaml');
      const vlans = Array.from({ length: 100 }, (_, i) => '  - {name: v' + i + ', id: ' + (i + 10) + ', subnet: 10.' + i + '.0.0/24, gateway: 10.' + i + '.0.1}').join('\\n');
      const reload = async (cache, n) => {
        writeFileSync(path, '# reload ' + n + '\\nuplink: {interface: eth0, gateway: 172.17.0.1}\\nvlans:\\n' + vlans + '\\n');
        return loadConfig(path, cache.config, { fileOnly: true });
      };
      const cache = new PlanCache(join(dir, 'cache'));
      for (let n = 0; n < 20; n++) await reload(cache, n);
      globalThis.gc();
      const before = process.memoryUsage().heapUsed;
      for (let n = 20; n < 220; n++) await reload(cache, n);
      globalThis.gc();
      const grewKb = Math.round((process.memoryUsage().heapUsed - before) / 1024);
      cache.flush(); // the stop
      const next = new PlanCache(join(dir, 'cache')); // the next start, on the file as the last reload left it
      await loadConfig(path, next.config, { fileOnly: true });
      console.log(JSON.stringify({ grewKb, hit: next.hits.config }));
    `;
    const stdout = execFileSync(process.execPath, ['--expose-gc', '--import=tsx', '--input-type=module', '-e', script, dir], { cwd: root(''), encoding: 'utf8', timeout: 60_000 });
    const { grewKb, hit } = JSON.parse(stdout) as { grewKb: number; hit: number };
    t.log(`the heap grew by ${grewKb} KB over 200 reloads`);
    t.is(hit, 1, 'the next start finds the config the last reload read');
    t.true(grewKb < 1024, `the heap grew by ${grewKb} KB over 200 reloads`);
    t.is((await readdir(join(dir, 'cache'))).filter((f) => f.startsWith('config-')).length, 4, 'the newest four configs are on disk');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
