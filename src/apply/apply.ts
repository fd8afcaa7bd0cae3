/**
 * Carrying out a plan: each step is one write (ip, sysctl, or one iptables-restore per table), and each write
 * that succeeds records how to undo it. When a step fails, the earlier ones are undone in reverse, so a failed
 * apply leaves the previous rules, addresses and route in place, and the error names what failed and why. The
 * writes themselves are in tables.ts, ipsets.ts and addresses.ts; this file stages them and rolls them back.
 */
import { CommandError, type CommandRunner } from '../exec/runner.js';
import type { Backend } from '../observe/facts.js';
import { IP_FORWARD, setMemberAdmits, USER_PREFIX } from '../plan/chains.js';
import { portText } from '../plan/conntrack.js';
import type { ChainSource } from '../plan/check.js';
import type { ChainChange, ConntrackClear, Plan, Step, TableStep } from '../plan/types.js';
import { isAddressStep, runAddressBatch, type AddressStep } from './addresses.js';
import { announce } from './announce.js';
import { clearStaleFlows, clearUnpolicedFlows } from './conntrack.js';
import { halfInstalled, lockFileHint, privilegeHint, setInUseHint, sysctlHint } from './hints.js';
import { destroyLine, runLaterSets, runSetRemakes, runSetScript, setCreate, type RemakeStep, type SetLine } from './ipsets.js';
import { tell, type ApplyObserver } from './observer.js';
import { refusedAtCommit, refusedRulesText, refusedUserRules, restoreFailedLine, restoreFailureContext, type CommitRefusal, type RefusedRule } from './parse-restore-failure.js';
import { StepFailed, UndoFailed, type Undo } from './steps.js';
import { runTable } from './tables.js';

export class ApplyError extends Error {
  override readonly name: string = 'ApplyError';
  constructor(
    message: string,
    readonly step: Step,
    readonly rolledBack: boolean,
    readonly rollbackErrors: readonly string[],
    /** The payload line a table's restore named as failing (`-A VGW-USER-FORWARD …`), when it named one. */
    readonly failedLine?: string,
    /** The user's chain (rules.dir) the refused rule is in, when the restore's words or its line tell. */
    readonly userChain?: string,
    /** Every rule of rules.dir the kernel refused at commit, in each table that failed, where iptables names them. */
    readonly refusedRules: readonly RefusedRule[] = [],
    /** The kernel refused the failing table's payload as it was committed (see CommitRefusal), whoever's rule it was. */
    readonly commitRefusal?: CommitRefusal,
  ) {
    super(message);
  }
}

/** Only the accounting sets' members failed: nothing was rolled back, because forwarding does not depend on them. */
export class AccountingError extends ApplyError {
  override readonly name = 'AccountingError';
  constructor(message: string, step: Step) {
    super(message, step, false, []);
  }
}

type SysctlStep = Extract<Step, { kind: 'sysctl' }>;

async function runSysctl(runner: CommandRunner, step: SysctlStep): Promise<Undo | undefined> {
  await runner.run(['sysctl', '-w', `${step.key}=${step.value}`]);
  const previous = step.previous;
  return previous === undefined ? undefined : () => runner.run(['sysctl', '-w', `${step.key}=${previous}`], { rollback: true });
}

function describeStep(step: Step): string {
  switch (step.kind) {
    case 'link-up': return `bringing up ${step.nic} (vlan ${step.vlan})`;
    case 'address-add': return `adding ${step.address}/${step.prefix} to ${step.nic} (vlan ${step.vlan})`;
    case 'address-del': return `removing ${step.address}/${step.prefix} from ${step.nic}${step.vlan ? ` (vlan ${step.vlan})` : ''}`;
    case 'route': return `setting the default route via ${step.gateway}`;
    case 'table': return `applying the ${step.table} table`;
    case 'set-update': return `${step.create ? 'creating' : 'updating'} ipset ${step.set}`;
    case 'set-destroy': return `removing ipset ${step.set}`;
    case 'sysctl': return `setting ${step.key}=${step.value}`;
    case 'conntrack-clear': return `clearing UDP flows to ${portText(step.ports)}`;
  }
}

