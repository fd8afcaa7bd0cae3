import type { CommandModule } from 'yargs';
import { ApplyError } from '../apply/apply.js';
import { flowsWarning, UNPOLICED_CONNTRACK_MISSING, unpolicedClearedMessage, type FlowsCleared } from '../apply/conntrack.js';
import { userRulesGuard } from '../apply/user-rules-check.js';
import type { Facts } from '../observe/facts.js';
import { mergeUnpoliced } from '../plan/conntrack.js';
import { formatPlan } from '../plan/format.js';
import type { ConntrackClear, Plan } from '../plan/types.js';
import { reconcileOnce, type Mode } from '../reconcile/once.js';
import { loadFor, makeRunner, out, readWhileLoading, withPlanCache, type GlobalArgs } from './context.js';
import { FailureError } from './errors.js';
import { clearPending, clearUnpolicedLeft, FlowsLeft, removeAbandonedState, UnpolicedLeft } from './flows-left.js';
import { InstanceLock, WRITE_LOCK_TIMEOUT_MS, WriteLock } from './instance-lock.js';

/**
 * A supervisor repairs what it finds different from its config: an `apply` of another config beside it lasts until
 * its next check (seconds), and a `down` leaves the VLANs routed with no policy at all until then (ip_forward stays
 * on in a container, where Docker's --sysctl set it). Neither is what the person typing it wants, so both are
 * refused, saying what to do instead.
 */
async function refuseBesideSupervisor(netns: string | undefined, mode: Mode): Promise<void> {
  const pid = await InstanceLock.holder(netns);
  if (pid === undefined) return;
  const where = netns === undefined ? 'this network namespace' : `network namespace ${netns}`;
  const instead = mode === 'down'
    ? 'stop it first (run with --cleanup-on-exit, it removes what it added as it stops)'
    : 'change its config file instead: it applies a change within a second (or on SIGHUP)';
  throw new FailureError(`vlan-gateway run${pid ? ` (pid ${pid})` : ''} manages ${where} and would undo this ${mode === 'down' ? 'down' : 'apply'} at its next check: ${instead}; nothing was changed`);
}

/**
 * Runs `write` (a read, plan and write of the namespace) holding its write lock, with no other apply, down or
 * `lab up` between, and refused beside a supervisor of the namespace. What apply, down and `lab up` write with.
 * `stopWaiting` (lab up, after a Ctrl-C) ends a wait for the lock with WaitStopped, having written nothing.
 */
export async function withWriteLock<T>(netns: string | undefined, mode: Mode, write: () => Promise<T>, stopWaiting?: () => boolean, held?: WriteLock): Promise<T> {
  const lock = held ?? await WriteLock.wait(netns, {
    timeoutMs: WRITE_LOCK_TIMEOUT_MS,
    onWait: (message) => process.stderr.write(`vlan-gateway: ${message}\n`),
    ...(stopWaiting ? { stopWaiting } : {}),
  });
  try {
    await refuseBesideSupervisor(netns, mode);
    return await write();
  } finally {
    await lock.release();
  }
}

