/**
 * A reload in flight when `vlan-gateway run` is told to stop (src/cli/reload.ts, src/cli/shutdown.ts): the pieces
 * `run` wires together (Reloads, Shutdown, the Supervisor), with the semantic netfilter fake as the namespace and a
 * runner that holds iptables' parse of the user's rules (the slow last step of a reload's check), so that the stop
 * comes while the reload is checking. After "stopped" nothing is logged, and the config read is not handed over.
 */
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { DriftSchedule } from '../../src/cli/drift-schedule.js';
import { endpoints } from '../../src/cli/http-endpoints.js';
import type { InstanceLock } from '../../src/cli/instance-lock.js';
import { loadChecked } from '../../src/cli/load-checked.js';
import { Reloads } from '../../src/cli/reload.js';
import type { RunArgs } from '../../src/cli/run-options.js';
import { Shutdown } from '../../src/cli/shutdown.js';
import { holdSignals } from '../../src/cli/signals.js';
import type { Child, CommandRunner, RunOptions, RunResult } from '../../src/exec/runner.js';
import { StatsCollector } from '../../src/metrics/collector.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { NetlinkMonitor } from '../../src/observe/monitor.js';
import type { ReloadState } from '../../src/reconcile/status.js';
import { Supervisor } from '../../src/reconcile/supervisor.js';
import { FakeNetns } from '../fakes/netfilter.js';
import { sleep, until } from '../helpers/wait.js';

const labText = await readFile(fileURLToPath(new URL('../../examples/lab.yaml', import.meta.url)), 'utf8');

/** The fake namespace, with iptables' parse of the user's rules (`iptables-restore --test`) held until released. */
class HeldCheck implements CommandRunner {
  private open: (() => void) | undefined;
  private readonly gate = new Promise<void>((resolve) => (this.open = resolve));
  /** A check is waiting at the gate: the reload is in flight. */
  checking = false;

  constructor(readonly ns: FakeNetns) {}

  release(): void {
    this.open?.();
  }

  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    if (argv.includes('--test')) {
      this.checking = true;
      await this.gate;
    }
    return this.ns.run(argv, options);
  }

  start(argv: readonly string[]): Child {
    return this.ns.start(argv);
  }
}

const CASES = [
  ['a valid config', false, false],
  ['a config whose rule iptables refuses', true, false],
  // Stuck past the stop (a FIFO in the config's place, say): the stop does not wait for it for ever.
  ['a valid config that is still stuck when the stop has waited 2 s for it', false, true],
] as const;
for (const [what, refused, stuck] of CASES) {
  test(`a reload of ${what} in flight when the supervisor stops says nothing after "stopped" and applies nothing`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'vgw-reload-stop-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'gateway.yaml');
    await mkdir(join(dir, 'rules', 'filter'), { recursive: true });
    await writeFile(join(dir, 'rules', 'filter', 'forward.hbs'), '-p tcp --dport 81 -j DROP\n');
    const running = `${labText}rules:\n  dir: ${join(dir, 'rules')}\n`;
    await writeFile(path, running);

    const ns = new FakeNetns({
      links: [{ name: 'eth0', addresses: ['203.0.113.2/24'] }, { name: 'eth1', addresses: ['192.168.10.2/24'] }, { name: 'eth2', addresses: ['192.168.20.2/24'] }],
      defaultRoute: { gateway: '203.0.113.1', dev: 'eth0' },
      dockerDns: true,
    });
    if (refused) ns.failOn((argv) => argv.includes('--test'), { stderr: 'iptables-restore: line 3 failed\n', exitCode: 1 });
    const runner = new HeldCheck(ns);
    const logs: Array<{ level: number; msg: string }> = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) });
    const metrics = new Metrics('0.0.0-test');
    const supervisor = new Supervisor(runner, metrics, log, await loadChecked(path, undefined), {
      minIntervalMs: 10, healthTimeoutMs: 60_000, backoffInitialMs: 20, backoffMaxMs: 80,
    });
    const args = { config: path } as RunArgs;
    const state: ReloadState = { errors: [], reads: 0 };
    const driftSchedule = new DriftSchedule('*/30 * * * * *', 5000, supervisor);
    const http = endpoints(supervisor, state, metrics, '0.0.0-test', log);
    const reloads = new Reloads({
      path, args, log, metrics, supervisor, planCache: undefined, rulesCheck: { runner, backend: () => 'nft' }, state, driftSchedule,
      listen: '127.0.0.1:0', address: { address: '127.0.0.1', port: 0, family: 'IPv4' },
    });
    const lock = { release: async () => undefined } as unknown as InstanceLock; // the lock is not what is tested here
    const shutdown = new Shutdown({
      log, cleanupOnExit: false, driftSchedule, reloads, monitor: new NetlinkMonitor(runner, log, () => undefined),
      collector: new StatsCollector(runner, metrics, log, 5000, () => supervisor.collectorState()), supervisor, planCache: undefined, http, lock,
      runner: { abortInFlight: () => 0 }, // the fake's commands never hang
    });
    const early = holdSignals();
    t.teardown(() => early.release());
    await reloads.start(early);

    // An edit of the rule: the file watch reloads it, and the reload waits in iptables' parse of the new rule.
    await writeFile(join(dir, 'rules', 'filter', 'forward.hbs'), '-p tcp --dport 82 -j DROP\n');
    await until('the reload checking the new rule', () => runner.checking);
    const stopping = shutdown.stop('SIGTERM');
    await until('the stop begun', () => logs.some((l) => l.msg === 'stopping'));
    if (stuck) {
      const started = Date.now();
      await stopping;
      t.true(Date.now() - started < 4000, `stopped in ${Date.now() - started} ms`);
      runner.release();
    } else {
      runner.release();
      await stopping;
    }
    await sleep(600); // longer than a failed reload's settling time (300 ms)

    const msgs = logs.map((l) => l.msg);
    t.is(msgs.at(-1), 'stopped', `logged after "stopping": ${JSON.stringify(msgs.slice(msgs.indexOf('stopping')))}`);
    t.false(msgs.some((m) => m.startsWith('config reloaded') || m.startsWith('reload rejected')), 'the reload says nothing');
    t.is(supervisor.config.text, running, 'the stopped supervisor keeps the config it ran');
    t.regex(JSON.stringify(supervisor.config.templates), /--dport 81 -j DROP/, 'and the rule it ran');
    t.notRegex(JSON.stringify(supervisor.config.templates), /--dport 82/);
    // The read the stop caught is counted (it began), but no outcome of it is shown.
    t.like(state, { reads: 1, at: undefined, result: undefined, errors: [] }, '/status shows no reload');
  });
}
