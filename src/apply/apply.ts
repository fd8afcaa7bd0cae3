/**
 * Carrying out a plan: each step is one write (ip, sysctl, or one iptables-restore per table), and each write
 * that succeeds records how to undo it. When a step fails, the earlier ones are undone in reverse, so a failed
 * apply leaves the previous rules, addresses and route in place, and the error names what failed and why.
 */
import { asRun, CommandError, type CommandRunner } from '../exec/runner.js';
import type { Backend } from '../observe/facts.js';
import { forEachIpsetMember, parseIpsetReferences } from '../observe/parse-ipset.js';
import { restoreCommand } from '../observe/read.js';
import { IP_FORWARD, OUR_ADDRESS_METRIC, OUR_ROUTE_PROTO, setMemberAdmits, USER_PREFIX } from '../plan/chains.js';
import { remakeName, setHashsize, setMaxelem } from '../plan/set-size.js';
import { portText } from '../plan/conntrack.js';
import type { ChainChange, ConntrackClear, Plan, Step } from '../plan/types.js';
import { clearStaleFlows, clearUnpolicedFlows, type FlowsCleared } from './conntrack.js';
import { lockFileHint, privilegeHint, setInUseAdvice, setInUseHint, sysctlHint } from './hints.js';

export interface ApplyObserver {
  restore?(table: string, ok: boolean): void;
  /**
   * A table step is in the kernel: its payload (the chains it rewrote count from zero), or with `undone` its undo,
   * which puts back the chains as the pass found them, counters included (the stats collector counts on from them;
   * from zero where the pass planned from the tables a supervisor knew: see diffTable).
   */
  written?(step: TableStep, undone: boolean): void;
  /** The rules, addresses and ip_forward are in place (the accounting sets' members may still be being written). */
  forwarding?(): void;
  /**
   * An accounting set was made again (remake): its members hold the counters they had when the apply read them, just
   * before (the stats collector counts on from them; a reading taken in between may have found more). By member. The
   * other sets' members are not counted, and may be written as an accounting member is (see membersAddedBy).
   */
  remade?(set: string, counters: ReadonlyMap<string, { readonly packets: number; readonly bytes: number }>): void;
  /**
   * A gateway address the apply added has been announced: its `arping -U` has exited (or could not start), after the
   * apply returned. What should follow the announce on the wire goes now (the supervisor's conflict probe).
   */
  announced?(step: Extract<Step, { kind: 'address-add' }>): void;
  /**
   * The plan's conntrack clears have run, once everything else is in place (the accounting members aside): what they
   * deleted, or why not. Never a failure of the apply.
   */
  flowsCleared?(outcome: FlowsCleared): void;
  /** The flows forwarded before the policy was there (Plan.unpoliced) have been cleared, or why not. Never a failure. */
  unpolicedCleared?(outcome: FlowsCleared, unpoliced: NonNullable<Plan['unpoliced']>): void;
}

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

type Undo = () => Promise<unknown>;
export type TableStep = Extract<Step, { kind: 'table' }>;
type SysctlStep = Extract<Step, { kind: 'sysctl' }>;

/** A batch failed, and undoing its earlier lines failed too: the first is the failure, the second a rollback error. */
class UndoFailed extends Error {
  constructor(readonly original: unknown, readonly undoError: unknown) {
    super(String((original as Error)?.message ?? original));
  }
}

/** A batch or script failed at the line of `step`; `partial`: lines before it had taken effect (and were undone). */
class StepFailed extends Error {
  constructor(readonly step: Step, override readonly cause: unknown, readonly partial = false) {
    super(String((cause as Error)?.message ?? cause));
  }
}

/**
 * A tool killed before it said how far it got (the supervisor's --command-timeout, the OOM killer): any of its lines
 * may have taken effect, and a restore's commit too (a SIGKILL waits for the kernel's commit to end).
 */
const killed = (error: unknown): error is CommandError => error instanceof CommandError && error.exitCode === null && !error.notFound;

/** Which line of a batch failed, from the tool's message (0-based; the first line when it does not say). */
function failedScriptLine(error: unknown, pattern: RegExp, lines: number): number {
  const m = pattern.exec(error instanceof CommandError ? error.stderr : '');
  const n = m ? Number(m[1]) - 1 : 0;
  return n >= 0 && n < lines ? n : 0;
}

/**
 * The kernel refused a table's payload when it was committed: what was written is what it will not take, and it
 * would refuse it again (a target outside the protocols or hooks it allows, a module this kernel lacks), whether the
 * rule is one of rules.dir or one the gateway renders. Not a restore that could not do its work: the xtables lock held
 * past the wait (exit 4, no line named), one killed (no exit code), memory or buffers short (iptables-nft says its
 * errno). iptables-nft names each refused line with its errno; iptables-legacy names only the COMMIT line, and no
 * errno, so runTable confirms it with a second try (see refusedAtCommit).
 */
