import type { CommandModule } from 'yargs';
import { ApplyError } from '../apply/apply.js';
import { userRulesGuard } from '../apply/user-rules-check.js';
import { formatPlan } from '../plan/format.js';
import { reconcileOnce, type Mode } from '../reconcile/once.js';
import { loadFor, makeRunner, out, withPlanCache, type GlobalArgs } from './context.js';
import { FailureError } from './errors.js';
import { WRITE_LOCK_TIMEOUT_MS, WriteLock } from './instance-lock.js';

async function converge(args: GlobalArgs, mode: Mode): Promise<void> {
  await withPlanCache(async (cache) => {
    const { config, templates } = await loadFor(mode, args, cache);
    // Read, plan and write with no other apply or down between (an invalid config above has waited for nothing).
    const lock = await WriteLock.wait(args.netns, { timeoutMs: WRITE_LOCK_TIMEOUT_MS, onWait: (message) => process.stderr.write(`vlan-gateway: ${message}\n`) });
    const started = performance.now();
    const runner = makeRunner(args.netns);
    const { plan } = await reconcileOnce(runner, config, templates, { mode, beforeWrite: userRulesGuard(runner, templates) }).catch((error: unknown) => {
      // The same failure as an apply's (the table, the line, "rolled back"), said as down's.
      throw mode === 'down' && error instanceof ApplyError ? new FailureError(`down failed: ${error.message}`) : error;
    }).finally(() => lock.release());
    out(formatPlan(plan).replace(/pending\.$/, `applied in ${Math.round(performance.now() - started)} ms.`));
  });
}

export const applyCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'apply',
  describe: 'Bring the namespace to the config: gateway addresses, route, rules, ip_forward (atomic, idempotent)',
  handler: (args) => converge(args, 'up'),
};

export const downCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'down',
  describe: 'Remove what the gateway added (its addresses, chains, jumps and ipsets) and nothing else',
  handler: (args) => converge(args, 'down'),
};
