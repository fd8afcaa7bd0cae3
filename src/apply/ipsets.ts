/** The ipset steps: `ipset restore` scripts of members, creates and destroys, and the sets made again larger. */
import { CommandError, type CommandRunner } from '../exec/runner.js';
import type { Backend } from '../observe/facts.js';
import { forEachIpsetMember, parseIpsetReferences } from '../observe/parse-ipset.js';
import { remakeName, setHashsize, setMaxelem } from '../plan/set-size.js';
import type { Step } from '../plan/types.js';
import { setInUseAdvice } from './hints.js';
import { tell, type ApplyObserver } from './observer.js';
import { failedScriptLine } from './parse-restore-failure.js';
import { killed, StepFailed, UndoFailed, type Undo } from './steps.js';

/**
 * One line of an `ipset restore` script, how to undo it, and the step it belongs to. `deletes`: the line takes a
 * member out of a set; its undo puts it back with the counters it had (runSetScript reads them first). `destroys`: the
 * line destroys a set; its undo makes it again with its members and the counters they had (destroyLine).
 */
export type SetLine = { line: string; undo?: string; step: Step; deletes?: { set: string; member: string }; destroys?: SetDestroy };

type SetDestroy = Extract<Step, { kind: 'set-destroy' }>;

/** A set's members made again after its destroy (`counters`: each member's `packets N bytes N`, where read). */
function recreate(step: SetDestroy, counters?: ReadonlyMap<string, string>): string {
  const add = (m: string) => `add ${step.set} ${m}${counters?.has(m) ? ` ${counters.get(m)}` : ''} -exist`;
  return [setCreate(step.set, step.type, step.members), ...step.members.map(add)].join('\n');
}

/** The line destroying a set no longer wanted; its undo is given the members' counters by runSetScript. */
export const destroyLine = (step: SetDestroy): SetLine => ({ line: `destroy ${step.set}`, undo: recreate(step), step, destroys: step });

/**
 * Several sets' lines in one `ipset restore` (one process, not one per set). ipset stops at the failing line and
 * names it ("Error in line 3"): the lines before it took effect and are undone here, and the failure is
 * reported against the step that line belongs to.
 */
export async function runSetScript(runner: CommandRunner, given: readonly SetLine[]): Promise<Undo> {
  const lines = await withCountersKept(runner, given);
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

/**
 * The lines that delete members or destroy sets, their undo given the members' counters as they are now: put back by
 * a plain `add`, a member of an accounting set started again from zero (the per-pair totals lost to a failed apply),
 * or took the counters of whichever member last had its kernel slot. The sets that lose members or go are read once
 * the tables no longer match on them (nothing counts after the reading); a set that cannot be read, or keeps no
 * counters, keeps the plain undo.
 */
async function withCountersKept(runner: CommandRunner, lines: readonly SetLine[]): Promise<readonly SetLine[]> {
  const sets = new Set(lines.flatMap((l) => (l.deletes && l.undo !== undefined ? [l.deletes.set] : l.destroys ? [l.destroys.set] : [])));
  if (sets.size === 0) return lines;
  const counters = await countersOf(runner, sets);
  return lines.map((l) => {
    if (l.destroys) return counters.get(l.destroys.set)?.size ? { ...l, undo: recreate(l.destroys, counters.get(l.destroys.set)) } : l;
    const had = l.deletes && counters.get(l.deletes.set)?.get(l.deletes.member);
    return had === undefined ? l : { ...l, undo: `add ${l.deletes!.set} ${l.deletes!.member} ${had} -exist` };
  });
}

/**
 * The members' counters (`packets N bytes M`) of each of `sets` that keeps counters; empty where they cannot be read.
 * One `ipset save` of every set, not one process per set (`down` destroys them all: eight at 96 VLANs): each process's
 * start holds this thread for 8–15 ms, and the sets that lose members nearly always include the accounting set that
 * holds most members (VGW-PAIRS-0), whose reading is most of a save of all.
 */
async function countersOf(runner: CommandRunner, sets: ReadonlySet<string>): Promise<Map<string, Map<string, string>>> {
  const found = new Map([...sets].map((set) => [set, new Map<string, string>()]));
  const saved = await runner.run(['ipset', 'save'], { allowFailure: true });
  if (saved.exitCode !== 0) return found;
  // A set that keeps no counters (made by an older gateway) prints none: its plain undo is the one that holds.
  const counting = new Set<string>();
  for (const [, set, options] of saved.stdout.matchAll(/^create (\S+) \S+(.*)$/gm)) if (sets.has(set!) && /\bcounters\b/.test(options!)) counting.add(set!);
  forEachIpsetMember(saved.stdout, (set, member, packets, bytes) => {
    if (counting.has(set)) found.get(set)!.set(member, `packets ${packets} bytes ${bytes}`);
  });
  return found;
}

export type RemakeStep = Extract<Step, { kind: 'set-update' }> & { readonly remake: number };

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
export async function runSetRemakes(runner: CommandRunner, steps: readonly RemakeStep[], observer: ApplyObserver): Promise<undefined> {
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
 * is destroyed. The kernel's refusal would come only after the sets before it in the script were gone, to be made
 * again by the rollback (with their members' counters: destroyLine) in reverse order. A rule of someone else's in the
 * tables the plan read was named by the planner already (InUseError); this one is in the other backend, or in another
 * table.
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
export async function runLaterSets(runner: CommandRunner, backend: Backend, lines: readonly SetLine[]): Promise<Undo> {
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
