/**
 * `vlan-gateway run`: the supervisor process. Wires the reconcile loop to its triggers (start, a cron schedule,
 * drift the stats collector finds, netlink events, SIGHUP and config-file changes), the stats collector, and the
 * HTTP endpoints; stops them all on SIGTERM/SIGINT so the process exits by itself, leaving the dataplane as it
 * is (or removing it with --cleanup-on-exit).
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { CommandModule } from 'yargs';
import { resolveConfigPath } from '../config/load.js';
import { serialized } from '../config/reload.js';
import { isMountPoint } from '../config/mounts.js';
import type { Config } from '../config/schema.js';
import { ConfigWatch } from '../config/watch.js';
import { makeLogger } from '../log.js';
import { StatsCollector } from '../metrics/collector.js';
import { Metrics } from '../metrics/metrics.js';
import { NetlinkMonitor } from '../observe/monitor.js';
import { packageFile } from '../package-files.js';
import { rememberDesired, useDesiredStore } from '../plan/desired.js';
import type { ReloadState } from '../reconcile/status.js';
import { Supervisor, type ConfigState } from '../reconcile/supervisor.js';
import { userTemplatesText } from '../template/load.js';
import { withForwardingHint } from '../apply/hints.js';
import { InstanceLock } from './instance-lock.js';
import { codeCache } from './code-cache.js';
import { makeRunner, type GlobalArgs } from './context.js';
import { checkRules, loadChecked, type RulesCheck } from './load-checked.js';
import { PlanCache, planCacheDir } from './plan-cache.js';
import { describeError, exitCodeOf } from './errors.js';
import { endpoints, serveEndpoints } from './http-endpoints.js';
import { DriftSchedule } from './drift-schedule.js';
import { holdSignals, onStopSignals } from './signals.js';
import { checkRunFlags, checkSchedule, runOptions, runSettings, type RunArgs } from './run-options.js';

/** How long a config that fails to load must stay as it is before the failure is reported (see doReload). */
const RELOAD_SETTLE_MS = 300;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

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
      const { listen } = settings;
      const lock = await InstanceLock.take(args.netns);
      const address = await serveEndpoints(http, settings, lock);
      log.info({ listen: `${address.address}:${address.port}`, config: path, schedule: settings.schedule, version: ver, codeCache: codeCache()?.state ?? 'off' }, 'vlan-gateway starting');

      let exitCode = 0;
      let stopping: Promise<void> | undefined;
      let stopped!: () => void;
      const done = new Promise<void>((resolve) => (stopped = resolve));
      // Without its namespace (deleted under a --netns run) there is nothing to clean up.
      const stop = (why: string, cleanup = Boolean(args['cleanup-on-exit'])) => {
        stopping ??= (async () => {
          log.info({ why, cleanup }, 'stopping');
          driftSchedule.stop();
          watcher?.close();
          process.off('SIGHUP', onHup);
          await monitor.stop();
          await collector.stop();
          try {
            await supervisor.stop(cleanup ? 'down' : undefined);
          } catch (error) {
            exitCode = 1;
            log.error({ err: error }, 'cleanup on exit failed');
          }
          // The state in effect now is what the next start of this container plans first (a NIC attached since
          // the start, a reload): kept for it.
          if (planCache && supervisor.lastDesired && !cleanup) {
            rememberDesired(planCache.desired, supervisor.lastDesired);
            planCache.flush();
          }
          await http.stop();
          await lock.release();
          log.info('stopped');
          stopped();
        })();
        return stopping;
      };

      // A --netns namespace deleted under the supervisor: every pass would fail for ever, /status would go on showing
      // what is no more, and the lock would come to name a new namespace given the old one's inode. It stops (exit 1).
      lock.watch(() => {
        const message = `network namespace ${args.netns ?? ''} is gone (deleted, or its name given to another namespace): stopping`;
        log.fatal({ netns: args.netns }, message);
        process.stderr.write(`vlan-gateway: ${message}\n`);
        exitCode = 1;
        void stop('network namespace gone', false);
      });

      supervisor.onFatal = (error) => {
        if (supervisor.ready) return; // after a good start, keep trying: the failure may be passing
        // In its own namespace (a container's), a missing NET_ADMIN is said with a missing --sysctl, if that is too.
        const message = args.netns === undefined ? withForwardingHint(describeError(error)) : describeError(error);
        log.fatal({ err: error }, message);
        process.stderr.write(`vlan-gateway: ${message}\n`);
        exitCode = 1;
        void stop('fatal');
      };

      // A rule of rules.dir the kernel refused when a pass wrote it: said as a rejected reload is (the reload had
      // passed every check made before the kernel), with the config that last applied running again if there is one.
      supervisor.onConfigRefused = (error, reverted, refused) => {
        // iptables-legacy names no rule (it refuses the table at COMMIT): the chain is then the likely one.
        const rule = error.failedLine === 'COMMIT'
          ? `the kernel refuses the ${error.step.kind === 'table' ? error.step.table : ''} table, likely for a rule of rules.dir (${error.userChain ?? ''})`
          : `the kernel refuses a rule of rules.dir (${error.userChain ?? ''})`;
        if (!reverted && supervisor.lastDesired) {
          // The config that applied before renders a rule the kernel refuses now (a NIC attached since gave a
          // template new data): not a reload's doing, and there is nothing older to go back to.
          log.error({ path, chain: error.userChain, line: error.failedLine }, `${rule}; the running config stays, and every pass fails until the template is fixed`);
          return;
        }
        const keeping = reverted ? 'the config that last applied runs again' : 'no config has applied yet: every pass fails until the template is fixed';
        // A reload that passed every check counted as a success when it was read; refused now, it is a failure too.
        if (reverted) {
          refusedInputs = inputsOf(refused);
          metrics.reloads.inc({ result: 'failure' });
          reloadSettings(supervisor.config.config); // the settings of the config that runs again
        }
        reload.result = 'failure';
        const line = error.failedLine && error.failedLine !== 'COMMIT' ? `: ${error.failedLine}` : ''; // legacy names no rule
        reload.errors = [`${rule}${line}`, ...error.message.split('\n').map((l) => l.trim()).filter(Boolean), keeping];
        metrics.lastReloadOk.set(0);
        metrics.changed();
        log.error({ path, chain: error.userChain, line: error.failedLine }, `${rule}; ${keeping}`);
      };

      // The settings of the supervisor itself a reload changes too, where no option overrides them: the drift
      // check's schedule and the minimum interval at once; the HTTP address at the next start (the endpoints are
      // what is watching this one), which is said.
      const reloadSettings = (next: Config) => {
        const nextSettings = runSettings(args, next);
        if (nextSettings.schedule !== driftSchedule.schedule) {
          driftSchedule.change(nextSettings.schedule);
          log.info({ schedule: driftSchedule.schedule }, 'reconcile.schedule changed: the drift check runs on the new schedule');
        }
        const minInterval = nextSettings.minIntervalMs;
        if (minInterval !== supervisor.minIntervalMs) {
          supervisor.minIntervalMs = minInterval;
          log.info({ minIntervalMs: minInterval }, 'reconcile.minIntervalMs changed');
        }
        const nextListen = nextSettings.listen;
        if (nextListen !== listen) {
          log.warn({ listen: nextListen, serving: `${address.address}:${address.port}` }, `http.listen changed to ${nextListen}: the endpoints stay where they are until the next start`);
        }
      };

      // The config the kernel refused after a reload had taken it: the file is often read twice for one write (an
      // in-place write fires two events), and the second read must not hand it over again, to fail again and roll
      // back again. A SIGHUP does retry it (what the kernel refused may have changed: a module loaded).
      const inputsOf = (loaded: ConfigState) => JSON.stringify([loaded.text, loaded.templates]);
      let refusedInputs: string | undefined;
      // What a reload reads: the config file, and the templates of the rules.dir in effect.
      const inputsText = async () => JSON.stringify([
        await readFile(path, 'utf8').catch(() => null),
        await userTemplatesText(supervisor.config.config.rules.dir),
      ]);
      // One reload at a time, the last write winning (config/reload.ts). A file that fails to load and is changed
      // within RELOAD_SETTLE_MS was being written (an in-place write read half-way): loaded again, not reported.
      const reasons = new Set<string>();
      const doReload = serialized(async () => {
        // A round nobody asked for is a second look the last one asked for (its texts moved under it: a write landed
        // meanwhile, or rules.dir came, went or moved, whose templates it now reads): not a reload unless it finds
        // something new.
        const asked = reasons.size > 0;
        const why = [...reasons].join(', ') || 'file changed'; // what asked for this round (none: the text moved under the last one)
        reasons.clear();
        const before = await inputsText();
        const at = new Date().toISOString();
        try {
          const next = await loadChecked(path, args.listen, rulesCheck, planCache); // a valid config is kept for the next start
          if (refusedInputs !== undefined && !why.includes('SIGHUP') && inputsOf(next) === refusedInputs) {
            log.debug({ why }, 'config reloaded: still the one the kernel refused, not applied again');
            return { again: (await inputsText()) !== before };
          }
          // The user's templates are part of what a reload reads: an edited template with the same config counts.
          const changed = next.text !== supervisor.config.text || JSON.stringify(next.templates) !== JSON.stringify(supervisor.config.templates);
          if (!changed && !asked) {
            log.debug('config read again: unchanged');
            return { again: (await inputsText()) !== before };
          }
          refusedInputs = undefined;
          reload.at = at;
          reload.result = 'success';
          reload.errors = [];
          metrics.reloads.inc({ result: 'success' });
          metrics.lastReloadOk.set(1);
          if (changed) {
            log.info({ why }, 'config reloaded');
            reloadSettings(next.config);
            supervisor.replaceConfig(next);
          } else {
            log[why.includes('SIGHUP') ? 'info' : 'debug']({ why }, 'config reloaded: unchanged');
          }
        } catch (error) {
          await sleep(RELOAD_SETTLE_MS);
          if ((await inputsText()) !== before) return { again: true };
          reload.at = at;
          reload.result = 'failure';
          reload.errors = describeError(error).split('\n').map((l) => l.trim()).filter(Boolean);
          metrics.reloads.inc({ result: 'failure' });
          metrics.lastReloadOk.set(0);
          for (const line of reload.errors) log.error({ why, path }, `reload rejected, keeping the running config: ${line}`);
        } finally {
          watcher.rearm(supervisor.config.config.rules.dir);
          metrics.changed();
        }
        // A write between the read and the watches' rearm has no event of its own: the texts tell.
        return { again: (await inputsText()) !== before };
      });
      // A pipe (--config <(…)) holds the config once, read at the start: read again it waits for a writer for ever,
      // holding up every later reload and the stop behind it. Said instead of waited on.
      const isPipe = await stat(path).then((info) => info.isFIFO(), () => false);
      const requestReload = (reason: string) => {
        if (isPipe) {
          log.warn({ why: reason, path }, 'the config is a pipe, read once at the start: there is nothing to reload; give a file to reload it');
          return;
        }
        reasons.add(reason);
        void doReload().catch((error: unknown) => log.error({ err: error }, 'reload failed'));
      };
      const onHup = () => requestReload('SIGHUP');
      process.on('SIGHUP', onHup);
      early.releaseHup();
      if (early.hup && !early.stop) requestReload('SIGHUP'); // a stop asked for too: nothing to reload for
      const watcher = new ConfigWatch(path, () => requestReload('file changed'), {
        onWatchError: (watched, error) => log.warn({ err: error, path: watched }, 'cannot watch for changes; reload with SIGHUP'),
      });
      watcher.rearm(config.rules.dir);
      // Said once, beside the start pass rather than before it.
      void realpath(path).catch(() => path).then(isMountPoint).then((alone) => {
        if (alone) log.warn({ path }, `the config file is mounted on its own: an edit on the host that replaces the file (most editors, sed -i) will not reach this process; mount the directory that holds it instead (-v DIR:${dirname(path)}:ro)`);
      });

      monitor.start();
      collector.start();
      supervisor.trigger('start');
      const renderCheck = async () => {
        if (stopping) return;
        try {
          await checkRules(initial, rulesCheck);
        } catch (error) {
          process.stderr.write(`vlan-gateway: ${describeError(error)}\n`);
          log.fatal({ err: error }, 'invalid rule templates');
          exitCode = exitCodeOf(error);
          void stop('invalid config');
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
        if (stopping) return;
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

      const offStopSignals = onStopSignals((signal) => void stop(signal));
      early.release();
      if (early.stop) void stop(early.stop);
      await done;
      offStopSignals();
      process.exitCode = exitCode;
    } finally {
      early.release();
    }
  },
};
