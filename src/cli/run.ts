/**
 * `vlan-gateway run`: the supervisor process. Wires the reconcile loop to its triggers (start, a cron schedule,
 * drift the stats collector finds, netlink events, SIGHUP and config-file changes), the stats collector, and the
 * HTTP endpoints; stops them all on SIGTERM/SIGINT so the process exits by itself, leaving the dataplane as it
 * is (or removing it with --cleanup-on-exit).
 */
import { readFile } from 'node:fs/promises';
import type { CommandModule } from 'yargs';
import { resolveConfigPath, withConfigSource } from '../config/load.js';
import { withDeadline } from '../exec/runner.js';
import { hostPort } from '../http/server.js';
import { makeLogger } from '../log.js';
import { StatsCollector } from '../metrics/collector.js';
import { Metrics } from '../metrics/metrics.js';
import { LISTEN_GIVE_UP_MS, NetlinkMonitor } from '../observe/monitor.js';
import { packageFile } from '../package-files.js';
import { useDesiredStore } from '../plan/desired.js';
import { AddressConflicts } from '../reconcile/conflicts.js';
import type { ReloadState } from '../reconcile/status.js';
import { Supervisor } from '../reconcile/supervisor.js';
import { codeCache } from './code-cache.js';
import { makeRunner, type GlobalArgs } from './context.js';
import { DriftSchedule } from './drift-schedule.js';
import { EndpointsFile } from './endpoints-file.js';
import { afterFirstPass } from './first-pass.js';
import { removeAbandonedState, UnpolicedLeft } from './flows-left.js';
import { endpoints, serveEndpoints, waitsForAddress } from './http-endpoints.js';
import { InstanceLock, WaitStopped } from './instance-lock.js';
import { loadChecked, type RulesCheck } from './load-checked.js';
import { PlanCache, planCacheDir } from './plan-cache.js';
import { Reloads } from './reload.js';
import { checkRunFlags, checkSchedule, runOptions, runSettings, type RunArgs } from './run-options.js';
import { Shutdown, stopOnFatal, stopWhenNamespaceGone } from './shutdown.js';
import { holdSignals, onStopSignals, type HeldSignals } from './signals.js';

async function version(): Promise<string> {
  return (JSON.parse(await readFile(packageFile('package.json'), 'utf8')) as { version: string }).version;
}

export const runCommand: CommandModule<GlobalArgs, RunArgs> = {
  command: 'run',
  describe: 'Run the supervisor: apply now and after every change, repair drift, serve metrics and health',
  builder: runOptions,
  handler: async (args) => {
    // From the first moment: a stop signal during the start (the config read, the HTTP port bound) stops the
    // supervisor as soon as it is up, exiting 0, and a SIGHUP asks for a reload then, instead of the default
    // action of either, which kills the process (exit 129 or 143).
    const early = holdSignals();
    try {
      process.exitCode = await supervise(args, early);
    } finally {
      early.release();
    }
  },
};

