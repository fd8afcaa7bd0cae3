/**
 * The clears an earlier run left (src/cli/flows-left.ts), as `run` does them after its start (src/cli/first-pass.ts)
 * and as its passes keep them (src/reconcile/supervisor.ts), with the semantic netfilter fake as the namespace and
 * the state directory a scratch one. Covers: a start whose first pass fails (the xtables lock) does them after the
 * first pass that succeeds; the removal of the unpoliced-left file once its clear has run takes that clear alone,
 * not one written meanwhile beside it (killed before that one ran, its clear would be lost).
 */
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterFirstPass } from '../../src/cli/first-pass.js';
import { DriftSchedule } from '../../src/cli/drift-schedule.js';
import { UnpolicedLeft } from '../../src/cli/flows-left.js';
import type { Shutdown } from '../../src/cli/shutdown.js';
import { parseConfigText } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { Child, CommandRunner, RunOptions, RunResult } from '../../src/exec/runner.js';
import { StatsCollector } from '../../src/metrics/collector.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { reconcileOnce } from '../../src/reconcile/once.js';
import { Supervisor, type ConfigState, type SupervisorOptions } from '../../src/reconcile/supervisor.js';
import { loadTemplates } from '../../src/template/load.js';
import { FakeNetns } from '../fakes/netfilter.js';
import { sleep, until } from '../helpers/wait.js';

const templates = await loadTemplates();
const lab = parseConfigText(await readFile(fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url)), 'utf8'), 'lab.yaml');
const withUdpForward: Config = { ...lab, portForwards: [...lab.portForwards, { proto: 'udp', port: 51820, to: '192.168.20.100' }] };
const state = (config: Config): ConfigState => ({ path: 'gateway.yaml', text: JSON.stringify(config), config, templates });
const XTABLES_LOCK = 'Another app is currently holding the xtables lock. Perhaps you want to use the -w option?';
/** A flow forwarded from the lab VLAN to the office one (no NAT), and one from the Internet to the gateway itself. */
const ACROSS = { nic: 'eth1', src: '192.168.10.50', sport: 5353, dst: '192.168.20.100', dport: 53 };
const TO_GATEWAY = { nic: 'eth0', src: '198.51.100.9', sport: 40061, dst: '203.0.113.2', dport: 51820 };

const namespace = (sysctls: Record<string, string> = {}) => new FakeNetns({
  links: [{ name: 'eth0', addresses: ['203.0.113.2/24'] }, { name: 'eth1', addresses: ['192.168.10.2/24'] }, { name: 'eth2', addresses: ['192.168.20.2/24'] }],
  defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' },
  dockerDns: true,
  sysctls,
});

/** The fake namespace, with `conntrack -L` held while `held` is set (a big table being read). */
class ListingHeld implements CommandRunner {
  held: Promise<void> | undefined;
  listing = false;

  constructor(readonly ns: FakeNetns) {}

  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    if (argv[0] === 'conntrack' && argv[1] === '-L' && this.held) {
      this.listing = true;
      await this.held;
      this.listing = false;
    }
    return this.ns.run(argv, options);
  }

  start(argv: readonly string[]): Child {
    return this.ns.start(argv);
  }
}

/** A scratch state directory, as VLAN_GATEWAY_STATE_DIR names it to the start's clears. */
async function stateDir(t: ExecutionContext): Promise<string> {
  const scratch = await mkdtemp(join(tmpdir(), 'vgw-first-pass-'));
  const dir = join(scratch, 'state');
  const before = process.env.VLAN_GATEWAY_STATE_DIR;
  process.env.VLAN_GATEWAY_STATE_DIR = dir;
  t.teardown(async () => {
    if (before === undefined) delete process.env.VLAN_GATEWAY_STATE_DIR;
    else process.env.VLAN_GATEWAY_STATE_DIR = before;
    await rm(scratch, { recursive: true, force: true });
  });
  return dir;
}

interface Started {
  readonly supervisor: Supervisor;
  readonly logs: Array<{ level: number; msg: string }>;
}

/**
 * A supervisor as `run` makes it, started, with what `run` does after its first pass (`after` false: without it, for
 * a test of the pass alone, whose file that work would go on to clear).
 */
async function start(t: ExecutionContext, runner: CommandRunner, config: Config, options: Partial<SupervisorOptions> = {}, after = true): Promise<Started> {
  const logs: Started['logs'] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Started['logs'][number]) });
  const metrics = new Metrics('0.0.0-test');
  const supervisor = new Supervisor(runner, metrics, log, state(config), {
    minIntervalMs: 10, healthTimeoutMs: 60_000, backoffInitialMs: 20, backoffMaxMs: 80, unpolicedLeft: await UnpolicedLeft.of(undefined), ...options,
  });
  const collector = new StatsCollector(runner, metrics, log, 60_000, () => supervisor.collectorState());
  const driftSchedule = new DriftSchedule('0 3 * * *', 60_000, supervisor);
  const shutdown = { isStopping: false } as Shutdown;
  t.teardown(async () => {
    driftSchedule.stop();
    await supervisor.stop();
  });
  supervisor.trigger('start');
  if (after) void supervisor.firstPass.then(() => afterFirstPass({
    log, supervisor, collector, driftSchedule, planCache: undefined, shutdown, initial: state(config),
    rulesCheck: { runner, backend: () => supervisor.backend ?? 'nft' }, runner, netns: undefined,
  }));
  return { supervisor, logs };
}

