import type { CommandModule } from 'yargs';
import { halfInstalled } from '../apply/hints.js';
import { userRulesGuard } from '../apply/user-rules-check.js';
import { installed, restoreCommand } from '../observe/read.js';
import { formatPlan } from '../plan/format.js';
import { reconcileOnce } from '../reconcile/once.js';
import { loadFor, makeRunner, out, readWhileLoading, withPlanCache, type GlobalArgs } from './context.js';

interface PlanArgs extends GlobalArgs {
  'detailed-exitcode'?: boolean;
  down?: boolean;
}

export const planCommand: CommandModule<GlobalArgs, PlanArgs> = {
  command: 'plan',
  describe: 'Show what apply would change (addresses, route, sysctls, rules per chain)',
  builder: (y) => y
    .option('detailed-exitcode', { type: 'boolean', describe: 'exit 0 in sync, 1 on error, 2 with changes pending' })
    .option('down', { type: 'boolean', describe: 'show what down would remove instead' }),
  handler: async (args) => {
    const { plan, facts: { backend }, cannotWrite } = await withPlanCache(async (cache) => {
      const runner = makeRunner(args.netns);
      // Read while the config file loads (plan writes nothing, and takes no lock).
      const { loaded: { config, templates }, reading } = await readWhileLoading(runner, () => loadFor(args.down ? 'down' : 'up', args, cache));
      const planned = await reconcileOnce(runner, config, templates, { dryRun: true, mode: args.down ? 'down' : 'up', reading });
      // What apply asks iptables before its first write (`--test`: nothing is committed): a rule of rules.dir it
      // refuses is said here as apply and validate say it, not counted among the changes pending.
      await userRulesGuard(runner, templates, { readOnly: true })(planned.facts, planned.plan);
      // A table to write and no restore to write it with, its save there (a half-installed iptables): apply would fail
      // at its first write, saying so; said here too, beside the changes it could not make.
      const [restore] = restoreCommand(planned.facts.backend);
      const cannotWrite = planned.plan.steps.some((s) => s.kind === 'table') && !(await installed(runner, restore!));
      return { ...planned, cannotWrite };
    });
    out(formatPlan(plan));
    if (cannotWrite) process.stderr.write(`vlan-gateway: warning: ${halfInstalled(backend, 'restore')}; apply would fail\n`);
    if (args['detailed-exitcode'] && plan.steps.length > 0) process.exitCode = 2;
  },
};