/** The start, in order; resolves with the exit code once everything has stopped. */
async function supervise(args: RunArgs, early: HeldSignals): Promise<number> {
  const log = makeLogger(checkRunFlags(args));
  const path = resolveConfigPath(args.config);
  // A restarted container finds in the plan cache what its last run parsed and rendered (its /run survives
  // `docker restart`): the start pass then neither parses the YAML nor renders the rules, which at 100 VLANs is
  // a good part of the time to ready. Read by the start pass alone; written after it, and at stop with the
  // state then in effect. Later passes keep what they render in memory.
  const cacheDir = planCacheDir();
  const planCache = cacheDir ? new PlanCache(cacheDir) : undefined;
  // An invalid file exits 2 with nothing applied. The full render check (every template as if every NIC were
  // present) runs once the first pass is done rather than before it: at start, time to ready is what a
  // restarted router is judged by (a template the real NICs break fails that pass and is retried meanwhile).
  const initial = await loadChecked(path, args.listen, undefined, planCache).catch((error: unknown) => {
    throw withConfigSource(error, args.config);
  });
  useDesiredStore(planCache?.desired);
  const settings = runSettings(args, initial.config);
  checkSchedule(settings.schedule);

  // A helper that hangs (the xtables lock held elsewhere, a stopped process) is killed, and its pass retried.
  const runner = withDeadline(makeRunner(args.netns), args['command-timeout']!);
  const ver = await version();
  const metrics = new Metrics(ver);
  const supervisor = new Supervisor(runner, metrics, log, initial, {
    minIntervalMs: settings.minIntervalMs,
    healthTimeoutMs: args['health-timeout']!,
    commandTimeoutMs: args['command-timeout']!,
    backoffInitialMs: 500,
    backoffMaxMs: 30_000,
    unpolicedLeft: await UnpolicedLeft.of(args.netns),
  });
  // Report-only detection of another device holding a VLAN's gateway address; never holds a pass or /readyz.
  supervisor.conflicts = new AddressConflicts(runner, metrics, log);
  const rulesCheck: RulesCheck = { runner, backend: () => supervisor.backend ?? 'nft' };
  const driftSchedule = new DriftSchedule(settings.schedule, args['stats-interval']!, supervisor);
  const reload: ReloadState = { errors: [], reads: 0 };
  const collector = new StatsCollector(runner, metrics, log, args['stats-interval']!, () => supervisor.collectorState());
  const http = endpoints(supervisor, reload, metrics, ver, log);
  const monitor = new NetlinkMonitor(runner, log, () => supervisor.trigger('netlink'));

  metrics.lastReloadOk.set(1);
  // Waits for an apply or down that is writing (they refuse to start beside a supervisor): its start pass then reads
  // what that one left. A stop signal meanwhile ends the wait and the process (exit 0), nothing done: the wait
  // can last a minute, longer than `docker stop` waits before its SIGKILL.
  const lock = await InstanceLock.take(args.netns, { onWait: (message) => log.warn(message), stopWaiting: () => early.stop !== undefined })
    .catch((error: unknown) => {
      if (!(error instanceof WaitStopped)) throw error;
      log.info({ why: early.stop }, `${error.message}: nothing was done`);
      return undefined;
    });
  if (lock === undefined) return 0;
  removeAbandonedState(); // what a write of the state files killed before its rename left (the plan cache's: at its flush)
  // The image's health check reads where they listen from a file (endpoints-file.ts), kept by a supervisor that runs
  // inside the namespace it manages, as the image's does.
  const endpointsFile = args.netns === undefined ? new EndpointsFile() : undefined;
  const address = await serveEndpoints(http, settings, lock, log, waitsForAddress(settings.listen, initial.config, args.netns), () => {
    const at = http.listening();
    if (at !== undefined) endpointsFile?.write(at);
  });
  // `status` in this namespace asks the lock where they listen: a --listen of the command line is in no file it reads.
  lock.tellEndpoints(() => http.listening());
  log.info({ listen: address ? hostPort(address) : settings.listen, config: path, schedule: settings.schedule, version: ver, codeCache: codeCache()?.state ?? 'off' }, 'vlan-gateway starting');

  const reloads = new Reloads({ path, args, log, metrics, supervisor, planCache, rulesCheck, state: reload, driftSchedule, listen: settings.listen, address });
  const shutdown = new Shutdown({
    log, cleanupOnExit: Boolean(args['cleanup-on-exit']), driftSchedule, reloads, monitor, collector, supervisor, planCache, http, lock, runner,
  });
  stopWhenNamespaceGone(lock, args.netns, log, shutdown);
  stopOnFatal(supervisor, args.netns, log, shutdown);
  await reloads.start(early);

  collector.start();
  supervisor.trigger('start');
  // The monitor is spawned once the start pass has spawned its reads (the pass's timer, set first, fires first): a
  // spawn holds this thread for some milliseconds, which the reads then run beside rather than wait for.
  // It listens a moment after it starts (a few ms; 30 through `ip netns exec`): a change between the start pass's
  // read and the subscription (a NIC that `docker network connect` attached just then) would reach nobody, and wait
  // for the drift schedule. So one more pass once it listens. Not the start pass waiting for it: the ready target
  // (1 s) is what a start is measured by, and the second pass, queued behind the first, does not delay it.
  setTimeout(() => {
    monitor.start(); // not after a stop (the monitor's own check)
    void monitor.listening(LISTEN_GIVE_UP_MS).then((now) => {
      if (now) supervisor.trigger('netlink');
    });
  }, 0);
  void supervisor.firstPass.then(() => afterFirstPass({ log, supervisor, collector, driftSchedule, planCache, shutdown, initial, rulesCheck, runner, netns: args.netns }));

  const offStopSignals = onStopSignals((signal) => void shutdown.stop(signal));
  early.release();
  if (early.stop) void shutdown.stop(early.stop);
  await shutdown.done;
  endpointsFile?.remove();
  offStopSignals();
  return shutdown.exitCode;
}