export interface CommitRefusal {
  readonly table: string;
  /** The chains of rules.dir the payload wrote (created or rewritten): with no line named, the refused rule may be in one. */
  readonly userChains: readonly string[];
}

/** The errnos with which the kernel refuses a rule for what it is (nft's words; "Too many links": the fake's loop). */
const REFUSAL_REASON = /^(Invalid argument|No such file or directory|Operation not supported|Protocol not supported|Numerical result out of range|Too many levels of symbolic links|Too many links)\b/;

/**
 * Did the kernel refuse `payload` at its commit (CommitRefusal), as the restore's `error` says? iptables-nft: every
 * line it names refused with an errno of REFUSAL_REASON ("line 4: RULE_APPEND failed (Invalid argument)"), not one
 * of want (Cannot allocate memory, No buffer space available, Device or resource busy). iptables-legacy: "line N
 * failed", N the COMMIT line (a rule line's failure is iptables' parser's, which `--test` meets first).
 */
export function refusedAtCommit(payload: string, error: unknown): boolean {
  if (!(error instanceof CommandError) || error.exitCode === null) return false;
  const reasons = [...error.stderr.matchAll(NFT_REFUSED_LINE)].map((m) => m[2]!);
  if (reasons.length > 0) return reasons.every((r) => REFUSAL_REASON.test(r));
  const commit = /^\S+: line (\d+) failed(?:: (.*))?$/m.exec(error.stderr);
  return commit !== null && payload.split('\n')[Number(commit[1]) - 1] === 'COMMIT' && (commit[2] === undefined || REFUSAL_REASON.test(commit[2]));
}

/** The chains of rules.dir a table step writes (creates or rewrites). */
const userChainsWritten = (step: TableStep) => step.chains.filter((c) => c.chain.startsWith(USER_PREFIX) && c.change !== 'delete').map((c) => c.chain);

/** A rule of rules.dir the kernel refused when its table was committed. */
export interface RefusedRule {
  readonly table: string;
  readonly chain: string;
  /** Its 1-based number in the chain (the chain is written whole). */
  readonly rule: number;
  /** The rule as the template rendered it (without the gateway's hash comment). */
  readonly text: string;
  /** The kernel's errno, in words ("Invalid argument"). */
  readonly reason: string;
}

/** "line 14: RULE_APPEND failed (Invalid argument): rule in chain VGW-USER-FORWARD": iptables-nft, one a refused line. */
const NFT_REFUSED_LINE = /^line (\d+): \w+ failed \(([^)]*)\)/gm;

/**
 * The rules of rules.dir a restore of `payload` was refused for. The kernel judges a whole nf_tables batch and
 * reports each message it refuses; iptables-nft names each one's line (up to about 1 KiB of message: `cut` says
 * when it stopped short). iptables-legacy hands the kernel the table whole and names only COMMIT: none.
 */
export function refusedUserRules(table: string, payload: string, stderr: string): { rules: RefusedRule[]; cut: boolean } {
  const lines = payload.split('\n');
  const rules: RefusedRule[] = [];
  for (const [, n, reason] of stderr.matchAll(NFT_REFUSED_LINE)) {
    const line = lines[Number(n) - 1];
    const chain = line === undefined ? undefined : /^-A (VGW-USER-[A-Z]+) /.exec(line)?.[1];
    if (chain === undefined) continue;
    const rule = lines.slice(0, Number(n)).filter((l) => l.startsWith(`-A ${chain} `)).length;
    const text = line!.slice(`-A ${chain} `.length).replace(/^-m comment --comment vgw:\S+ /, '');
    rules.push({ table, chain, rule, text, reason: reason! });
  }
  // What iptables said ends inside a line: its message was cut there, and lines after it may be refused too.
  const last = stderr.trimEnd().split('\n').at(-1) ?? '';
  return { rules, cut: /^line\b/.test(last) && !/^line \d+: \w+ failed \([^)]*\)/.test(last) };
}

/** The most refused rules an apply's error lists (as apply/user-rules-check.ts's REFUSALS_SAID). */
const REFUSED_SAID = 10;

/**
 * The refused rules of rules.dir, each named by table, chain, number and template, for the end of an apply's error:
 * all of them, of every table refused, in one run (iptables' own message names the first table's, by payload line).
 */
