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

/** The wall clock's lead over the monotonic one: it changes when the wall clock steps. */
const wallLead = () => Date.now() - performance.now();

/** A wall clock set back by more than this is a step (not NTP's slewing, at most 0.5 ms a second). */
const STEP_BACK_MS = 1000;
/** The longest the step watch sleeps (a daily schedule's next run is a day away). */
const WATCH_MAX_MS = 600_000;

/**
 * The drift check is scheduled (start) once the first pass is done: until then it has nothing to check, and setting
 * up the schedule (node-cron's time-zone formatter) costs the start 20 ms or more. A reload may change the schedule
 * before or after.
 */
export class DriftSchedule {
  private task: ReturnType<typeof cron.schedule> | undefined;
  private stopped = false;
  /** Wakes just after the task's next run is due, to see whether the wall clock went back meanwhile (watch()). */
  private watchTimer: NodeJS.Timeout | undefined;
  private lead = 0;

  constructor(private current: string, private readonly statsIntervalMs: number, private readonly supervisor: Supervisor) {}

  get schedule(): string {
    return this.current;
  }

  /**
   * A cron schedule is wall-clock time, and node-cron 4 plans each run as a time of day. Set forward (a VM resumed
   * from suspend, an NTP step), it skips the runs stepped over and goes on: fine, but it printed one
   * "[NODE-CRON] [WARN] missed execution" line per run skipped on stderr (a night's suspend at the default schedule:
   * over a thousand), so that warning is off. Set back by X, it waited for the time of day it had planned, X away:
   * no drift check (nor address conflict recheck) for X. watch() notices such a step and starts the task again,
   * which plans from the time of day now.
   */
  start(): void {
    this.task = cron.schedule(this.current, () => {
      this.watch();
      this.supervisor.trigger('schedule');
      this.supervisor.conflicts?.recheck(); // the gateway addresses held are probed again for another holder
    }, { name: 'vlan-gateway-drift-check', suppressMissedWarning: true });
    this.supervisor.knownTablesMaxAgeMs = knownTablesMaxAge(this.statsIntervalMs, this.task.getNextRuns(10));
    this.watch();
  }

  /** Sleeps until just after the next run is due (on the monotonic clock); a wall clock set back since restarts the task. */
  private watch(): void {
    clearTimeout(this.watchTimer);
    this.lead = wallLead();
    const next = this.task?.getNextRun();
    if (!next) return;
    const delay = Math.min(Math.max(0, next.getTime() - Date.now()) + STEP_BACK_MS, WATCH_MAX_MS);
    this.watchTimer = setTimeout(() => {
      if (!this.task || this.stopped) return;
      if (wallLead() < this.lead - STEP_BACK_MS) {
        this.retire();
        this.start();
      } else {
        this.watch();
      }
    }, delay);
    this.watchTimer.unref();
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
    clearTimeout(this.watchTimer);
    this.watchTimer = undefined;
    void this.task?.destroy();
    this.task = undefined;
  }
}
