/** What the writers of a plan's steps share: the undo each returns, and the failure naming the step it failed at. */
import { CommandError } from '../exec/runner.js';
import type { Step } from '../plan/types.js';

export type Undo = () => Promise<unknown>;

/** A batch failed, and undoing its earlier lines failed too: the first is the failure, the second a rollback error. */
export class UndoFailed extends Error {
  constructor(readonly original: unknown, readonly undoError: unknown) {
    super(String((original as Error)?.message ?? original));
  }
}

/** A batch or script failed at the line of `step`; `partial`: lines before it had taken effect (and were undone). */
export class StepFailed extends Error {
  constructor(readonly step: Step, override readonly cause: unknown, readonly partial = false) {
    super(String((cause as Error)?.message ?? cause));
  }
}

/**
 * A tool killed before it said how far it got (the supervisor's --command-timeout, the OOM killer): any of its lines
 * may have taken effect, and a restore's commit too (a SIGKILL waits for the kernel's commit to end).
 */
export const killed = (error: unknown): error is CommandError => error instanceof CommandError && error.exitCode === null && !error.notFound;
