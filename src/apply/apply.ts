/**
 * Carrying out a plan: each step is one write (ip, sysctl, or one iptables-restore per table), and each write
 * that succeeds records how to undo it. When a step fails, the earlier ones are undone in reverse, so a failed
 * apply leaves the previous rules, addresses and route in place, and the error names what failed and why.
 */
import { CommandError, type CommandRunner } from '../exec/runner.js';
import type { Backend } from '../observe/facts.js';
import { restoreCommand } from '../observe/read.js';
import { OUR_ADDRESS_METRIC } from '../plan/chains.js';
import type { Plan, Step } from '../plan/types.js';
import { privilegeHint, sysctlHint } from './hints.js';

export interface ApplyObserver {
  restore?(table: string, ok: boolean): void;
}

export class ApplyError extends Error {
  override readonly name = 'ApplyError';
  constructor(
    message: string,
    readonly step: Step,
    readonly rolledBack: boolean,
    readonly rollbackErrors: readonly string[],
  ) {
    super(message);
  }
}

type Undo = () => Promise<unknown>;

/** A batch failed, and undoing its earlier lines failed too: the first is the failure, the second a rollback error. */
class UndoFailed extends Error {
  constructor(readonly original: unknown, readonly undoError: unknown) {
    super(String((original as Error)?.message ?? original));
  }
}

/**
 * The failing line of a restore payload with two lines either side, numbered. iptables 1.8 says which line in
 * three ways: "line 7 failed" (legacy), "Error occurred at line: 7" (a line it cannot parse), and
 * "line 7: RULE_APPEND failed (…)" (a rule the kernel refuses).
 */
export function restoreFailureContext(payload: string, stderr: string): string {
  const m = /line (\d+) failed|Error occurred at line: (\d+)|line (\d+): \w+ failed/.exec(stderr);
  if (!m) return '';
  const failing = Number(m[1] ?? m[2] ?? m[3]);
  const lines = payload.split('\n');
  const from = Math.max(1, failing - 2);
  const to = Math.min(lines.length, failing + 2);
  const out: string[] = [];
  for (let n = from; n <= to; n++) out.push(`${n === failing ? '>' : ' '} ${String(n).padStart(4)} | ${lines[n - 1]}`);
  return out.join('\n');
}

/** One step that is not an address/route step (those always run as an `ip -batch`, see runAddressBatch). */
async function runStep(runner: CommandRunner, backend: Backend, step: Exclude<Step, AddressStep>, observer: ApplyObserver): Promise<Undo | undefined> {
  switch (step.kind) {
    case 'table': {
      try {
        await runner.run(restoreCommand(backend), { input: step.payload });
        observer.restore?.(step.table, true);
      } catch (error) {
        observer.restore?.(step.table, false);
        throw error;
      }
      return async () => {
        try {
          await runner.run(restoreCommand(backend, true), { input: step.undo });
          observer.restore?.(step.table, true);
        } catch (error) {
          observer.restore?.(step.table, false);
          throw error;
        }
      };
    }
    case 'set-update': {
      const script = (create: boolean, add: readonly string[], del: readonly string[]) => [
        ...(create ? [`create ${step.set} ${step.type} counters -exist`] : []),
        ...add.map((m) => `add ${step.set} ${m} -exist`),
        ...del.map((m) => `del ${step.set} ${m} -exist`),
        '',
      ].join('\n');
      await runner.run(['ipset', 'restore'], { input: script(step.create, step.add, step.del) });
      if (step.create) return () => runner.run(['ipset', 'destroy', step.set], { allowFailure: true });
      return () => runner.run(['ipset', 'restore'], { input: script(false, step.del, step.add) });
    }
    case 'set-destroy': {
      await runner.run(['ipset', 'destroy', step.set]);
      return () => runner.run(['ipset', 'restore'], {
        input: [`create ${step.set} ${step.type} counters -exist`, ...step.members.map((m) => `add ${step.set} ${m} -exist`), ''].join('\n'),
      });
    }
    case 'sysctl': {
      await runner.run(['sysctl', '-w', `${step.key}=${step.value}`]);
      const previous = step.previous;
      return previous === undefined ? undefined : () => runner.run(['sysctl', '-w', `${step.key}=${previous}`]);
    }
  }
}

