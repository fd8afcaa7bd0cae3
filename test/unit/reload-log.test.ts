/**
 * What `vlan-gateway run` logs about its reloads (src/cli/reload.ts), as an operator reads it, and what /status says of
 * them: the pieces `run` wires together (Reloads and the Supervisor, with its real file watch), the semantic netfilter fake as the namespace, and a
 * real config file and rules.dir in a scratch directory.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { pino } from 'pino';
import { DriftSchedule } from '../../src/cli/drift-schedule.js';
import { loadChecked } from '../../src/cli/load-checked.js';
import { Reloads } from '../../src/cli/reload.js';
import type { RunArgs } from '../../src/cli/run-options.js';
import { holdSignals } from '../../src/cli/signals.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { statusDocument, type ReloadState } from '../../src/reconcile/status.js';
import { Supervisor } from '../../src/reconcile/supervisor.js';
import { FakeNetns } from '../fakes/netfilter.js';
import { sleep, until } from '../helpers/wait.js';

const labText = await readFile(fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url)), 'utf8');
// The owner match reached from PREROUTING: iptables' parser takes it, the kernel (and the fake) refuse it at commit.
const REFUSED_TEMPLATE = await readFile(fileURLToPath(new URL('../fixtures/broken-templates/kernel-rejects/nat/prerouting.hbs', import.meta.url)), 'utf8');

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

/** A running supervisor with reloads, on `config` (its rules.dir's templates written first: `templates`). */
async function rig(t: ExecutionContext, templates: Readonly<Record<string, string>>, options: { backoffMaxMs?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'vgw-reload-log-'));
  const path = join(dir, 'gateway.yaml');
  const rules = join(dir, 'rules');
  for (const [file, text] of Object.entries(templates)) {
    await mkdir(join(rules, file, '..'), { recursive: true });
    await writeFile(join(rules, file), text);
  }
  await writeFile(path, `${labText}rules:\n  dir: ${rules}\n`);
  const ns = new FakeNetns({
    links: [{ name: 'eth0', addresses: ['203.0.113.2/24'] }, { name: 'eth1', addresses: ['192.168.10.2/24'] }, { name: 'eth2', addresses: ['192.168.20.2/24'] }],
    defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' },
    dockerDns: true,
  });
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  const metrics = new Metrics('0.0.0-test');
  const supervisor = new Supervisor(ns, metrics, log, await loadChecked(path, undefined), {
    minIntervalMs: 10, healthTimeoutMs: 60_000, backoffInitialMs: 20, backoffMaxMs: options.backoffMaxMs ?? 80,
  });
  const state: ReloadState = { errors: [], reads: 0 };
  const reloads = new Reloads({
    path, args: { config: path } as RunArgs, log, metrics, supervisor, planCache: undefined, rulesCheck: { runner: ns, backend: () => 'nft' },
    state, driftSchedule: new DriftSchedule('*/30 * * * * *', 5000, supervisor), listen: '127.0.0.1:0',
    address: { address: '127.0.0.1', port: 0, family: 'IPv4' },
  });
  const early = holdSignals();
  t.teardown(async () => {
    await reloads.close();
    await supervisor.stop();
    early.release();
    await rm(dir, { recursive: true, force: true });
  });
  await reloads.start(early);
  /** The passes that failed so far (vlan_gateway_reconciles_total{result="failure"}). */
  const failedPasses = async () => (await metrics.reconciles.get()).values.filter((v) => v.labels.result === 'failure').reduce((n, v) => n + v.value, 0);
  return { path, rules, logs, supervisor, state, failedPasses };
}