function explain(step: Step, error: unknown, backend: Backend, prefix: readonly string[] | undefined): string {
  if (!(error instanceof CommandError)) return String((error as Error)?.message ?? error);
  const stderr = error.stderr.trim();
  if (step.kind === 'sysctl') {
    const hint = sysctlHint(step.key, step.value, stderr);
    return `${stderr || error.message}${hint ? `; ${hint}` : ''}`;
  }
  const hint = privilegeHint(stderr) ?? lockFileHint(stderr) ?? (step.kind === 'set-destroy' ? setInUseHint(step.set, backend, stderr, prefix) : undefined);
  if (step.kind === 'table') {
    // Its save is there (the pass read the tables with it): a half-installed iptables, said as the read says the reverse.
    if (error.notFound) return halfInstalled(backend, 'restore');
    const context = restoreFailureContext(step.payload, error.stderr);
    const program = error.argv.find((a) => a.endsWith('-restore')) ?? error.argv[0];
    // A restore killed has no exit code (the runner says by what it was killed): "(exit null)" told nothing.
    return `${program} failed${error.exitCode === null ? '' : ` (exit ${error.exitCode})`}: ${stderr}${hint ? `; ${hint}` : ''}${context ? `\n${context}` : ''}`;
  }
  return `${error.argv.join(' ')}: ${stderr || (error.exitCode === null ? 'killed' : `exit ${error.exitCode}`)}${hint ? `; ${hint}` : ''}`;
}

interface Task {
  /** The step a failure is reported against when the task does not name one itself (StepFailed). */
  readonly step: Step;
  run(): Promise<Undo | undefined>;
}

/**
 * Can ip_forward be 1 while the tables are written? Not when the plan switches it off before them (down, after an
 * apply that had switched it on) or on after them (it was 0); otherwise the plan does not touch it and it may be.
 */
function forwardingMayBeOn(steps: readonly Step[]): boolean {
  return !steps.some((s) => s.kind === 'sysctl' && s.key === IP_FORWARD && (s.value === '0' || s.previous === '0'));
}

/**
 * The plan's steps as stages; the tasks of one stage are independent and run at once. In order:
 *   0. sysctls the plan puts before its tables (ip_forward=0 on the way out: fail closed first), and the sets made
 *      again at the gateway's size (runSetRemakes), before any line writes to them;
 *   1. one `ipset restore` creating new sets (the tables' rules need them to exist) and writing the members of
 *      verdict sets (the rules decide on them) that stop packets, or that go into a set created now;
 *   2. each table's restore, and beside them the address/link/route batch (no rule depends on an address, and
 *      forwarding stays off until stage 5, so the batch need not hold up the tables);
 *   3. one `ipset restore`: the members that let more packets on in a set the rules in force already match on (a NIC
 *      added to VGW-NICS-n, say: the rules before this apply's would accept towards it without the branch to its
 *      pairs' rules), each set's preceded by its deletions where it is an accounting set (never more members of a
 *      net than either state has: see BUCKET_LIMIT), then the sets no longer wanted (after the tables stopped
 *      referring to them; refused first, before any line, if one is still in use: refuseSetsInUse);
 *   4. (see below);
 *   5. the other sysctls (ip_forward=1 only once the FORWARD policy is in place).
 * After them (applyPlan), outside the rollback: the conntrack clears (apply/conntrack.ts), once the nat table is in.
 * Beside them, `accounting`: the accounting sets' other members, one `ipset restore` started with stage 2 (the
 * deletions from those that gain no member in stage 3, and the members of sets created now). No verdict depends on them, so forwarding does not wait for
 * them; the apply does.
 *
 * Where forwarding may be on while the tables are written (a container started with --sysctl
 * net.ipv4.ip_forward=1, a down that leaves forwarding on), the gateway addresses are what lets the VLANs' hosts
 * route through the namespace, so the batch is split around the tables: addresses removed in stage 1, before a
 * table can take our policy away; addresses added, NICs set up and the default route in stage 4, once the tables
 * and the sets are the whole policy. A VLAN's gateway never answers while FORWARD lets everything through.
 */