export function describeStep(step: Step): string {
  switch (step.kind) {
    case 'link-up': return `bringing up ${step.nic} (vlan ${step.vlan})`;
    case 'address-add': return `adding ${step.address}/${step.prefix} to ${step.nic} (vlan ${step.vlan})`;
    case 'address-del': return `removing ${step.address}/${step.prefix} from ${step.nic}${step.vlan ? ` (vlan ${step.vlan})` : ''}`;
    case 'route': return `setting the default route via ${step.gateway}`;
    case 'table': return `applying the ${step.table} table`;
    case 'set-update': return `${step.create ? 'creating' : 'updating'} ipset ${step.set}`;
    case 'set-destroy': return `removing ipset ${step.set}`;
    case 'sysctl': return `setting ${step.key}=${step.value}`;
  }
}

function explain(step: Step, error: unknown): string {
  if (!(error instanceof CommandError)) return String((error as Error)?.message ?? error);
  const stderr = error.stderr.trim();
  if (step.kind === 'sysctl') {
    const hint = sysctlHint(step.key, step.value, stderr);
    return `${stderr || error.message}${hint ? `; ${hint}` : ''}`;
  }
  const hint = privilegeHint(stderr);
  if (step.kind === 'table') {
    const context = restoreFailureContext(step.payload, error.stderr);
    const program = error.argv.find((a) => a.endsWith('-restore')) ?? error.argv[0];
    return `${program} failed (exit ${error.exitCode}): ${stderr}${hint ? `; ${hint}` : ''}${context ? `\n${context}` : ''}`;
  }
  return `${error.argv.join(' ')}: ${stderr || `exit ${error.exitCode}`}${hint ? `; ${hint}` : ''}`;
}

type AddressStep = Extract<Step, { kind: 'link-up' | 'address-add' | 'address-del' | 'route' }>;
const isAddressStep = (step: Step): step is AddressStep =>
  step.kind === 'link-up' || step.kind === 'address-add' || step.kind === 'address-del' || step.kind === 'route';

/**
 * A run of link, address and route steps is one `ip -batch -` (one process for 100 VLANs instead of 100). Its
 * undo uses `-force` so that it undoes what it can even if the batch stopped half-way.
 */
async function runAddressBatch(runner: CommandRunner, steps: readonly AddressStep[]): Promise<Undo> {
  const metric = String(OUR_ADDRESS_METRIC);
  const route = (gateway: string, dev?: string) => `route replace default via ${gateway}${dev ? ` dev ${dev}` : ''}`;
  const line = (s: AddressStep) => {
    switch (s.kind) {
      case 'link-up': return `link set dev ${s.nic} up`;
      case 'address-add': return `address add ${s.address}/${s.prefix} dev ${s.nic} metric ${metric}`;
      case 'address-del': return `address del ${s.address}/${s.prefix} dev ${s.nic}`;
      case 'route': return route(s.gateway, s.dev);
    }
  };
  const undoLine = (s: AddressStep) => {
    switch (s.kind) {
      case 'link-up': return undefined; // bringing a NIC up is harmless to leave
      case 'address-add': return `address del ${s.address}/${s.prefix} dev ${s.nic}`;
      case 'address-del': return `address add ${s.address}/${s.prefix} dev ${s.nic} metric ${metric}`;
      case 'route': return s.previous?.gateway ? route(s.previous.gateway, s.previous.dev) : 'route del default';
    }
  };
  const undoFor = (done: readonly AddressStep[]): Undo => {
    const lines = done.map(undoLine).filter((l): l is string => l !== undefined).reverse();
    return () => (lines.length > 0 ? runner.run(['ip', '-force', '-batch', '-'], { input: `${lines.join('\n')}\n` }) : Promise.resolve());
  };
  try {
    await runner.run(['ip', '-batch', '-'], { input: `${steps.map(line).join('\n')}\n` });
  } catch (error) {
    // ip stops at the failing line; the lines before it took effect and are undone here. If that fails too, the
    // original failure is still the one reported, with the undo's appended.
    try {
      await undoFor(steps.slice(0, steps.indexOf(failedBatchStep(steps, error))))();
    } catch (undoError) {
      throw new UndoFailed(error, undoError);
    }
    throw error;
  }
  return undoFor(steps);
}

