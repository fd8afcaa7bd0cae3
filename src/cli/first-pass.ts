/**
 * What `vlan-gateway run` does once its first pass is done, well or not: what the start could leave until then
 * (the plan cache written, the first stats reading, the drift check scheduled, the code cache saved, the full
 * render check of the templates), so that none of it holds up the time to ready.
 */
import { clearStaleFlows } from '../apply/conntrack.js';
import type { CommandRunner } from '../exec/runner.js';
import type { Logger } from '../log.js';
import type { StatsCollector } from '../metrics/collector.js';
import { PREROUTING_CHAIN } from '../plan/chains.js';
import { portText, udpForwardOf } from '../plan/conntrack.js';
import { useDesiredStore } from '../plan/desired.js';
import type { ConntrackClear } from '../plan/types.js';
import type { ConfigState, Supervisor } from '../reconcile/supervisor.js';
import { codeCache } from './code-cache.js';
import type { DriftSchedule } from './drift-schedule.js';
import { describeError, exitCodeOf } from './errors.js';
import { clearPending, clearUnpolicedLeft, FlowsLeft, UnpolicedLeft } from './flows-left.js';
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
  /** The supervisor's runner (in its namespace, with its command timeout). */
  readonly runner: CommandRunner;
  /** `--netns`: whose file of flows left to clear is read (flows-left.ts). */
  readonly netns: string | undefined;
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
  // The clears an earlier run left, once the tables are as planned: after the first pass that succeeds, this one or a
  // later one when this one failed (the xtables lock held, a restore killed), not at the next restart.
  void supervisor.firstGoodPass.then(() => clearLeftFlows(parts)).then(() => clearApplyLeft(parts));
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

/**
 * The UDP flows a previous run left going to the gateway itself at a port it forwards. A pass clears them once the
 * forward is written (apply/conntrack.ts), but a run killed between the two (kill -9, the OOM killer, the
 * container stopped hard while `conntrack -D` ran) leaves the forward in place and the flows with the gateway:
 * the next run finds the nat table as planned, so no pass of it would clear them, and a client that keeps sending
 * from one port never reaches the forward's host. So after the first good pass, every UDP forward's port is looked
 * at once; what is found is cleared and said, and nothing is said when there was nothing to clear (or no conntrack
 * tool: a pass that needs one says so).
 */
async function clearLeftFlows({ log, supervisor, shutdown, runner }: FirstPassParts): Promise<void> {
  const desired = supervisor.lastDesired;
  if (!desired || shutdown.isStopping) return;
  const prerouting = desired.chains.find((c) => c.table === 'nat' && c.name === PREROUTING_CHAIN)?.rules ?? [];
  const local = [...new Set([
    ...(supervisor.view?.links ?? []).filter((l) => !l.loopback).flatMap((l) => l.addresses.map((a) => a.address)),
    ...desired.addresses.map((a) => a.address),
  ])].sort();
  const clears: ConntrackClear[] = prerouting.flatMap((r) => {
    const forward = udpForwardOf(r.line);
    return forward ? [{ kind: 'conntrack-clear' as const, ports: forward.ports, forward: 'added' as const, local }] : [];
  });
  if (clears.length === 0 || local.length === 0) return;
  const outcome = await clearStaleFlows(runner, clears);
  const ports = [...new Set(clears.map((c) => portText(c.ports)))].join(', ');
  if (outcome.cleared > 0) {
    log.warn({ cleared: outcome.cleared, ports }, `cleared ${outcome.cleared} UDP flow${outcome.cleared === 1 ? '' : 's'} to ${ports} that reached the gateway itself although the port is forwarded: left by a run stopped before it cleared them`);
  }
  if (outcome.warning) log.warn({ ports }, `UDP flows to ${ports} left by a previous run could not be cleared: ${outcome.warning}`);
}

/**
 * What a one-shot apply or down stopped before its clears left in its file (flows-left.ts): the supervisor that
 * follows it in the namespace would otherwise leave those flows for an apply that may never come (the clears of a
 * removed or changed forward, which the look above at the forwarded ports does not cover). After the first good
 * pass, as above.
 */
async function clearApplyLeft({ log, shutdown, runner, netns, supervisor }: FirstPassParts): Promise<void> {
  if (shutdown.isStopping) return;
  // The flows forwarded without the policy that a run or apply killed before it cleared them left (UnpolicedLeft):
  // the start pass found the policy in, and cleared nothing.
  const unpolicedLeft = await UnpolicedLeft.of(netns);
  const unpoliced = unpolicedLeft.read();
  if (unpoliced) {
    const local = [...(supervisor.view?.links ?? []).filter((l) => !l.loopback).flatMap((l) => l.addresses.map((a) => a.address)),
      ...(supervisor.lastDesired?.addresses ?? []).map((a) => a.address)];
    const outcome = await clearUnpolicedLeft(runner, unpoliced, local);
    if (outcome.cleared !== undefined) log.warn(outcome.cleared);
    if (outcome.warning !== undefined) log.warn(outcome.warning);
    // Kept (conntrack failed): the file stays as it is. Done: removed, unless a pass wrote a clear of its own since.
    if (!outcome.keep) unpolicedLeft.remove(unpoliced);
  }
  const left = await FlowsLeft.of(netns);
  const pending = left.read();
  if (pending.length === 0) return;
  const outcome = await clearPending(runner, pending);
  if (outcome.cleared !== undefined) log.warn(outcome.cleared);
  if (outcome.warning !== undefined) log.warn(outcome.warning);
  left.write(outcome.still);
}