test.serial('a start whose first pass fails (the xtables lock) clears what an earlier run left after the first pass that succeeds', async (t) => {
  const dir = await stateDir(t);
  const ns = namespace();
  // A client kept sending to the gateway at 51820; the earlier run wrote the forward and was killed before its clears.
  ns.udpDatagram(TO_GATEWAY);
  ns.failNext({ match: (argv) => argv[0] === 'conntrack' && argv[1] === '-L', killed: 'SIGKILL' });
  await reconcileOnce(ns, withUdpForward, templates);
  t.is(ns.udpDatagram(TO_GATEWAY).address, '203.0.113.2', 'the scene: the flow left with the gateway');
  // And a flow it forwarded across VLANs before its policy was in, whose clear it kept and did not get to run.
  ns.udpDatagram(ACROSS);
  (await UnpolicedLeft.of(undefined)).write({ local: ['203.0.113.2'] });

  ns.failNext({ match: (argv) => /^iptables-(nft-|legacy-)?save$/.test(argv[0]!), stderr: XTABLES_LOCK, exitCode: 4 });
  const { supervisor, logs } = await start(t, ns, withUdpForward);
  await supervisor.firstPass;
  t.is(supervisor.lastRecord?.result, 'failure', 'the first pass failed');
  await until('a pass that succeeds', () => supervisor.lastRecord?.result === 'success');
  await until('the clears left by the earlier run', () => logs.filter((l) => l.level === 40).length >= 2, 2000);

  t.deepEqual(logs.filter((l) => l.level === 40 && l.msg.startsWith('cleared')).map((l) => l.msg), [
    'cleared 1 UDP flow to 51820 that reached the gateway itself although the port is forwarded: left by a run stopped before it cleared them',
    'cleared 1 flow forwarded before the policy was in place: their next packets meet the policy and the NAT (left by an earlier apply or start that did not get to clear them)',
  ]);
  t.is(ns.udpDatagram(TO_GATEWAY).address, '192.168.20.100', 'the same client port, forwarded now');
  t.false(ns.conntrackFlows().some((f) => f.original.src === ACROSS.src), 'the flow across VLANs is gone');
  t.deepEqual(await readdir(dir), [], 'and so is the file that kept its clear');
});

test.serial('the start\'s clear of the unpoliced flows an earlier run left keeps a clear a pass wrote meanwhile', async (t) => {
  await stateDir(t);
  const ns = namespace();
  await reconcileOnce(ns, lab, templates);
  ns.udpDatagram(ACROSS);
  (await UnpolicedLeft.of(undefined)).write({ local: ['203.0.113.2'] });
  const runner = new ListingHeld(ns);
  let open!: () => void;
  runner.held = new Promise((resolve) => (open = resolve));
  await start(t, runner, lab);
  // The start's clear lists conntrack (held); meanwhile a pass puts the policy back (someone flushed it) and keeps its clear.
  await until('the start\'s clear listing conntrack', () => runner.listing);
  const pass = await UnpolicedLeft.of(undefined);
  const kept = { local: ['192.168.10.1', '192.168.20.1', '203.0.113.2'] };
  pass.write(kept);
  open();
  await until('the start\'s clear done', () => !ns.conntrackFlows().some((f) => f.original.src === ACROSS.src));
  await sleep(50);
  t.deepEqual((await UnpolicedLeft.of(undefined)).read(), kept, 'the pass\'s clear is still there for it (or the next start) to run');
});

test.serial('a pass that has cleared the unpoliced flows removes its own clear from the file, not one written beside it meanwhile', async (t) => {
  await stateDir(t);
  const ns = namespace({ 'net.ipv4.ip_forward': '1' }); // Docker's, before the gateway
  ns.udpDatagram(ACROSS); // forwarded before any policy: the start pass puts it in, and clears it
  const runner = new ListingHeld(ns);
  let open!: () => void;
  runner.held = new Promise((resolve) => (open = resolve));
  // Without what `run` does after the first pass: it clears what the file holds then, the clear beside included (as
  // one an earlier run left), and a CI run under load saw it do so before this test read the file.
  const { supervisor } = await start(t, runner, lab, {}, false);
  await until('the start pass listing conntrack', () => runner.listing);
  t.truthy((await UnpolicedLeft.of(undefined)).read(), 'the pass kept its clear before it wrote the tables');
  const beside = { local: ['10.99.0.1'] };
  (await UnpolicedLeft.of(undefined)).write(beside);
  open();
  await supervisor.firstPass;
  t.is(supervisor.lastRecord?.result, 'success');
  t.false(ns.conntrackFlows().some((f) => f.original.src === ACROSS.src), 'the pass cleared the flow');
  t.deepEqual((await UnpolicedLeft.of(undefined)).read(), beside, 'the clear written beside it stays to do');
});