function stages(runner: CommandRunner, backend: Backend, steps: readonly Step[], observer: ApplyObserver): { stages: Task[][]; accounting?: Task } {
  const out: Task[][] = [[], [], [], [], [], []];
  const firstTable = steps.findIndex((s) => s.kind === 'table');
  const address = steps.filter(isAddressStep);
  const batch = (stage: number, list: readonly AddressStep[]) => {
    if (list.length > 0) out[stage]!.push({ step: list[0]!, run: () => runAddressBatch(runner, list) });
  };
  if (firstTable !== -1 && forwardingMayBeOn(steps)) {
    batch(1, address.filter((s) => s.kind === 'address-del'));
    batch(4, address.filter((s) => s.kind !== 'address-del'));
  } else {
    batch(2, address);
  }
  const remakes: RemakeStep[] = [];
  const before: SetLine[] = [];
  const counting: SetLine[] = [];
  const after: SetLine[] = [];
  const destroys: SetLine[] = [];
  steps.forEach((step, i) => {
    switch (step.kind) {
      case 'sysctl':
        out[firstTable !== -1 && i < firstTable ? 0 : 5]!.push({ step, run: () => runSysctl(runner, step) });
        break;
      case 'table':
        out[2]!.push({ step, run: () => runTable(runner, backend, step, observer) });
        break;
      case 'set-update': {
        if (step.remake !== undefined) remakes.push(step as RemakeStep);
        if (step.create) before.push({ line: setCreate(step.set, step.type, step.add), undo: `destroy ${step.set}`, step });
        const members = step.role === 'verdict' ? before : counting;
        // A set created now is matched on by no rule yet: its members go in whenever. In one that exists, a member
        // that lets packets on waits for the tables, and so does a deletion from one whose members stop them.
        const admits = setMemberAdmits(step.set);
        const adds = step.create || !admits ? members : after;
        // An accounting set that also gains members in stage 3 loses its others just before, in the same script: a
        // fill still running then (a loaded machine) would leave a net with its old and new members at once, past
        // what the kernel lets a bucket hold (BUCKET_LIMIT): "Hash is full", and the set's buckets at the limit. A
        // verdict set's deletions that narrow what passes stay before the tables (stage 1, done before stage 3 adds):
        // kept until after them, a source no longer genuine on a NIC (VGW-SUBNET-NICS) passed the new rules.
        const dels = !admits || (step.role === 'accounting' && adds === after && step.add.length > 0) ? after : members;
        for (const m of step.del) dels.push({ line: `del ${step.set} ${m} -exist`, undo: `add ${step.set} ${m} -exist`, step, deletes: { set: step.set, member: m } });
        // A created set is destroyed by its own undo: its members need none.
        // Into a set that exists, a member starts from zero: added without counters, the kernel may hand it the
        // counters of the member that last had its slot (a NIC detached and attached again), counted twice.
        for (const m of step.add) {
          adds.push(step.create
            ? { line: `add ${step.set} ${m} -exist`, step }
            : { line: `add ${step.set} ${m} packets 0 bytes 0 -exist`, undo: `del ${step.set} ${m} -exist`, step });
        }
        break;
      }
      case 'set-destroy':
        destroys.push(destroyLine(step));
        break;
      default:
        break; // address steps: the batch above
    }
  });
  // Before any line that writes to a set: those go to the set made again.
  if (remakes.length > 0) out[0]!.push({ step: remakes[0]!, run: () => runSetRemakes(runner, remakes, observer) });
  const script = (lines: readonly SetLine[]): Task | undefined => (lines.length > 0 ? { step: lines[0]!.step, run: () => runSetScript(runner, lines) } : undefined);
  const create = script(before);
  if (create) out[1]!.push(create);
  const later = [...after, ...destroys];
  if (later.length > 0) out[3]!.push({ step: later[0]!.step, run: () => runLaterSets(runner, backend, later) });
  const accounting = script(counting);
  return { stages: out, ...(accounting ? { accounting } : {}) };
}

/** The chains of rules.dir a table step writes (creates or rewrites). */
const userChainsWritten = (step: TableStep) => step.chains.filter((c) => c.chain.startsWith(USER_PREFIX) && c.change !== 'delete').map((c) => c.chain);

/**
 * The chains of rules.dir a table step writes, when it changes nothing else of ours but the jumps into them (a
 * reload that added or changed a template of rules.dir); else none: with rules of ours written too (the first
 * apply, a changed config), a refusal may be of either.
 */
