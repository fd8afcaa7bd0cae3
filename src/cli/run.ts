/**
 * `vlan-gateway run`: the supervisor process. Wires the reconcile loop to its triggers (start, a cron schedule,
 * drift the stats collector finds, netlink events, SIGHUP and config-file changes), the stats collector, and the
 * HTTP endpoints; stops them all on SIGTERM/SIGINT so the process exits by itself, leaving the dataplane as it
 * is (or removing it with --cleanup-on-exit).
 */
import { readFile } from 'node:fs/promises';
import type { CommandModule } from 'yargs';
import { resolveConfigPath } from '../config/load.js';
import { makeLogger } from '../log.js';
import { StatsCollector } from '../metrics/collector.js';
import { Metrics } from '../metrics/metrics.js';
import { NetlinkMonitor } from '../observe/monitor.js';
import { packageFile } from '../package-files.js';
import { useDesiredStore } from '../plan/desired.js';
import type { ReloadState } from '../reconcile/status.js';
import { Supervisor } from '../reconcile/supervisor.js';
import { InstanceLock } from './instance-lock.js';
import { codeCache } from './code-cache.js';
import { makeRunner, type GlobalArgs } from './context.js';
import { checkRules, loadChecked, type RulesCheck } from './load-checked.js';
import { PlanCache, planCacheDir } from './plan-cache.js';
import { describeError, exitCodeOf } from './errors.js';
import { endpoints, serveEndpoints } from './http-endpoints.js';
import { Shutdown, stopOnFatal, stopWhenNamespaceGone } from './shutdown.js';
import { Reloads } from './reload.js';
import { DriftSchedule } from './drift-schedule.js';
import { holdSignals, onStopSignals } from './signals.js';
import { checkRunFlags, checkSchedule, runOptions, runSettings, type RunArgs } from './run-options.js';

export async function version(): Promise<string> {
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
      const initial = await loadChecked(path, args.listen, undefined, planCache);
      useDesiredStore(planCache?.desired);
      const { config } = initial;
      const settings = runSettings(args, config);
      checkSchedule(settings.schedule);
      const runner = makeRunner(args.netns);
      const rulesCheck: RulesCheck = { runner, backend: () => supervisor.backend ?? 'nft' };
      const ver = await version();
      const metrics = new Metrics(ver);
      const supervisor = new Supervisor(runner, metrics, log, initial, {
        minIntervalMs: settings.minIntervalMs,
        healthTimeoutMs: args['health-timeout']!,
        backoffInitialMs: 500,
        backoffMaxMs: 30_000,
      });
      const driftSchedule = new DriftSchedule(settings.schedule, args['stats-interval']!, supervisor);
      const reload: ReloadState = { errors: [] };
      const collector = new StatsCollector(runner, metrics, log, args['stats-interval']!, () => supervisor.collectorState());
      const http = endpoints(supervisor, reload, metrics, ver, log);
      const monitor = new NetlinkMonitor(runner, log, () => supervisor.trigger('netlink'));

      metrics.lastReloadOk.set(1);
      const lock = await InstanceLock.take(args.netns);
      const address = await serveEndpoints(http, settings, lock);
      log.info({ listen: `${address.address}:${address.port}`, config: path, schedule: settings.schedule, version: ver, codeCache: codeCache()?.state ?? 'off' }, 'vlan-gateway starting');

      const reloads = new Reloads({ path, args, log, metrics, supervisor, planCache, rulesCheck, state: reload, driftSchedule, listen: settings.listen, address });

      const shutdown = new Shutdown({
        log, cleanupOnExit: Boolean(args['cleanup-on-exit']), driftSchedule, reloads, monitor, collector, supervisor, planCache, http, lock,
      });
      stopWhenNamespaceGone(lock, args.netns, log, shutdown);
      stopOnFatal(supervisor, args.netns, log, shutdown);
      await reloads.start(early);

      monitor.start();
      collector.start();
      supervisor.trigger('start');
      const renderCheck = async () => {
        if (shutdown.isStopping) return;
        try {
          await checkRules(initial, rulesCheck);
        } catch (error) {
          process.stderr.write(`vlan-gateway: ${describeError(error)}\n`);
          log.fatal({ err: error }, 'invalid rule templates');
          shutdown.exitCode = exitCodeOf(error);
          void shutdown.stop('invalid config');
        }
      };
      void supervisor.firstPass.then(() => {
        useDesiredStore(undefined);
        if (planCache) {
          const unwritten = planCache.flush();
          log.info({ dir: planCache.dir, config: planCache.hits.config > 0 ? 'cached' : 'parsed', rules: planCache.hits.desired > 0 ? 'cached' : 'rendered' }, 'plan cache after the start pass');
          // Said once: a restart then parses and renders everything again (docker run --read-only without a tmpfs on /run).
          if (unwritten) log.warn({ dir: planCache.dir }, `the plan cache cannot be written (${unwritten}): a restart will parse the config and render the rules again; with --read-only, mount a volume there (-v vlan-gateway-run:/run/vlan-gateway)`);
        }
        if (shutdown.isStopping) return;
        // The counters, conntrack gauges and traffic series from the start, not one stats interval after it.
        void collector.collect();
        driftSchedule.start(); // the drift check, from now on (see DriftSchedule)
        if (supervisor.ready) codeCache()?.save('run'); // the functions a start runs are compiled now
        const desired = supervisor.lastDesired;
        // A first pass that found every NIC rendered every template with every zone: the check has nothing left
        // to find. Otherwise it runs, a second after a good start so that it does not hold up /readyz (at 100
        // VLANs it is a full render), at once after a failed one.
        if (desired?.uplink.nic && desired.vlans.every((b) => b.nic)) return;
        setTimeout(() => void renderCheck(), supervisor.ready ? 1000 : 0);
      });

      const offStopSignals = onStopSignals((signal) => void shutdown.stop(signal));
      early.release();
      if (early.stop) void shutdown.stop(early.stop);
      await shutdown.done;
      offStopSignals();
      process.exitCode = shutdown.exitCode;
    } finally {
      early.release();
    }
  },
};