export function refusedRulesText(refused: readonly RefusedRule[], cut: boolean, fileOf: (chain: string) => string | undefined = () => undefined): string {
  if (refused.length === 0) return '';
  const said = refused.slice(0, REFUSED_SAID).map((r) => {
    const file = fileOf(r.chain);
    return `${r.table} ${r.chain} rule ${r.rule}${file ? ` (from ${file})` : ''}: the kernel refuses it (${r.reason}): ${r.text}`;
  });
  const more = refused.length > REFUSED_SAID ? [`(and ${refused.length - REFUSED_SAID} more)`] : [];
  const rest = cut ? ['(iptables cut its list short: rules after the last may be refused too)'] : [];
  return `\nthe rules of rules.dir the kernel refuses (its reasons are in dmesg):\n${[...said, ...more, ...rest].join('\n')}`;
}

/** The 1-based payload line a restore names as failing (see restoreFailureContext), or undefined. */
export function restoreFailedLine(stderr: string): number | undefined {
  const m = /line (\d+) failed|Error occurred at line: (\d+)|line (\d+): \w+ failed/.exec(stderr);
  return m ? Number(m[1] ?? m[2] ?? m[3]) : undefined;
}

/**
 * The failing line of a restore payload with two lines either side, numbered. iptables 1.8 says which line in
 * three ways: "line 7 failed" (legacy), "Error occurred at line: 7" (a line it cannot parse), and
 * "line 7: RULE_APPEND failed (…)" (a rule the kernel refuses).
 */
export function restoreFailureContext(payload: string, stderr: string): string {
  const failing = restoreFailedLine(stderr);
  if (failing === undefined) return '';
  const lines = payload.split('\n');
  const from = Math.max(1, failing - 2);
  const to = Math.min(lines.length, failing + 2);
  const out: string[] = [];
  for (let n = from; n <= to; n++) out.push(`${n === failing ? '>' : ' '} ${String(n).padStart(4)} | ${lines[n - 1]}`);
  return out.join('\n');
}

/** A restore of one table; its undo restores the previous content of the chains it changes, counters included. */
async function runTable(runner: CommandRunner, backend: Backend, step: TableStep, observer: ApplyObserver): Promise<Undo> {
  const restore = async (payload: string, counters: boolean) => {
    try {
      await runner.run(restoreCommand(backend, counters), { input: payload, rollback: counters }); // with counters: an undo
    } catch (error) {
      tell(() => observer.restore?.(step.table, false));
      throw error;
    }
    tell(() => observer.restore?.(step.table, true));
  };
  const undo = async () => {
    await restore(step.undo, true);
    tell(() => observer.written?.(step, true));
  };
  try {
    try {
      await restore(step.payload, false);
    } catch (error) {
      // iptables-legacy refuses a table at COMMIT without saying why: the kernel's verdict on the payload, or a want
      // of the moment (EAGAIN: a writer that took no lock changed the table meanwhile; ENOMEM). Nothing was committed:
      // tried once more, a payload the kernel refuses is refused again (CommitRefusal), and a passing want goes through.
      // That second try killed is judged below as a first one is (it may have committed before its kill).
      if (killed(error) || backend !== 'legacy' || !refusedAtCommit(step.payload, error)) throw error;
      await restore(step.payload, false);
    }
  } catch (error) {
    if (!killed(error)) throw error;
    // Killed: the table says whether its commit happened (all of it or nothing). Written, it is put back here.
    const written = await tableWritten(runner, backend, step).catch(() => undefined);
    if (written === false) throw error;
    if (written === undefined) {
      // Not rolled back, and said so: the next pass (none, if the gateway is stopping) reads the table afresh.
      throw new StepFailed(step, new UndoFailed(error, new Error(`the ${step.table} table may have been written before the restore was killed, `
        + 'and whether it was cannot be told: it is left as it is, for the next pass to read')));
    }
    tell(() => observer.written?.(step, false));
    try {
      await undo();
    } catch (undoError) {
      throw new StepFailed(step, new UndoFailed(error, undoError), true);
    }
    throw new StepFailed(step, error, true);
  }
  tell(() => observer.written?.(step, false));
  return undo;
}

/**
 * Did a killed restore of `step` commit (all of it or nothing)? One thing its payload changes, looked up in the table:
 * a chain created or deleted, a rule added or removed (by its hash), a jump added or removed (one that is not also
 * put back elsewhere). Undefined when it only reorders.
 */
