/** How the supervisor judges a failed pass: fatal, the kernel refusing the config in effect, and what its log says. */
import { AccountingError, ApplyError } from '../apply/apply.js';
import { privilegeHint } from '../apply/hints.js';

/** Failures no retry can fix: the container lacks NET_ADMIN or NET_RAW, or /proc/sys is read-only and the sysctl unset. */
export function isFatal(error: unknown): boolean {
  const e = error as { message?: string; stderr?: string };
  return /--cap-add NET_(ADMIN|RAW)|--sysctl /.test(e?.message ?? '') || privilegeHint(e?.stderr ?? '') !== undefined;
}

/** A pass of the config in effect whose tables the kernel refused at commit, rolled back (see the catch of Supervisor.pass). */
export function isRefusal(error: unknown, current: boolean): error is ApplyError {
  return error instanceof ApplyError && error.rolledBack && current && (error.userChain !== undefined || error.commitRefusal !== undefined);
}

/**
 * What the log says of a failed pass, as the apply left the namespace: the previous rules (the usual case: rolled
 * back, or failed before writing), the new ones but for the accounting members, or neither (a rollback step failed
 * too: some of the pass's writes stand, until the retry puts the config in place).
 */
export function failedPassSays(error: unknown): string {
  if (error instanceof AccountingError) return 'reconcile failed; forwarding applied, the per-pair accounting is incomplete';
  if (error instanceof ApplyError && error.rollbackErrors.length > 0) return 'reconcile failed, and so did its rollback: the namespace is part old, part new until the retry';
  return 'reconcile failed; previous rules left in place';
}
