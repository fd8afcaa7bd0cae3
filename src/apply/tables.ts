/** One table's iptables-restore and its undo, and whether a restore that was killed had committed. */
import type { CommandRunner } from '../exec/runner.js';
import type { Backend } from '../observe/facts.js';
import { restoreCommand } from '../observe/read.js';
import { tell, type ApplyObserver } from './observer.js';
import { refusedAtCommit } from './parse-restore-failure.js';
import { killed, StepFailed, UndoFailed, type Undo } from './steps.js';
import type { TableStep } from '../plan/types.js';

/** A restore of one table; its undo restores the previous content of the chains it changes, counters included. */
export async function runTable(runner: CommandRunner, backend: Backend, step: TableStep, observer: ApplyObserver): Promise<Undo> {
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