async function tableWritten(runner: CommandRunner, backend: Backend, step: TableStep): Promise<boolean | undefined> {
  const { stdout } = await runner.run([`iptables-${backend}-save`, '-t', step.table], { rollback: true });
  const lines = stdout.split('\n');
  const hashOf = (line: string) => /vgw:([\w-]+)/.exec(line)?.[1];
  const chainExists = (chain: string) => lines.some((l) => l.startsWith(`:${chain} `));
  const ruleIn = (chain: string, hash: string) => lines.some((l) => l.startsWith(`-A ${chain} `) && hashOf(l) === hash);
  for (const c of step.chains) {
    if (c.change === 'create') return chainExists(c.chain);
    if (c.change === 'delete') return !chainExists(c.chain);
    const added = c.added.map(hashOf).find((h) => h !== undefined);
    if (added !== undefined) return ruleIn(c.chain, added);
    const removed = c.removed.map(hashOf).find((h) => h !== undefined);
    if (removed !== undefined) return !ruleIn(c.chain, removed);
  }
  // A jump's body as the save prints it, quotes and spacing aside.
  const plain = (text: string) => text.replaceAll('"', '').replace(/\s+/g, ' ').trim();
  const jumpIn = (hook: string, body: string) => lines.some((l) => l.startsWith(`-A ${hook} `) && plain(l.slice(hook.length + 4)) === plain(body));
  for (const j of step.jumps) {
    if (step.jumps.some((o) => o !== j && o.hook === j.hook && plain(o.body) === plain(j.body))) continue; // moved: in both states
    return j.change === 'add' ? jumpIn(j.hook, j.body) : !jumpIn(j.hook, j.body);
  }
  return undefined;
}

/**
 * An observer's call, which must not change what the apply does: one that threw after a table was written took
 * the table for not written, and the rollback left it in place. (Observers count: a throw is a bug, said loudly.)
 */
function tell(call: () => void): void {
  try {
    call();
  } catch (error) {
    process.emitWarning(`vlan-gateway: an apply observer failed: ${(error as Error)?.stack ?? String(error)}`);
  }
}

async function runSysctl(runner: CommandRunner, step: SysctlStep): Promise<Undo | undefined> {
  await runner.run(['sysctl', '-w', `${step.key}=${step.value}`]);
  const previous = step.previous;
  return previous === undefined ? undefined : () => runner.run(['sysctl', '-w', `${step.key}=${previous}`], { rollback: true });
}

/**
 * Several sets' lines in one `ipset restore` (one process, not one per set). ipset stops at the failing line and
 * names it ("Error in line 3"): the lines before it took effect and are undone here, and the failure is
 * reported against the step that line belongs to.
 */
/** One line of an `ipset restore` script, how to undo it, and the step it belongs to. */
type SetLine = { line: string; undo?: string; step: Step };

async function runSetScript(runner: CommandRunner, lines: readonly SetLine[]): Promise<Undo> {
  const undoFor = (done: typeof lines): Undo => {
    const undo = done.map((l) => l.undo).filter((l): l is string => l !== undefined).reverse();
    return () => (undo.length > 0 ? runner.run(['ipset', 'restore'], { input: `${undo.join('\n')}\n`, rollback: true }) : Promise.resolve());
  };
  try {
    await runner.run(['ipset', 'restore'], { input: `${lines.map((l) => l.line).join('\n')}\n` });
  } catch (error) {
    if (killed(error)) {
      // Every line may have run: all are undone, each in a way that holds where it did not (a set created now is
      // made first, -exist, so that its destroy finds it; the other undos are -exist already).
      const unsure = lines.map((l) => (l.undo?.startsWith('destroy ') && l.line.startsWith('create ') ? { ...l, undo: `${l.line}\n${l.undo}` } : l));
      try {
        await undoFor(unsure)();
      } catch (undoError) {
        throw new StepFailed(lines[0]!.step, new UndoFailed(error, undoError), true);
      }
      throw new StepFailed(lines[0]!.step, error, true);
    }
    const failing = failedScriptLine(error, /Error in line (\d+)/, lines.length);
    try {
      await undoFor(lines.slice(0, failing))();
    } catch (undoError) {
      throw new StepFailed(lines[failing]!.step, new UndoFailed(error, undoError), failing > 0);
    }
    throw new StepFailed(lines[failing]!.step, error, failing > 0);
  }
  return undoFor(lines);
}

type RemakeStep = Extract<Step, { kind: 'set-update' }> & { readonly remake: number };

/**
 * The sets of `steps` made again at the gateway's size (see the set-update step's `remake`), first of all: each is
 * created under remakeName with the members it holds now and their counters (one `ipset save` reads them), and
 * swapped in: `ipset swap` exchanges the two while the rules match on the set (the kernel moves their references
 * with it), so no packet finds it missing. The old ones are then destroyed; one that cannot be (a reader holding it)
 * is left to the next pass, which removes it as a set no longer wanted. A rollback leaves the sets remade: the same
 * members and counters, in a larger table. A line that fails undoes the ones before it (a swap by swapping back);
 * a killed script leaves each set old or new, whole either way, and a temporary one that may hold either is destroyed.
 * A swap refused because a reader holds the set (the stats collector's `ipset save`, every few seconds) is tried
 * again after a short wait (REMAKE_BUSY_WAITS_MS), from the reading of the members: the failed script's lines were
 * undone, and the members and counters may have changed meanwhile. The reader may hold the temporary set too, and
 * its destroy (the undo, or the next attempt's first line) be refused as well: what it leaves, a temporary set or a
 * set swapped in but not back, the next attempt reads and makes again. The observer hears of the attempt that
 * succeeded.
 */
