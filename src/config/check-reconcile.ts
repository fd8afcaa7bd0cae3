/** The reconcile section: a schedule that is a cron expression. Pure. */
import cron from 'node-cron';
import { asString, isObject, problemList, type Raw } from './cross-field.js';
import { quoted, type Problem } from './problems.js';

export function reconcileProblems(input: Raw): Problem[] {
  const { problems, add } = problemList();
  const reconcile = isObject(input.reconcile) ? input.reconcile : {};
  const schedule = asString(reconcile.schedule);
  // The schema's pattern keeps out what could never be one; node-cron decides the rest ("61 * * * *").
  if (schedule !== undefined && /^[0-9*/,\- A-Za-z?]+$/.test(schedule) && !cron.validate(schedule)) {
    add(['reconcile', 'schedule'], `${quoted(schedule)} is not a valid cron expression (5 fields, or 6 with seconds first, like "*/30 * * * * *")`);
  }
  return problems;
}