function onlyUserRulesWritten(step: TableStep): string[] {
  const user = (c: ChainChange) => c.chain.startsWith(USER_PREFIX);
  const written = step.chains.filter((c) => user(c) && c.change !== 'delete').map((c) => c.chain);
  const ours = step.chains.filter((c) => !user(c));
  const jumpsIntoUser = ours.every((c) => c.change === 'rewrite' && !c.order && [...c.added, ...c.removed].every((r) => JUMP_INTO_USER.test(r)));
  return step.jumps.length === 0 && jumpsIntoUser ? written : [];
}
const JUMP_INTO_USER = /(?:^| )-j VGW-USER-[A-Z]+$/;

type Settled = PromiseSettledResult<Undo | undefined>;
const settle = (promise: Promise<Undo | undefined>): Promise<Settled> =>
  promise.then((value) => ({ status: 'fulfilled', value }), (reason: unknown) => ({ status: 'rejected', reason }));

/** The failure, the step it belongs to, and whether undoing part of a batch failed with it. */
function unpack(caught: unknown, fallback: Step): { failed: Step; error: unknown; undoErrors: string[]; partial: boolean } {
  const failed = caught instanceof StepFailed ? caught.step : fallback;
  const cause = caught instanceof StepFailed ? caught.cause : caught;
  return {
    failed,
    error: cause instanceof UndoFailed ? cause.original : cause,
    undoErrors: cause instanceof UndoFailed ? [String((cause.undoError as Error)?.message ?? cause.undoError)] : [],
    partial: caught instanceof StepFailed && caught.partial,
  };
}

/**
 * Applies every step or, on failure, none: throws ApplyError after undoing what had been done. The one exception is
 * the accounting sets' members: when only they fail, forwarding is in place and stays, and AccountingError says so
 * (the next pass writes the missing members; nothing decides on them). `observer.forwarding` is called once the
 * rules, addresses and ip_forward are in place, which may be before the accounting members are.
 */