async function runSetRemakes(runner: CommandRunner, steps: readonly RemakeStep[], observer: ApplyObserver): Promise<undefined> {
  for (let attempt = 0; ; attempt++) {
    let counters: Awaited<ReturnType<typeof remakeSets>>;
    try {
      counters = await remakeSets(runner, steps);
    } catch (error) {
      const wait = REMAKE_BUSY_WAITS_MS[attempt];
      if (wait === undefined || !(error instanceof RemakeBusy)) throw error;
      await sleep(wait);
      continue;
    }
    for (const step of steps) if (step.role === 'accounting') tell(() => observer.remade?.(step.set, counters.get(step.set)!));
    return undefined;
  }
}

/**
 * What ipset 7.17 says, in a restore script, of a swap or a destroy the kernel refuses (EBUSY) while another process
 * dumps the set (`ipset save` or `ipset list` holds each set while it prints it). Checked on kernel 6.18 with an
 * `ipset save` loop beside the remake (a 2,000-member set: three swaps in four refused).
 */
const SWAP_BUSY = /^ipset v[\d.]+: Error in line \d+: Kernel error received: Device or resource busy$/m;
const DESTROY_BUSY = /^ipset v[\d.]+: Error in line \d+: Set cannot be destroyed: it is in use by a kernel component$/m;
/** How long runSetRemakes waits before each new attempt after a refusal as busy: 750 ms in all, five attempts. */
const REMAKE_BUSY_WAITS_MS = [50, 100, 200, 400];

/** A remake's swap or destroy was refused as busy (`cause`: the restore's failure, and its undo's). */
class RemakeBusy extends StepFailed {}

/** Was `line` of a remake's script (or its undo) refused as busy, as `error` says? */
const refusedAsBusy = (line: string | undefined, error: unknown) => error instanceof CommandError && error.exitCode !== null
  && ((line?.startsWith('swap ') === true && SWAP_BUSY.test(error.stderr)) || (line?.startsWith('destroy ') === true && DESTROY_BUSY.test(error.stderr)));

/** One attempt of runSetRemakes: reads the members and counters, writes the script; the counters it wrote, by set. */
async function remakeSets(runner: CommandRunner, steps: readonly RemakeStep[]): Promise<Map<string, Map<string, { packets: number; bytes: number }>>> {
  const saved = (await runner.run(['ipset', 'save'])).stdout;
  const counters = new Map(steps.map((s) => [s.set, new Map<string, { packets: number; bytes: number }>()]));
  forEachIpsetMember(saved, (set, member, packets, bytes) => counters.get(set)?.set(member, { packets, bytes }));
  const lines: SetLine[] = [];
  for (const step of steps) {
    const temporary = remakeName(step.set);
    if (saved.startsWith(`create ${temporary} `) || saved.includes(`\ncreate ${temporary} `)) lines.push({ line: `destroy ${temporary}`, step });
    lines.push({ line: setCreateLine(temporary, step.type, step.remake, step.maxelem), undo: `destroy ${temporary}`, step });
    for (const [member, c] of counters.get(step.set)!) lines.push({ line: `add ${temporary} ${member} packets ${c.packets} bytes ${c.bytes}`, step });
    lines.push({ line: `swap ${temporary} ${step.set}`, undo: `swap ${temporary} ${step.set}`, step });
  }
  const destroys = `${steps.map((s) => `destroy ${remakeName(s.set)}`).join('\n')}\n`;
  try {
    await runner.run(['ipset', 'restore'], { input: `${lines.map((l) => l.line).join('\n')}\n` });
  } catch (error) {
    if (killed(error)) {
      for (const step of steps) await runner.run(['ipset', 'destroy', remakeName(step.set)], { allowFailure: true, rollback: true }).catch(() => undefined);
      throw new StepFailed(steps[0]!, error, true);
    }
    const failing = failedScriptLine(error, /Error in line (\d+)/, lines.length);
    const undo = lines.slice(0, failing).map((l) => l.undo).filter((l): l is string => l !== undefined).reverse();
    const busy = refusedAsBusy(lines[failing]!.line, error);
    try {
      if (undo.length > 0) await runner.run(['ipset', 'restore'], { input: `${undo.join('\n')}\n`, rollback: true });
    } catch (undoError) {
      const undoBusy = busy && refusedAsBusy(undo[failedScriptLine(undoError, /Error in line (\d+)/, undo.length)], undoError);
      throw new (undoBusy ? RemakeBusy : StepFailed)(lines[failing]!.step, new UndoFailed(error, undoError), failing > 0);
    }
    throw new (busy ? RemakeBusy : StepFailed)(lines[failing]!.step, error, failing > 0);
  }
  await runner.run(['ipset', 'restore'], { input: destroys, allowFailure: true });
  return counters;
}

