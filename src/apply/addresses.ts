/** The link, address and route steps: one `ip -batch` and its undo (one `ip` a step where it would misread a name). */
import { asRun, CommandError, type CommandRunner } from '../exec/runner.js';
import { OUR_ADDRESS_METRIC, OUR_ROUTE_PROTO } from '../plan/chains.js';
import type { Step } from '../plan/types.js';
import { failedScriptLine } from './parse-restore-failure.js';
import { killed, StepFailed, UndoFailed, type Undo } from './steps.js';

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
export async function runAddressBatch(runner: CommandRunner, steps: readonly AddressStep[]): Promise<Undo> {
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
