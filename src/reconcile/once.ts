/** One pass of observe → plan → apply. Shutdown and `down` are the same pass with an empty desired state. */
import { AccountingError, ApplyError, applyPlan } from '../apply/apply.js';
import type { ApplyObserver } from '../apply/observer.js';
import { CONNTRACK_MISSING_WARNING, conntrackMissing, flowsWarning, type FlowsCleared } from '../apply/conntrack.js';
import { userTemplateOf } from '../apply/user-rules-check.js';
import type { Config } from '../config/schema.js';
import type { CommandRunner } from '../exec/runner.js';
import { type Backend, type BackendFindings, type Facts, type KnownSets, type KnownTables } from '../observe/facts.js';
import { readFactsStaged, readTablesAgain, type StagedFacts } from '../observe/read.js';
import { planDesired, planEmpty, type Templates } from '../plan/desired.js';
import { diff, InUseError, memberSetOf, setSteps } from '../plan/diff.js';
import type { Desired, Plan, Warning } from '../plan/types.js';

export type Mode = 'up' | 'down';

/** Was the ipset tool there at the last read (a property of the machine, not of a namespace)? */
let ipsetSeen = true;

/** What a supervisor carries from one pass to the next that the kernel cannot show it, or need not be asked. */
export interface Memory {
  readonly forwardingWasOff?: boolean;
  /** Our sets' members as the last good pass left them (see KnownSets). */
  readonly knownSets?: KnownSets;
  /** Our tables as the supervisor knows them (read, or written by it), while the stats collector vouches for them. */
  readonly knownTables?: KnownTables;
}

/** Our sets' members once `plan` has been applied in full: what the next pass may take as known. */
export function knownSetsAfter(plan: Plan): KnownSets {
  return new Map(plan.desired.sets.map((s) => [s.name, memberSetOf(s)]));
}

/** A failed table write that was rolled back in full: what a plan made from stale tables runs into. */
const stale = (error: unknown) => error instanceof ApplyError && !(error instanceof AccountingError) && error.rolledBack && error.step.kind === 'table';

export function planFor(config: Config, facts: Facts, templates: Templates, mode: Mode, memory: Memory = {}, onDesired?: (desired: Desired) => void): Plan {
  const desired = mode === 'up' ? planDesired(config, facts, templates) : planEmpty(config, facts, memory);
  onDesired?.(desired);
  return diff(desired, facts, memory);
}

export interface ReconcileResult {
  readonly facts: Facts;
  /**
   * The plan, applied (or, with dryRun, to apply). Its warnings include what the conntrack clears could not do: the
   * tool missing (with dryRun, where it would be needed), or a clear that failed.
   */
  readonly plan: Plan;
  /** What the plan's conntrack clears did, when it had some and was applied. */
  readonly flows?: FlowsCleared;
}

/** The plan, with what the conntrack clears could not do said among its warnings. */
function withClearWarning(plan: Plan, warning: Warning | undefined): Plan {
  return warning === undefined ? plan : { ...plan, warnings: [...(plan.warnings ?? []), warning] };
}

