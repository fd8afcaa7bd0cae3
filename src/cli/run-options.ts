/**
 * The flags of `vlan-gateway run`: their definitions, their checks (a wrong value exits 2 before anything starts),
 * and the settings they override in the config (a flag, else the config's key, else the default).
 */
import type { Argv } from 'yargs';
import { cronProblem } from '../config/check-reconcile.js';
import { DEFAULT_LISTEN, listenProblem } from '../config/listen.js';
import { shown } from '../config/problems.js';
import { MAX_INTERVAL_MS, type Config } from '../config/schema.js';
import type { GlobalArgs } from './context.js';
import { UsageError } from './errors.js';

const DEFAULT_SCHEDULE = '*/30 * * * * *';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export interface RunArgs extends GlobalArgs {
  listen?: string;
  schedule?: string;
  'log-level'?: string;
  'cleanup-on-exit'?: boolean;
  'min-interval'?: number;
  'stats-interval'?: number;
  'health-timeout'?: number;
  'command-timeout'?: number;
}

export const runOptions = (y: Argv<GlobalArgs>) => y
  .option('listen', { type: 'string', describe: `HTTP address for /metrics, /healthz, /readyz, /status (default: http.listen, else ${DEFAULT_LISTEN})` })
  .option('schedule', { type: 'string', describe: `cron schedule of the drift check, seconds field first (default: reconcile.schedule, else "${DEFAULT_SCHEDULE}")` })
  .option('log-level', { type: 'string', describe: `${LOG_LEVELS.join(', ')} (default: $LOG_LEVEL, else info)` })
  .option('cleanup-on-exit', { type: 'boolean', describe: 'on SIGTERM/SIGINT, run `down` before exiting' })
  .option('min-interval', { type: 'number', describe: 'minimum ms between two reconciles (default: reconcile.minIntervalMs, else 100)' })
  .option('stats-interval', { type: 'number', default: 5000, describe: 'ms between two reads of kernel counters' })
  .option('health-timeout', { type: 'number', default: 60_000, describe: 'ms a change may wait, or reconciles fail, before /healthz fails' })
  .option('command-timeout', { type: 'number', default: 60_000, describe: 'ms a command (iptables-restore, ipset, ip) may run before it is killed and the pass retried' });

/** Checks the flags that need no config; returns the log level (--log-level, else $LOG_LEVEL). */
export function checkRunFlags(args: RunArgs): string | undefined {
  const listenWhy = args.listen === undefined ? undefined : listenProblem(args.listen, `--listen ${shown(args.listen)}`);
  if (listenWhy !== undefined) throw new UsageError(listenWhy);
  if (args.schedule !== undefined) checkSchedule(args.schedule);
  checkMs('stats-interval', args['stats-interval'], 100);
  checkMs('min-interval', args['min-interval'], 0);
  checkMs('health-timeout', args['health-timeout'], 1000);
  checkMs('command-timeout', args['command-timeout'], 1000);
  return checkLogLevel(args['log-level'] ?? process.env.LOG_LEVEL);
}

/** Milliseconds from a flag: a whole number from `min` up to an hour (setTimeout fires at once past 2^31 ms). */
function checkMs(flag: string, value: number | undefined, min: number): void {
  if (value !== undefined && !(Number.isInteger(value) && value >= min && value <= MAX_INTERVAL_MS)) {
    throw new UsageError(`--${flag} ${Number.isNaN(value) ? 'is not a number' : String(value)}: expected a whole number of milliseconds from ${min} to ${MAX_INTERVAL_MS}`);
  }
}

function checkLogLevel(level: string | undefined): string | undefined {
  if (level !== undefined && !LOG_LEVELS.includes(level)) {
    throw new UsageError(`log level ${JSON.stringify(level)} (--log-level or $LOG_LEVEL): expected one of ${LOG_LEVELS.join(', ')}`);
  }
  return level;
}

/** The supervisor's own settings under a config: each from its flag, else the config, else the default. */
export interface RunSettings {
  /** The drift check's cron schedule. */
  readonly schedule: string;
  readonly minIntervalMs: number;
  /** Where the HTTP endpoints listen, and what said so (for a message). */
  readonly listen: string;
  readonly listenFrom: '--listen' | 'http.listen' | 'the default http.listen';
}

export function runSettings(args: RunArgs, config: Config): RunSettings {
  return {
    schedule: args.schedule ?? config.reconcile.schedule ?? DEFAULT_SCHEDULE,
    minIntervalMs: args['min-interval'] ?? config.reconcile.minIntervalMs ?? 100,
    listen: args.listen ?? config.http.listen ?? DEFAULT_LISTEN,
    listenFrom: args.listen !== undefined ? '--listen' : config.http.listen !== undefined ? 'http.listen' : 'the default http.listen',
  };
}

/** The drift check's schedule, read as reconcile.schedule is (a backwards range, a step past its field: refused). */
export function checkSchedule(schedule: string): void {
  const why = cronProblem(schedule);
  if (why !== undefined) throw new UsageError(`--schedule ${JSON.stringify(schedule)}${why}`);
}