/**
 * Before sets are destroyed (after the tables stopped using them): one still referenced is refused here, before any
 * is destroyed. A destroyed set is made again by the rollback with its members but not their counters (the
 * per-pair accounting would start again from zero); the kernel's refusal would come only after the sets before it
 * in the script were gone. A rule of someone else's in the tables the plan read was named by the planner already
 * (InUseError); this one is in the other backend, or in another table.
 */
async function refuseSetsInUse(runner: CommandRunner, backend: Backend, lines: readonly SetLine[]): Promise<void> {
  const destroyed = lines.filter((l) => l.step.kind === 'set-destroy');
  // With iptables-nft the kernel lets go of a deleted rule's set in a work item after the restore has returned
  // (weaveworks/weave#3847, fail2ban#3624): a reference seen at once may be ours, on its way out. Only one that
  // outlasts about a second is someone else's.
  for (const wait of [...IN_USE_WAITS_MS, undefined]) {
    const result = await runner.run(['ipset', 'list', '-t'], { allowFailure: true });
    if (result.exitCode !== 0) return; // the destroy says what is wrong, as before
    const referencesOf = parseIpsetReferences(result.stdout);
    const held = destroyed.find((l) => (referencesOf.get((l.step as { set: string }).set) ?? 0) > 0);
    if (!held) return;
    if (wait === undefined) {
      const set = (held.step as { set: string }).set;
      const references = referencesOf.get(set)!;
      throw new StepFailed(held.step, new Error(`ipset ${set} is still in use (${references} reference${references === 1 ? '' : 's'}) once the `
        + `gateway's rules no longer use it, and the kernel keeps a set in use; ${setInUseAdvice(set, backend, runner.prefix)}`));
    }
    await sleep(wait);
  }
}
/** How long refuseSetsInUse waits between its reads of the references: 1.05 s in all. */
const IN_USE_WAITS_MS = [50, 100, 200, 300, 400];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The script of stage 3 (members that wait for the tables, then the destroys), once more if a destroy was refused
 * as in use after refuseSetsInUse saw no reference: a reader of the set (the stats collector's `ipset save`)
 * holds it while it reads, and `ipset list -t` does not show that. The failed script undid its own lines first.
 */
async function runLaterSets(runner: CommandRunner, backend: Backend, lines: readonly SetLine[]): Promise<Undo> {
  if (lines.some((l) => l.step.kind === 'set-destroy')) await refuseSetsInUse(runner, backend, lines);
  try {
    return await runSetScript(runner, lines);
  } catch (error) {
    const cause = error instanceof StepFailed ? error.cause : undefined;
    if (!(cause instanceof CommandError) || !/in use by a kernel component/.test(cause.stderr)) throw error;
    await sleep(IN_USE_WAITS_MS[1]!);
    return runSetScript(runner, lines);
  }
}

/** An `ipset restore` line creating a set for `members`, its hash table sized for them (setHashsize, setMaxelem). */
export function setCreate(set: string, type: string, members: readonly string[]): string {
  return setCreateLine(set, type, setHashsize(type, members), setMaxelem(members.length));
}

const setCreateLine = (set: string, type: string, hashsize: number, maxelem?: number) =>
  `create ${set} ${type} counters hashsize ${hashsize}${maxelem ? ` maxelem ${maxelem}` : ''} -exist`;

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
    const context = restoreFailureContext(step.payload, error.stderr);
    const program = error.argv.find((a) => a.endsWith('-restore')) ?? error.argv[0];
    // A restore killed has no exit code (the runner says by what it was killed): "(exit null)" told nothing.
    return `${program} failed${error.exitCode === null ? '' : ` (exit ${error.exitCode})`}: ${stderr}${hint ? `; ${hint}` : ''}${context ? `\n${context}` : ''}`;
  }
  return `${error.argv.join(' ')}: ${stderr || (error.exitCode === null ? 'killed' : `exit ${error.exitCode}`)}${hint ? `; ${hint}` : ''}`;
}

export type AddressStep = Extract<Step, { kind: 'link-up' | 'address-add' | 'address-del' | 'route' }>;
export const isAddressStep = (step: Step): step is AddressStep =>
  step.kind === 'link-up' || step.kind === 'address-add' || step.kind === 'address-del' || step.kind === 'route';

/** Ours carries OUR_ROUTE_PROTO; the one an undo puts back (Docker's, say) does not: it was not ours. */
const route = (gateway: string, dev?: string, ours = true) => `route replace default via ${gateway}${dev ? ` dev ${dev}` : ''}${ours ? ` proto ${OUR_ROUTE_PROTO}` : ''}`;

