/**
 * The drift check of `vlan-gateway run`: a pass asked for on a cron schedule (--schedule, else reconcile.schedule),
 * and how the schedule decides whether such a pass may plan from the tables the supervisor knows.
 */
import cron from 'node-cron';
import type { Supervisor } from '../reconcile/supervisor.js';

/**
 * How recently the stats collector must have found our tables as planned for a scheduled pass to skip reading them
 * (KnownTables): within its last two readings. Only where the collector reads at least as often as the schedule
 * checks, so that drift in our tables is found no later than a reading pass would find it; otherwise every pass
 * reads them (undefined).
 */
export function knownTablesMaxAge(statsIntervalMs: number, nextRuns: readonly Date[]): number | undefined {
  const gaps = nextRuns.slice(1).map((run, i) => run.getTime() - nextRuns[i]!.getTime());
  if (gaps.length === 0 || statsIntervalMs <= 0 || statsIntervalMs > Math.min(...gaps)) return undefined;
  return 2 * statsIntervalMs + 1000;
}

/**
 * The drift check is scheduled (start) once the first pass is done: until then it has nothing to check, and setting
 * up the schedule (node-cron's time-zone formatter) costs the start 20 ms or more. A reload may change the schedule
 * before or after.
 */
export class DriftSchedule {
  private task: ReturnType<typeof cron.schedule> | undefined;
  private stopped = false;

  constructor(private current: string, private readonly statsIntervalMs: number, private readonly supervisor: Supervisor) {}

  get schedule(): string {
    return this.current;
  }

  start(): void {
    this.task = cron.schedule(this.current, () => {
      this.supervisor.trigger('schedule');
      this.supervisor.conflicts?.recheck(); // the gateway addresses held are probed again for another holder
    }, { name: 'vlan-gateway-drift-check' });
    this.supervisor.knownTablesMaxAgeMs = knownTablesMaxAge(this.statsIntervalMs, this.task.getNextRuns(10));
  }

  /**
   * A new schedule: in effect at once if the check has started, else from its start; after stop(), never (a reload
   * still running when the supervisor stopped: its timer would keep the stopped process alive).
   */
  change(schedule: string): void {
    this.current = schedule;
    if (this.task && !this.stopped) {
      this.retire();
      this.start();
    }
  }

  stop(): void {
    this.stopped = true;
    this.retire();
  }

  /**
   * Ends the task for good: destroyed, not only stopped. node-cron 4 keeps every task it made in a registry of its
   * own until it is destroyed, so a stopped one (each reload that changed the schedule left one) stayed there, its
   * closure over the supervisor with it, for as long as the process ran.
   */
  private retire(): void {
    void this.task?.destroy();
    this.task = undefined;
  }
}
