/**
 * Stopping `vlan-gateway run`: everything beside the supervisor stopped in turn, so that the process exits by
 * itself, leaving the dataplane as it is (or removing it with --cleanup-on-exit); and the failures that stop it.
 */
import { withForwardingHint } from '../apply/hints.js';
import type { HttpServer } from '../http/server.js';
import type { Logger } from '../log.js';
import type { StatsCollector } from '../metrics/collector.js';
import type { NetlinkMonitor } from '../observe/monitor.js';
import { rememberDesired } from '../plan/desired.js';
import type { DeadlineRunner } from '../exec/runner.js';
import { stopHelpers } from '../exec/shell-helper.js';
import type { Supervisor } from '../reconcile/supervisor.js';
import type { DriftSchedule } from './drift-schedule.js';
import { describeError } from './errors.js';
import type { InstanceLock } from './instance-lock.js';
import type { PlanCache } from './plan-cache.js';
import type { Reloads } from './reload.js';

/** How long a stop waits for a reload in flight to drop what it read (see Reloads.close). */
const RELOAD_WAIT_MS = 2000;
/**
 * How long a stop waits for the commands in flight (a pass's, a stats reading's) before it kills them: the pass then
 * fails and rolls back, and the process exits before `docker stop` (10 s) kills it, instead of waiting for
 * --command-timeout (60 s by default) on a helper that hangs. The down of --cleanup-on-exit, after them, is not cut.
 */
export const STOP_COMMANDS_WAIT_MS = 3000;

export interface StopParts {
  readonly log: Logger;
  /** --cleanup-on-exit: a stop runs `down` first. */
  readonly cleanupOnExit: boolean;
  readonly driftSchedule: DriftSchedule;
  readonly reloads: Reloads;
  readonly monitor: NetlinkMonitor;
  readonly collector: StatsCollector;
  readonly supervisor: Supervisor;
  readonly planCache: PlanCache | undefined;
  readonly http: HttpServer;
  readonly lock: InstanceLock;
  /** The commands of the supervisor, its readings and reloads (withDeadline). */
  readonly runner: Pick<DeadlineRunner, 'abortInFlight'>;
}

export class Shutdown {
  /** What the process exits with once stopped: 0 unless a failure said otherwise. */
  exitCode = 0;
  private stopping: Promise<void> | undefined;
  private stopped!: () => void;
  /** Resolves once everything has stopped. */
  readonly done = new Promise<void>((resolve) => (this.stopped = resolve));

  constructor(private readonly parts: StopParts) {}

  /** Whether a stop has begun. */
  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  /**
   * Stops everything, once: a later call returns the first one's promise. `cleanup` is --cleanup-on-exit unless
   * said: without its namespace (deleted under a --netns run) there is nothing to clean up.
   */
  stop(why: string, cleanup = this.parts.cleanupOnExit): Promise<void> {
    const { log, driftSchedule, reloads, monitor, collector, supervisor, planCache, http, lock, runner } = this.parts;
    this.stopping ??= (async () => {
      log.info({ why, cleanup }, 'stopping');
      // A pass that waits for a command (one that hangs) holds the stop (and the stats reading) until the command is killed: said.
      const waited = supervisor.waitingFor;
      if (waited) log.info({ command: waited.command, waitedMs: Math.round(supervisor.clock.monotonic() - waited.since) }, `waiting for the pass in flight, which waits for \`${waited.command}\``);
      const killer = setTimeout(() => {
        const killed = runner.abortInFlight('the gateway is stopping');
        if (killed > 0) log.warn({ commands: killed }, `killed the commands still running ${STOP_COMMANDS_WAIT_MS / 1000} s into the stop`);
      }, STOP_COMMANDS_WAIT_MS);
      driftSchedule.stop();
      const reloaded = reloads.close(); // a reload in flight ends before "stopped", applying nothing
      await supervisor.conflicts?.stop(); // the address conflict probes running are killed, at once
      await monitor.stop();
      await collector.stop();
      try {
        // The down of --cleanup-on-exit is not cut short: only the wait for what was running when the stop came.
        await supervisor.stop(cleanup ? 'down' : undefined, () => clearTimeout(killer));
      } catch (error) {
        this.exitCode = 1;
        log.error({ err: error }, 'cleanup on exit failed');
      } finally {
        clearTimeout(killer);
      }
      // The state in effect now is what the next start of this container plans first (a NIC attached since
      // the start, a reload): kept for it.
      if (planCache && supervisor.lastDesired && !cleanup) {
        rememberDesired(planCache.desired, supervisor.lastDesired);
        planCache.flush();
      }
      // Not for ever: a reload stuck opening its file (a FIFO put in the config's place) would hold the stop; it is
      // closed, and says nothing when it wakes.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([reloaded, new Promise((resolve) => (timer = setTimeout(resolve, RELOAD_WAIT_MS)))]);
      clearTimeout(timer);
      await http.stop();
      await lock.release();
      await stopHelpers(); // the command helper's shell ends before the process: nothing started here outlives it
      log.info('stopped');
      this.stopped();
    })();
    return this.stopping;
  }
}

/**
 * A --netns namespace deleted under the supervisor: every pass would fail for ever, /status would go on showing
 * what is no more, and the lock would come to name a new namespace given the old one's inode. It stops (exit 1).
 */
export function stopWhenNamespaceGone(lock: InstanceLock, netns: string | undefined, log: Logger, shutdown: Shutdown): void {
  lock.watch(() => {
    const message = `network namespace ${netns ?? ''} is gone (deleted, or its name given to another namespace): stopping`;
    log.fatal({ netns }, message);
    process.stderr.write(`vlan-gateway: ${message}\n`);
    shutdown.exitCode = 1;
    void shutdown.stop('network namespace gone', false);
  });
}

/** A failure no retry can fix (Supervisor.onFatal) stops a supervisor that has not been ready yet (exit 1). */
export function stopOnFatal(supervisor: Supervisor, netns: string | undefined, log: Logger, shutdown: Shutdown): void {
  supervisor.onFatal = (error) => {
    if (supervisor.ready) return false; // after a good start, keep trying: the failure may be passing
    // In its own namespace (a container's), a missing NET_ADMIN is said with a missing --sysctl, if that is too.
    const message = netns === undefined ? withForwardingHint(describeError(error)) : describeError(error);
    log.fatal({ err: error }, message);
    process.stderr.write(`vlan-gateway: ${message}\n`);
    shutdown.exitCode = 1;
    void shutdown.stop('fatal');
    return true;
  };
}