/**
 * After a gateway address is added, one unsolicited ARP (`arping -U`) tells the VLAN's hosts where it lives now:
 * a host that tried the gateway before the address existed otherwise waits for its own ARP retry (about 1 s),
 * and one that knew another MAC for it (a replaced container) keeps the stale entry until it expires. Best
 * effort and not awaited: no arping, or no NET_RAW, only means hosts find the gateway by themselves.
 */
function announce(runner: CommandRunner, steps: readonly Step[]): void {
  const queue = steps.filter((s): s is Extract<Step, { kind: 'address-add' }> => s.kind === 'address-add');
  // After the pass has returned, and a few at a time: 100 VLANs must not mean 100 spawns before /readyz.
  const next = (): void => {
    const step = queue.shift();
    if (!step) return;
    try {
      const child = runner.start(['arping', '-q', '-U', '-c', '1', '-I', step.nic, step.address], { detached: true });
      child.exited.then(next, next);
    } catch {
      // not installed here: nothing to announce with
    }
  };
  setImmediate(() => {
    for (let i = 0; i < ANNOUNCE_CONCURRENCY; i++) next();
  });
}

const ANNOUNCE_CONCURRENCY = 8;

/** Applies every step or, on failure, none: throws ApplyError after undoing what had been done. */
export async function applyPlan(runner: CommandRunner, backend: Backend, plan: Plan, observer: ApplyObserver = {}): Promise<void> {
  const undos: Undo[] = [];
  const steps = plan.steps;
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    let batch: AddressStep[] | undefined;
    if (isAddressStep(step)) {
      let j = i;
      while (j < steps.length && isAddressStep(steps[j]!)) j++;
      batch = steps.slice(i, j) as AddressStep[];
      i = j - 1;
    }
    try {
      const undo = batch ? await runAddressBatch(runner, batch) : await runStep(runner, backend, step as Exclude<Step, AddressStep>, observer);
      if (undo) undos.push(undo);
    } catch (caught) {
      const error = caught instanceof UndoFailed ? caught.original : caught;
      const rollbackErrors: string[] = caught instanceof UndoFailed ? [String((caught.undoError as Error)?.message ?? caught.undoError)] : [];
      for (const undo of undos.reverse()) {
        try {
          await undo();
        } catch (undoError) {
          rollbackErrors.push(String((undoError as Error).message));
        }
      }
      const failed = batch ? failedBatchStep(batch, error) : step;
      const partial = batch !== undefined && failed !== batch[0];
      const rolled = rollbackErrors.length > 0 ? `rollback failed too: ${rollbackErrors.join('; ')}`
        : undos.length > 0 ? 'the earlier steps were rolled back'
        : partial ? 'the lines before it were undone' : 'nothing had been changed';
      throw new ApplyError(`${describeStep(failed)} failed: ${explain(failed, error)}\n(${rolled})`, failed, rollbackErrors.length === 0, rollbackErrors);
    }
  }
  announce(runner, steps);
}

/** `ip -batch` names the failing line ("Command failed -:3"): map it back to its step. */
function failedBatchStep(batch: readonly AddressStep[], error: unknown): AddressStep {
  const m = /Command failed -:(\d+)/.exec(error instanceof CommandError ? error.stderr : '');
  return batch[m ? Number(m[1]) - 1 : 0] ?? batch[0]!;
}