export async function applyPlan(runner: CommandRunner, backend: Backend, plan: Plan, observer: ApplyObserver = {},
  /** The template a chain of rules.dir is rendered from, to name it (and the line) with a rule the kernel refuses. */
  userTemplate?: (chain: string) => ChainSource | undefined): Promise<void> {
  const { stages: list, accounting } = stages(runner, backend, plan.steps, observer);
  const undos: Undo[] = [];
  let filling: Promise<Settled> | undefined;
  const planOrder = (task: Task) => plan.steps.indexOf(task.step);
  for (let i = 0; i < list.length; i++) {
    const stage = list[i]!;
    // Each spawn holds this thread for a few milliseconds: the tables (the longest writes, on which forwarding
    // waits) are started first, the accounting members last.
    const tables = stage.map((task) => (task.step.kind === 'table' ? task.run() : undefined));
    const running = stage.map((task, t) => tables[t] ?? task.run());
    if (i === 2 && accounting) filling = settle(accounting.run());
    const results = await Promise.allSettled(running);
    for (const r of results) if (r.status === 'fulfilled' && r.value) undos.push(r.value);
    const rejected = results.flatMap((r, t) => (r.status === 'rejected' ? [t] : []));
    const index = rejected.sort((a, b) => planOrder(stage[a]!) - planOrder(stage[b]!))[0];
    if (index === undefined) continue;
    // The first failure in plan order is the one reported; everything applied so far, this stage and the
    // accounting members included (once written: nothing is undone under a running fill), is undone.
    const filled = filling ? await filling : undefined;
    if (filled?.status === 'fulfilled' && filled.value) undos.push(filled.value);
    const { failed, error, undoErrors, partial } = unpack((results[index] as PromiseRejectedResult).reason, stage[index]!.step);
    const rollbackErrors = [...undoErrors];
    for (const undo of undos.reverse()) {
      try {
        await undo();
      } catch (undoError) {
        rollbackErrors.push(String((undoError as Error).message));
      }
    }
    const rolled = rollbackErrors.length > 0 ? `rollback failed too: ${rollbackErrors.join('; ')}`
      : undos.length > 0 ? 'the steps already done were rolled back'
      : partial ? 'the lines before it were undone' : 'nothing had been changed';
    const line = failed.kind === 'table' && error instanceof CommandError ? restoreFailedLine(error.stderr) : undefined;
    const failedLine = line === undefined || failed.kind !== 'table' ? undefined : failed.payload.split('\n')[line - 1];
    // "line 4: RULE_APPEND failed (…): rule in chain VGW-USER-PREROUTING" (nft), or the rule's own line.
    const named = /(?:^-A |chain |in )(VGW-USER-[A-Z]+)\b/m.exec(`${failedLine ?? ''}\n${error instanceof CommandError ? error.stderr : ''}`)?.[1];
    const guessed = named === undefined && failed.kind === 'table' && failedLine === 'COMMIT' && backend === 'legacy' ? onlyUserRulesWritten(failed) : [];
    const userChain = named ?? guessed[0];
    // iptables-legacy hands the kernel a table whole at COMMIT, and names that line, not a rule.
    const commitRefusal = failed.kind === 'table' && refusedAtCommit(failed.payload, error) ? { table: failed.table, userChains: userChainsWritten(failed) } : undefined;
    const both = guessed.length === 0 && failedLine === 'COMMIT' && backend === 'legacy' && commitRefusal && commitRefusal.userChains.length > 0 ? commitRefusal.userChains : [];
    // Each chain with its template: the one place a user can look, since no rule is named.
    const chains = (list: readonly string[]) => list.map((c) => (userTemplate?.(c) ? `${c} from ${userTemplate(c)!.file}` : c)).join(', ');
    const likely = guessed.length > 0
      ? `\niptables-legacy refuses a table whole and names no rule; this round wrote rules of rules.dir only (${chains(guessed)}): one of them (the kernel's reason is in dmesg)`
      : both.length > 0
        ? `\niptables-legacy refuses a table whole and names no rule; this round wrote rules of rules.dir (${chains(both)}) and the gateway's own: either may be the one (the kernel's reason is in dmesg)`
        : '';
    // Every table of the stage is committed at once, and each the kernel refused names its refused rules: all of
    // them are said, not the first table's first alone (a user fixed one and met the next on the following run).
    const refusals = rejected.flatMap((t) => {
      const { failed: step, error: cause } = unpack((results[t] as PromiseRejectedResult).reason, stage[t]!.step);
      return step.kind === 'table' && cause instanceof CommandError ? [refusedUserRules(step.table, step.payload, cause.stderr)] : [];
    });
    const refusedRules = refusals.flatMap((r) => r.rules);
    const refusedText = refusedRulesText(refusedRules, refusals.some((r) => r.cut), userTemplate);
    throw new ApplyError(`${describeStep(failed)} failed: ${explain(failed, error, backend, runner.prefix)}${likely}${refusedText}\n(${rolled})`, failed,
      rollbackErrors.length === 0, rollbackErrors, failedLine, userChain, refusedRules, commitRefusal);
  }
  observer.forwarding?.();
  announce(runner, plan.steps, observer);
  // The nat table is in: the flows its forwards' change leaves going the wrong way go now (never a rollback).
  const clears = plan.steps.filter((s): s is ConntrackClear => s.kind === 'conntrack-clear');
  if (clears.length > 0) {
    const outcome = await clearStaleFlows(runner, clears);
    tell(() => observer.flowsCleared?.(outcome));
  }
  // The policy and the NAT are in where there were none: the flows forwarded without them go now (Plan.unpoliced).
  if (plan.unpoliced) {
    const outcome = await clearUnpolicedFlows(runner, plan.unpoliced.local);
    tell(() => observer.unpolicedCleared?.(outcome, plan.unpoliced!));
  }
  const filled = filling ? await filling : undefined;
  if (filled?.status === 'rejected') {
    const { failed, error } = unpack(filled.reason, accounting!.step);
    const what = failed.kind === 'set-update' ? `writing the members of ipset ${failed.set}` : describeStep(failed);
    throw new AccountingError(`${what} failed: ${explain(failed, error, backend, runner.prefix)}\n(the rules, addresses and ip_forward are in place and stay; `
      + 'only the per-VLAN-pair counting is incomplete, until the next pass writes the missing members)', failed);
  }
}