async function converge(args: GlobalArgs, mode: Mode): Promise<void> {
  await withPlanCache(async (cache) => {
    const runner = makeRunner(args.netns);
    // Where no other apply or down holds the namespace, its write lock is taken first and the namespace is read while
    // the config file loads; otherwise the file is loaded first (an invalid one waits for nothing), then read. (A
    // namespace that is not there is said by the wait below, after the file's problems, as before.)
    const early = await WriteLock.take(args.netns).catch(() => undefined);
    const load = () => loadFor(mode, args, cache);
    const { loaded: { config, templates }, reading } = early
      ? await readWhileLoading(runner, load).catch(async (error: unknown) => {
        await early.release();
        throw error;
      })
      : { loaded: await load(), reading: undefined };
    let unpoliced: FlowsCleared | undefined;
    let unpolicedWhy: NonNullable<Plan['unpoliced']> = { local: [] };
    // Read, plan and write with no other apply or down between.
    const { plan, ms, notices } = await withWriteLock(args.netns, mode, async () => {
      const started = performance.now();
      removeAbandonedState(); // what a write of those files killed before its rename left
      // The clears an apply stopped before it did them left (see flows-left.ts): a file read, no process.
      const left = await FlowsLeft.of(args.netns);
      const pending = left.read();
      // The clear of the flows forwarded without the policy that an apply stopped before it ran left (UnpolicedLeft).
      const unpolicedLeft = await UnpolicedLeft.of(args.netns);
      const unpolicedPending = unpolicedLeft.read();
      let unpolicedRan: FlowsCleared | undefined;
      // Said with the plan (its warnings) when the pass succeeds; here when it fails after the clears ran.
      let flows: FlowsCleared | undefined;
      let planned: ConntrackClear[] = [];
      const observer = {
        flowsCleared: (outcome: FlowsCleared) => (flows = outcome),
        unpolicedCleared: (outcome: FlowsCleared, why: NonNullable<Plan['unpoliced']>) => {
          unpoliced = outcome;
          unpolicedWhy = why;
          unpolicedRan = outcome;
          // Done with this pass's clear, which took the flows an earlier one left too; kept where conntrack failed.
          unpolicedLeft.write(outcome.warning === undefined ? undefined : mergeUnpoliced(unpolicedPending, why));
        },
      };
      const guard = userRulesGuard(runner, templates);
      const beforeWrite = async (facts: Facts, plan: Plan) => {
        await guard(facts, plan);
        // Kept before the nat table is written: stopped between the two, the next apply finds them.
        planned = plan.steps.filter((s): s is ConntrackClear => s.kind === 'conntrack-clear');
        if (planned.length > 0) left.write([...pending, ...planned]);
        // Kept before the tables are written: stopped after them, before the clear, the next apply finds it.
        if (plan.unpoliced) unpolicedLeft.write(mergeUnpoliced(unpolicedPending, plan.unpoliced));
      };
      const { facts, plan } = await reconcileOnce(runner, config, templates, { mode, observer, beforeWrite, ...(reading ? { reading } : {}) }).catch((error: unknown) => {
        // Rolled back before the clears: the forwards are as they were, and so is what was left to clear.
        if (flows === undefined && planned.length > 0 && error instanceof ApplyError && error.rolledBack) left.write(pending);
        else if (flows !== undefined) left.write([...pending, ...(flows.warning === undefined ? [] : planned)]);
        const warning = flowsWarning(flows);
        if (warning !== undefined) process.stderr.write(`vlan-gateway: warning: ${warning.text}\n`);
        // The same failure as an apply's (the table, the line, "rolled back"), said as down's.
        throw mode === 'down' && error instanceof ApplyError ? new FailureError(`down failed: ${error.message}`) : error;
      });
      // What this pass could not clear (the tool there, but failing) is tried again by the next one.
      const still = flows?.warning === undefined ? [] : planned;
      const notices: string[] = [];
      if (unpolicedPending && !unpolicedRan) {
        const local = [...facts.links.filter((l) => !l.loopback).flatMap((l) => l.addresses.map((a) => a.address)), ...plan.desired.addresses.map((a) => a.address)];
        const outcome = await clearUnpolicedLeft(runner, unpolicedPending, local);
        if (outcome.cleared !== undefined) notices.push(outcome.cleared);
        if (outcome.warning !== undefined) notices.push(`warning: ${outcome.warning}`);
        unpolicedLeft.write(outcome.keep ? unpolicedPending : undefined);
      }
      if (pending.length === 0) {
        if (planned.length > 0) left.write(still);
        return { plan, ms: performance.now() - started, notices };
      }
      const outcome = await clearPending(runner, pending);
      if (outcome.cleared !== undefined) notices.push(outcome.cleared);
      if (outcome.warning !== undefined) notices.push(`warning: ${outcome.warning}`);
      left.write([...outcome.still, ...still]);
      return { plan, ms: performance.now() - started, notices };
    }, undefined, early);
    out(formatPlan(plan).replace(/pending\.$/, `applied in ${Math.round(ms)} ms.`));
    for (const notice of notices) process.stderr.write(`vlan-gateway: ${notice}\n`);
    if (unpoliced?.cleared) out(unpolicedClearedMessage(unpoliced.cleared, unpolicedWhy));
    const warning = unpoliced?.missing ? UNPOLICED_CONNTRACK_MISSING : unpoliced?.warning;
    if (warning !== undefined) process.stderr.write(`vlan-gateway: warning: ${warning}\n`);
  });
}

export const applyCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'apply',
  describe: 'Bring the namespace to the config: gateway addresses, route, rules, ip_forward (atomic, idempotent)',
  handler: (args) => converge(args, 'up'),
};

export const downCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'down',
  describe: 'Remove what the gateway added (its addresses, chains, jumps and ipsets) and nothing else',
  handler: (args) => converge(args, 'down'),
};
