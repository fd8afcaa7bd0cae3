/** What an apply tells as it goes (ApplyObserver), and the one way it calls an observer (tell). */
import type { Plan, Step, TableStep } from '../plan/types.js';
import type { FlowsCleared } from './conntrack.js';

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

/**
 * An observer's call, which must not change what the apply does: one that threw after a table was written took
 * the table for not written, and the rollback left it in place. (Observers count: a throw is a bug, said loudly.)
 */
export function tell(call: () => void): void {
  try {
    call();
  } catch (error) {
    process.emitWarning(`vlan-gateway: an apply observer failed: ${(error as Error)?.stack ?? String(error)}`);
  }
}