/**
 * Ours replaced the default route of metric 0 (and no TOS), if there was one: that one is put back as it was.
 * Otherwise ours was added beside the others (another metric or TOS, or none at all): only ours is deleted.
 */
function routeUndo(s: Extract<AddressStep, { kind: 'route' }>): string {
  const previous = s.previous?.metric || s.previous?.tos ? undefined : s.previous;
  if (previous?.spec) return `route replace ${previous.spec}`;
  if (previous?.gateway) return route(previous.gateway, previous.dev, false);
  return `route del default proto ${OUR_ROUTE_PROTO} metric 0`;
}

/** A link, address or route step as its line of `ip -batch`. */
export function addressBatchLine(s: AddressStep): string {
  switch (s.kind) {
    case 'link-up': return `link set dev ${s.nic} up`;
    case 'address-add': return `address add ${s.address}/${s.prefix} dev ${s.nic} metric ${OUR_ADDRESS_METRIC}`;
    case 'address-del': return `address del ${s.address}/${s.prefix} dev ${s.nic}`;
    case 'route': return route(s.gateway, s.dev);
  }
}

/** What puts back the work of a step's batch line. */
function undoLine(s: AddressStep): string {
  switch (s.kind) {
    // Planned only for a NIC found down: someone may have set it down to cut its VLAN off, so it goes down again.
    case 'link-up': return `link set dev ${s.nic} down`;
    case 'address-add': return `address del ${s.address}/${s.prefix} dev ${s.nic}`;
    case 'address-del': return `address add ${s.address}/${s.prefix} dev ${s.nic} metric ${OUR_ADDRESS_METRIC}`;
    case 'route': return routeUndo(s);
  }
}

/**
 * Whether `ip -batch` reads a line as the words it was written with. iproute2 cuts a batch line at its first "#" (a
 * comment, even inside quotes: 6.1 has no way to escape one), reads a word starting with a quote up to the next
 * quote, and joins a line ending in a backslash with the next one (the last line so ended: "Missing continuation
 * line", and exit 0 with nothing done). Linux allows all three in a NIC's name, and a NIC the gateway does not bind
 * may have one: its address of ours to remove (the NIC renamed after an apply), the previous default route to put back.
 */