test('a reload for an edit of a template of rules.dir says which template changed, not the config file', async (t) => {
  const r = await rig(t, { 'filter/forward.hbs': '-p tcp --dport 81 -j DROP\n', 'nat/postrouting.hbs': '-p udp --dport 9 -j ACCEPT\n' });
  r.supervisor.trigger('start');
  await until('the start pass', () => r.supervisor.lastRecord?.result === 'success');
  const template = join(r.rules, 'filter', 'forward.hbs');
  await writeFile(template, '-p tcp --dport 82 -j DROP\n');
  await until('the reload', () => r.logs.some((l) => l.msg === 'config reloaded'));
  t.like(r.logs.find((l) => l.msg === 'config reloaded'), { level: 30, why: `${template} changed`, changed: [template] });

  // The config file itself: named as such.
  const from = r.logs.length;
  await writeFile(r.path, `${labText.replace('id: 20', 'id: 21')}rules:\n  dir: ${r.rules}\n`);
  await until('the second reload', () => r.logs.slice(from).some((l) => l.msg === 'config reloaded'));
  t.like(r.logs.slice(from).find((l) => l.msg === 'config reloaded'), { why: `${r.path} changed`, changed: [r.path] });
});


// At a start, no config has applied: every pass fails, retried with backoff. Each retry that was logged (once per 30 s)
// was two error lines for one refusal: the supervisor's "reconcile failed; previous rules left in place" (with the
// retry) and the reload's "the kernel refuses a rule of rules.dir (…); … every pass fails until the template is fixed".
test('a template the kernel refuses at the start is one error line for its retries, saying the retry once', async (t) => {
  const r = await rig(t, { 'nat/prerouting.hbs': REFUSED_TEMPLATE }, { backoffMaxMs: 40 });
  r.supervisor.trigger('start');
  const deadline = Date.now() + 5000;
  while ((await r.failedPasses()) < 4 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  t.true(await r.failedPasses() >= 4);
  const errors = r.logs.filter((l) => l.level >= 50);
  t.is(errors.length, 1, JSON.stringify(errors.map((l) => l.msg)));
  t.regex(errors[0]!.msg, /^the kernel refuses a rule of rules\.dir\b.*; no config has applied yet: the pass is retried with backoff, at most 0\.04 s apart, until the template is fixed$/);
  t.like(errors[0], { trigger: 'start', failures: 1, retryInMs: 20, chain: 'VGW-USER-PREROUTING', err: { type: 'ApplyError', rolledBack: true } });
  t.is(r.state.result, 'failure', '/status says it too');
});

// The refusal's line carried path: gateway.yaml (the rule is in a template of rules.dir) and line: the restore text's
// line ("-A VGW-USER-PREROUTING -m comment --comment vgw:… -m owner …"), which is in no file an operator has.
test('a refused rule is said at its template and the line there; the restore text\'s line is restoreLine', async (t) => {
  const r = await rig(t, { 'nat/prerouting.hbs': REFUSED_TEMPLATE });
  r.supervisor.trigger('start');
  await until('the refusal', () => r.logs.some((l) => l.level >= 50));
  const template = join(r.rules, 'nat', 'prerouting.hbs');
  const [refusal] = r.logs.filter((l) => l.level >= 50);
  t.is(refusal!.msg, `the kernel refuses a rule of rules.dir, ${template} line 3 (VGW-USER-PREROUTING rule 1): -m owner --uid-owner 0 -j ACCEPT; `
    + 'no config has applied yet: the pass is retried with backoff, at most 0.08 s apart, until the template is fixed');
  t.like(refusal, { path: template, line: 3, chain: 'VGW-USER-PREROUTING', rule: 1 });
  t.regex(String(refusal!.restoreLine), /^-A VGW-USER-PREROUTING -m comment --comment vgw:\S+ -m owner --uid-owner 0 -j ACCEPT$/);
  t.is(r.state.errors[0], `the kernel refuses a rule of rules.dir, ${template} line 3 (VGW-USER-PREROUTING rule 1): -m owner --uid-owner 0 -j ACCEPT`);
});

// A rule that a loop or a value made is no line of the template as written: named by its place among the rules the
// template renders (its number in the chain), with no line.
test('a refused rule that no line of its template reads as is named by its number in the chain, without a line', async (t) => {
  const r = await rig(t, { 'nat/prerouting.hbs': '-p tcp --dport 22 -j ACCEPT\n{{#each vlans}}\n-i {{nic}} -m owner --uid-owner 0 -j ACCEPT\n{{/each}}\n' });
  r.supervisor.trigger('start');
  await until('the refusal', () => r.logs.some((l) => l.level >= 50));
  const template = join(r.rules, 'nat', 'prerouting.hbs');
  const [refusal] = r.logs.filter((l) => l.level >= 50);
  t.true(refusal!.msg.startsWith(`the kernel refuses a rule of rules.dir, ${template} (VGW-USER-PREROUTING rule 2): -i eth1 -m owner --uid-owner 0 -j ACCEPT; `), refusal!.msg);
  t.like(refusal, { path: template, chain: 'VGW-USER-PREROUTING', rule: 2 });
  t.is(refusal!.line, undefined);
});

// A rejected reload's lines each carried path: gateway.yaml, while the line named a template of rules.dir (one that does
// not render, a rule the planner or iptables refuses, a file there that is no template): an operator, or a log query on
// `path`, looked in the wrong file. Each line's path is the file it is about; /status's lines name the same file.
// Serial (run before the concurrent tests): its SIGHUPs reach every rig in this process, and a concurrent test's reload
// of a template's edit was then said to be for a SIGHUP.
test.serial('a rejected reload says as its path the file each line is about: the template where the fault is in one, else the config file', async (t) => {
  const r = await rig(t, { 'filter/forward.hbs': '-p tcp --dport 81 -j DROP\n' });
  r.supervisor.trigger('start');
  await until('the start pass', () => r.supervisor.lastRecord?.result === 'success');
  const forward = join(r.rules, 'filter', 'forward.hbs');
  const misplaced = join(r.rules, 'filter', 'foward.hbs');
  const rejected = async (what: string, change: () => Promise<void>, said: RegExp) => {
    const from = r.logs.length;
    await change();
    process.emit('SIGHUP');
    await until(what, () => r.logs.slice(from).some((l) => /^reload rejected/.test(l.msg) && said.test(l.msg)));
    return r.logs.slice(from).filter((l) => /^reload rejected/.test(l.msg));
  };
  for (const [what, text, said] of [
    ['a value the render does not have', '-i {{nosuch}} -j DROP\n', /nosuch/],
    ['a jump the planner refuses', '-p tcp -j VGW-NOSUCH\n', /VGW-NOSUCH/],
    ['an option iptables refuses', '-p tcp --nosuchoption 1 -j DROP\n', /nosuchoption/],
  ] as const) {
    const lines = await rejected(what, () => writeFile(forward, text), said);
    t.true(lines.length > 0);
    for (const line of lines) t.is(line.path, forward, `${what}: ${line.msg}`);
    t.true(r.state.errors.length > 0 && r.state.errors.every((e) => e.includes(forward)), `${what}: /status names it: ${JSON.stringify(r.state.errors)}`);
  }
  // A file of rules.dir that is no template: that file; a template that does not render, said with it (both problems
  // of the config's rules.dir), the template.
  // (Each write may be read alone: what is checked is the lines of the rejection that has both.)
  await rejected('a file that is no template', async () => {
    await writeFile(misplaced, '-j DROP\n');
    await writeFile(forward, '-i {{nosuch}} -j DROP\n');
  }, /is not a known template/);
  await until('the rejection of both', () => r.state.errors.length === 2 && r.logs.some((l) => /^reload rejected.*"nosuch"/.test(l.msg)));
  t.true(r.state.errors[0]!.includes(misplaced) && r.state.errors[1]!.includes(forward), JSON.stringify(r.state.errors));
  const lastSaying = (said: RegExp) => r.logs.findLast((l) => /^reload rejected/.test(l.msg) && said.test(l.msg));
  t.is(lastSaying(/is not a known template/)?.path, misplaced);
  t.is(lastSaying(/"nosuch" is not defined/)?.path, forward);
  await rm(misplaced);
  await writeFile(forward, '-p tcp --dport 81 -j DROP\n');
  // The config file's own problem: the config file.
  const lines = await rejected('an invalid config file', () => writeFile(r.path, `${labText.replace('id: 20', 'id: 9999')}rules:\n  dir: ${r.rules}\n`), /4094/);
  t.deepEqual(lines.map((l) => l.path), lines.map(() => r.path), JSON.stringify(lines.map((l) => l.msg)));
  t.true(r.state.errors.every((e) => e.includes(r.path)), JSON.stringify(r.state.errors));
});

// Refused rules of two templates, in one table: the line named both and carried no path at all.
test('a refusal of rules of two templates says the first it names as its path, and each in rules', async (t) => {
  const tcpmss = '-p udp --dport 9 -j TCPMSS --clamp-mss-to-pmtu\n';
  const r = await rig(t, { 'nat/prerouting.hbs': tcpmss, 'nat/postrouting.hbs': tcpmss });
  r.supervisor.trigger('start');
  await until('the refusal', () => r.logs.some((l) => l.level >= 50));
  const [refusal] = r.logs.filter((l) => l.level >= 50);
  const files = ['prerouting', 'postrouting'].map((hook) => join(r.rules, 'nat', `${hook}.hbs`));
  const named = files.filter((f) => refusal!.msg.includes(f)).sort((a, b) => refusal!.msg.indexOf(a) - refusal!.msg.indexOf(b));
  t.is(named.length, 2, refusal!.msg);
  t.is(refusal!.path, named[0]);
  t.deepEqual((refusal!.rules as { path: string }[]).map((p) => p.path), named);
  t.true(r.state.errors[0]!.includes(named[0]!), JSON.stringify(r.state.errors));
});

// A file written again in place with the same text (truncated, then written: an editor's save, `cat f > gateway.yaml`)
// can be read half-way by a reload that began before the write: it read the whole text for its "before", then the
// empty file for its load. The text after the settle was "before" again, and the half-written read was reported as a
// rejected reload ("… is empty") of a file that never changed (CI, the kernel tier's reload tests). Here a shell
// rewrites the file as fast as it can for 100 ms while SIGHUPs ask for reloads, 16 times over: without the fix, this
// test failed 4 runs in 4. Each burst is shorter than the settle, so a confirming load never meets one.
test.serial('a file written again and again in place with the same text, reloaded meanwhile: no reload is rejected', async (t) => {
  const r = await rig(t, { 'filter/forward.hbs': '-p tcp --dport 81 -j DROP\n' });
  r.supervisor.trigger('start');
  await until('the start pass', () => r.supervisor.lastRecord?.result === 'success');
  const copy = `${r.path}.copy`;
  await writeFile(copy, await readFile(r.path));
  for (let burst = 0; burst < 16; burst++) {
    const writer = execa('sh', ['-c', 'while :; do cat "$1" > "$2"; done', 'sh', copy, r.path], { reject: false });
    const ends = Date.now() + 100;
    while (Date.now() < ends) {
      process.emit('SIGHUP');
      await sleep(2);
    }
    writer.kill('SIGKILL');
    await writer;
    await writeFile(r.path, await readFile(copy)); // whole again, whatever the kill cut short
    await sleep(350);
  }
  await sleep(1500); // the last rounds: a settle (300 ms) and a load or two
  t.deepEqual(r.logs.filter((l) => /reload rejected/.test(l.msg)).map((l) => l.msg), []);
  t.is(r.state.result, 'success', JSON.stringify(r.state));
});

// /status said how the last reload ended (lastAt, lastResult), not whether the files had been read since a write: a
// script or a test waiting for its write to be read took a line of an earlier read (an in-place write's second look)
// for its own. Each read is counted now, whatever came of it, and dated when it began; its log lines carry its number.
test.serial('/status counts every read of the config for a reload, whatever came of it, and dates the last; each read\'s lines carry its number', async (t) => {
  const r = await rig(t, { 'filter/forward.hbs': '-p tcp --dport 81 -j DROP\n' });
  r.supervisor.trigger('start');
  await until('the start pass', () => r.supervisor.lastRecord?.result === 'success');
  type Reload = { lastAt: string | null; lastResult: string | null; lastErrors: string[]; reads: number; lastReadAt: string | null };
  const reload = () => (statusDocument(r.supervisor, r.state, '0.0.0-test') as { reload: Reload }).reload;
  t.deepEqual(reload(), { lastAt: null, lastResult: null, lastErrors: [], reads: 0, lastReadAt: null }, 'no read yet');
  /** The reads the log names, in order, each once. */
  const readsLogged = () => [...new Set(r.logs.map((l) => l.read).filter((n) => n !== undefined))];
  /** Every read counted has said what came of it, and none has begun for 0.4 s (a second look follows within ms). */
  const idle = async () => {
    for (let reads = -1; reads !== reload().reads;) {
      reads = reload().reads;
      await until(`read ${reads} said what came of it`, () => readsLogged().includes(reads));
      await sleep(400);
    }
  };

  // A SIGHUP: one read, of the file as it runs.
  let asked = Date.now();
  process.emit('SIGHUP');
  await until('the SIGHUP\'s reload', () => r.logs.some((l) => l.msg === 'config reloaded: unchanged'));
  t.like(r.logs.find((l) => l.msg === 'config reloaded: unchanged'), { why: 'SIGHUP', read: 1 });
  const { lastAt, lastReadAt, ...first } = reload();
  t.deepEqual(first, { lastResult: 'success', lastErrors: [], reads: 1 });
  t.true(asked <= Date.parse(lastReadAt!) && lastReadAt! <= lastAt!, `asked at ${new Date(asked).toISOString()}, read at ${lastReadAt}, done at ${lastAt}`);

  // An invalid file, put in place as editors do (a rename): each read the watch made is counted, and is in the log
  // (rejected, or read half-written and read again).
  const from = r.logs.length;
  await writeFile(`${r.path}.new`, 'vlans: [\n');
  await rename(`${r.path}.new`, r.path);
  await until('the rejection', () => r.logs.slice(from).some((l) => /reload rejected/.test(l.msg)));
  await idle(); // a second look, if the watch asks for one, and its settle (300 ms)
  const rejected = reload();
  t.like(rejected, { lastResult: 'failure' });
  t.true(rejected.reads >= 2);
  t.deepEqual(readsLogged(), Array.from({ length: rejected.reads }, (_, i) => i + 1), 'every read counted once, each in the log');

  // A SIGHUP again: exactly one more read, counted though rejected, and dated after it was asked for.
  asked = Date.now();
  process.emit('SIGHUP');
  await until('the SIGHUP\'s rejection', () => r.logs.some((l) => l.why === 'SIGHUP' && /reload rejected/.test(l.msg)));
  t.like(r.logs.find((l) => l.why === 'SIGHUP' && /reload rejected/.test(l.msg)), { read: rejected.reads + 1 });
  const again = reload();
  t.like(again, { lastResult: 'failure', lastErrors: rejected.lastErrors, reads: rejected.reads + 1 });
  t.true(Date.parse(again.lastReadAt!) >= asked);
});

test('the settings of the supervisor a read changes are said with the read\'s number, as its other lines are', async (t) => {
  const r = await rig(t, { 'filter/forward.hbs': '-p tcp --dport 81 -j DROP\n' });
  r.supervisor.trigger('start');
  await until('the start pass', () => r.supervisor.lastRecord?.result === 'success');
  await writeFile(r.path, `${labText}rules:\n  dir: ${r.rules}\nreconcile:\n  schedule: '*/7 * * * * *'\n`);
  await until('the new schedule said', () => r.logs.some((l) => l.msg.startsWith('reconcile.schedule changed')));
  const reloaded = r.logs.find((l) => l.msg === 'config reloaded');
  t.like(r.logs.find((l) => l.msg.startsWith('reconcile.schedule changed')), { schedule: '*/7 * * * * *', read: reloaded?.read });
  t.is(typeof reloaded?.read, 'number');
});