export async function reconcileOnce(
  runner: CommandRunner,
  config: Config,
  templates: Templates,
  options: {
    mode?: Mode; dryRun?: boolean; backend?: Backend; observer?: ApplyObserver; memory?: Memory;
    /** With `backend`: what the pass that chose it found besides (a read of that backend alone does not see it). */
    backendFindings?: BackendFindings;
    /**
     * What the pass read, and the state it wants there, before it compares the two: a supervisor shows them even when
     * the pass then fails (a set of our name it did not make, a write the kernel refuses).
     */
    onDesired?: (facts: Facts, desired: Desired) => void;
    /** Asked before anything is written, only when there is something to write: throws to write nothing. */
    beforeWrite?: (facts: Facts, plan: Plan) => Promise<void>;
    /**
     * The namespace's reads, already started by readFactsStaged(runner) (a one-shot command reads while its config
     * file loads: see readWhileLoading). Only for a pass without a backend or a memory, whose reads take no options.
     */
    reading?: StagedFacts;
  } = {},
): Promise<ReconcileResult> {
  const mode = options.mode ?? 'up';
  const known = mode === 'up' ? options.memory?.knownTables : undefined;
  if (options.reading && (options.backend || options.memory?.knownSets || known)) throw new Error('reads started before the pass take no backend or memory');
  const reading = options.reading ?? readFactsStaged(runner, {
    ...(options.backend ? { backend: options.backend } : {}),
    ...(options.memory?.knownSets ? { knownSets: options.memory.knownSets } : {}),
    ...(known ? { knownTables: known } : {}),
  });
  if (mode === 'up') {
    // Render while the tables are still being read (iptables-save at 10,000 rules is the slowest read): the
    // desired state needs only the interfaces. Whether ipset is here is taken from the last pass; if that
    // guess was wrong, planFor below renders again, and otherwise finds this result remembered.
    // The reads that wait for the NICs (their force_forwarding, one more cat) have been started when `interfaces`
    // resolves; one turn of the loop first, so that what has come in meanwhile is taken before the render holds it
    // (about 100 ms at 100 VLANs, at a start).
    const early = await reading.interfaces.then(async (found) => {
      await new Promise<void>((resolve) => setImmediate(resolve));
      return planDesired(config, { ...found, ...(ipsetSeen ? { sets: new Map() } : {}) }, templates);
    }, () => undefined);
    // And the set steps, once the sets are read (before the tables, as a rule): the plan below finds them made when
    // it plans from this desired state and these sets, and works them out itself otherwise (an error included).
    if (early) {
      reading.sets.then((sets) => {
        if (sets) setSteps(early.sets, sets, runner.prefix);
      }).catch(() => {});
    }
  }
  let facts = await reading.facts;
  if (options.backend && options.backendFindings && facts.backendWhy === undefined) facts = { ...facts, ...options.backendFindings };
  ipsetSeen = facts.sets !== undefined;
  const planNow = () => planFor(config, facts, templates, mode, options.memory, (desired) => options.onDesired?.(facts, desired));
  let plan: Plan;
  try {
    plan = planNow();
  } catch (error) {
    if (!known || !(error instanceof InUseError)) throw error;
    // The rule that refers to a chain or set it removes was seen by an earlier read: the stats collector checks our
    // chains, not the rest, so it may have been deleted since. Read the tables, and plan again.
    facts = { ...facts, ...(await readTablesAgain(runner, known.backend)) };
    plan = planNow();
  }
  if (options.dryRun) {
    // Nothing is cleared: whether it could be is said where it would be needed.
    const clears = plan.steps.some((s) => s.kind === 'conntrack-clear');
    return { facts, plan: withClearWarning(plan, clears && await conntrackMissing(runner) ? CONNTRACK_MISSING_WARNING : undefined) };
  }
  let flows: FlowsCleared | undefined;
  const given = options.observer;
  const observer: ApplyObserver = {
    ...given,
    flowsCleared: (outcome) => {
      flows = outcome;
      given?.flowsCleared?.(outcome);
    },
  };
  if (plan.steps.length > 0) {
    await options.beforeWrite?.(facts, plan);
    try {
      await applyPlan(runner, facts.backend, plan, observer, userTemplateOf(templates));
    } catch (error) {
      if (!known || !stale(error)) throw error;
      // Planned from remembered tables that had changed since the stats collector's last reading (which its next
      // one would report): a restore refused the plan, and everything was rolled back. Read them, and go again.
      facts = { ...facts, ...(await readTablesAgain(runner, known.backend)) };
      plan = planNow();
      if (plan.steps.length > 0) await applyPlan(runner, facts.backend, plan, observer, userTemplateOf(templates));
    }
  }
  return { facts, plan: withClearWarning(plan, flowsWarning(flows)), ...(flows ? { flows } : {}) };
}
