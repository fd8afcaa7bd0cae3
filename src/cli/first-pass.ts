/**
 * What `vlan-gateway run` does once its first pass is done, well or not: what the start could leave until then
 * (the plan cache written, the first stats reading, the drift check scheduled, the code cache saved, the full
 * render check of the templates), so that none of it holds up the time to ready.
 */
import type { Logger } from '../log.js';
import type { StatsCollector } from '../metrics/collector.js';
import { useDesiredStore } from '../plan/desired.js';
import type { ConfigState, Supervisor } from '../reconcile/supervisor.js';
import { codeCache } from './code-cache.js';
import type { DriftSchedule } from './drift-schedule.js';
import { describeError, exitCodeOf } from './errors.js';
import { checkRules, type RulesCheck } from './load-checked.js';
import type { PlanCache } from './plan-cache.js';
import type { Shutdown } from './shutdown.js';

export interface FirstPassParts {
  readonly log: Logger;
  readonly supervisor: Supervisor;
  readonly collector: StatsCollector;
  readonly driftSchedule: DriftSchedule;
  readonly planCache: PlanCache | undefined;
  readonly shutdown: Shutdown;
  /** The config the start loaded, and how its rules are checked. */
  readonly initial: ConfigState;
  readonly rulesCheck: RulesCheck;
}

export function afterFirstPass(parts: FirstPassParts): void {
  const { log, supervisor, collector, driftSchedule, planCache, shutdown } = parts;
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
  setTimeout(() => void renderCheck(parts), supervisor.ready ? 1000 : 0);
}

/** The full render check the start left out: a template that fails it stops the supervisor (exit 2 when invalid). */
async function renderCheck({ log, shutdown, initial, rulesCheck }: FirstPassParts): Promise<void> {
  if (shutdown.isStopping) return;
  try {
    await checkRules(initial, rulesCheck);
  } catch (error) {
    process.stderr.write(`vlan-gateway: ${describeError(error)}\n`);
    log.fatal({ err: error }, 'invalid rule templates');
    shutdown.exitCode = exitCodeOf(error);
    void shutdown.stop('invalid config');
  }
}