const batchReads = (line: string): boolean => !line.includes('#') && !/(^|\s)["']/.test(line) && !line.endsWith('\\');

/**
 * A run of link, address and route steps is one `ip -batch -` (one process for 100 VLANs instead of 100). Its
 * undo uses `-force` so that it undoes what it can even if the batch stopped half-way.
 */
async function runAddressBatch(runner: CommandRunner, steps: readonly AddressStep[]): Promise<Undo> {
  if (!steps.every((s) => batchReads(addressBatchLine(s)) && batchReads(undoLine(s)))) return runAddressSteps(runner, steps);
  const undoInput = (done: readonly AddressStep[]) => `${done.map(undoLine).reverse().join('\n')}\n`;
  const undoFor = (done: readonly AddressStep[]): Undo => {
    const input = undoInput(done);
    return () => (input !== '\n' ? runner.run(['ip', '-force', '-batch', '-'], { input, rollback: true }) : Promise.resolve());
  };
  try {
    await runner.run(['ip', '-batch', '-'], { input: `${steps.map(addressBatchLine).join('\n')}\n` });
  } catch (error) {
    if (killed(error)) {
      // Every line may have run: all are undone, and an undo that finds its line never ran (an address not there
      // to delete, one there already, a route gone) is no failure.
      const argv = ['ip', '-force', '-batch', '-'];
      let refused: string[];
      try {
        const undone = await runner.run(argv, { input: undoInput(steps), allowFailure: true, rollback: true });
        // Each failing line prints its reason, then "Command failed -:N".
        refused = undone.exitCode === 0 ? [] : undone.stderr.split('\n').filter((l) => l.trim() !== '' && !/^Command failed /.test(l) && !NOT_DONE.test(l));
        if (undone.exitCode !== 0 && refused.length === 0 && !NOT_DONE.test(undone.stderr)) refused = [undone.stderr.trim() || `exit ${undone.exitCode}`];
      } catch (undoError) {
        throw new StepFailed(steps[0]!, new UndoFailed(error, undoError), true);
      }
      if (refused.length > 0) throw new StepFailed(steps[0]!, new UndoFailed(error, new CommandError(asRun(runner, argv), 1, refused.join('\n'))), true);
      throw new StepFailed(steps[0]!, error, true);
    }
    // ip stops at the failing line ("Command failed -:3"); the lines before it took effect and are undone here.
    // If that fails too, the original failure is still the one reported, with the undo's appended.
    const failing = failedScriptLine(error, /Command failed -:(\d+)/, steps.length);
    try {
      await undoFor(steps.slice(0, failing))();
    } catch (undoError) {
      throw new StepFailed(steps[failing]!, new UndoFailed(error, undoError), failing > 0);
    }
    throw new StepFailed(steps[failing]!, error, failing > 0);
  }
  return undoFor(steps);
}

/** A line of an address batch as the argv of one `ip` (no word of one holds whitespace: nor does a NIC's name). */
const ipArgv = (line: string) => ['ip', ...line.split(' ')];

/**
 * The steps of a batch that names a NIC `ip -batch` cannot read (batchReads), one `ip` each, in order: argv words,
 * nothing parsed. As with the batch, a failing step undoes the ones before it, and the undo goes on past a failing
 * line (-force); a step killed half-way is undone too, its undo's "not there" no failure.
 */
async function runAddressSteps(runner: CommandRunner, steps: readonly AddressStep[]): Promise<Undo> {
  const undo = (done: readonly AddressStep[], mayNotHaveRun?: AddressStep): Undo => async () => {
    let failure: unknown;
    for (const s of [...done].reverse()) {
      const argv = ipArgv(undoLine(s));
      const result = await runner.run(argv, { allowFailure: true, rollback: true }).catch((error: unknown) => ({ error }));
      if ('error' in result) failure ??= result.error;
      else if (result.exitCode !== 0 && !(s === mayNotHaveRun && NOT_DONE.test(result.stderr))) failure ??= new CommandError(asRun(runner, argv), result.exitCode, result.stderr);
    }
    if (failure !== undefined) throw failure;
  };
  for (const [i, step] of steps.entries()) {
    try {
      await runner.run(ipArgv(addressBatchLine(step)));
    } catch (error) {
      const done = killed(error) ? steps.slice(0, i + 1) : steps.slice(0, i);
      try {
        await undo(done, step)();
      } catch (undoError) {
        throw new StepFailed(step, new UndoFailed(error, undoError), done.length > 0);
      }
      throw new StepFailed(step, error, done.length > 0);
    }
  }
  return undo(steps);
}

/**
 * What an undo line of an address batch says when its own line never ran: an address not there to delete, one there
 * already, a route gone (iproute2 6.1 says "Error: ipv4: Address not found.", older ones the errno's words).
 */
const NOT_DONE = /Address not found|Address already assigned|Cannot assign requested address|File exists|No such process/;

/**
 * After a gateway address is added, one unsolicited ARP (`arping -U`) tells the VLAN's hosts where it lives now:
 * a host that tried the gateway before the address existed otherwise waits for its own ARP retry (about 1 s),
 * and one that knew another MAC for it (a replaced container) keeps the stale entry until it expires. Best
 * effort and not awaited: no arping, or no NET_RAW, only means hosts find the gateway by themselves. Once each has
 * gone out, the observer is told (the supervisor then probes for another holder of the address: reconcile/conflicts.ts).
 */
function announce(runner: CommandRunner, steps: readonly Step[], observer: ApplyObserver): void {
  const queue = steps.filter((s): s is Extract<Step, { kind: 'address-add' }> => s.kind === 'address-add');
  // After the pass has returned, and a few at a time: 100 VLANs must not mean 100 spawns before /readyz.
  const next = (): void => {
    const step = queue.shift();
    if (!step) return;
    const done = () => {
      tell(() => observer.announced?.(step));
      next();
    };
    try {
      const child = runner.start(['arping', '-q', '-U', '-c', '1', '-I', step.nic, step.address], { detached: true });
      child.exited.then(done, done);
    } catch {
      // not startable here: nothing to announce with (what follows the announce goes on)
      done();
    }
  };
  // The first few one per turn of the event loop, as each child's exit starts the next: a spawn holds the thread
  // for a few milliseconds (more on a busy machine), and eight in one go kept a scrape waiting 40-100 ms.
  let started = 0;
  const open = (): void => {
    if (started++ >= ANNOUNCE_CONCURRENCY || queue.length === 0) return;
    next();
    setImmediate(open);
  };
  setImmediate(open);
}

const ANNOUNCE_CONCURRENCY = 8;

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
        for (const m of step.del) dels.push({ line: `del ${step.set} ${m} -exist`, undo: `add ${step.set} ${m} -exist`, step });
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
        destroys.push({
          line: `destroy ${step.set}`,
          undo: [setCreate(step.set, step.type, step.members), ...step.members.map((m) => `add ${step.set} ${m} -exist`)].join('\n'),
          step,
        });
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
  /** The template a chain of rules.dir is rendered from, to name it with a rule the kernel refuses. */
  userFile?: (chain: string) => string | undefined): Promise<void> {
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
    const chains = (list: readonly string[]) => list.map((c) => (userFile?.(c) ? `${c} from ${userFile(c)!}` : c)).join(', ');
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
    const refusedText = refusedRulesText(refusedRules, refusals.some((r) => r.cut), userFile);
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
