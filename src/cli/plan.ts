import type { CommandModule } from 'yargs';
import { formatPlan } from '../plan/format.js';
import { reconcileOnce } from '../reconcile/once.js';
import { loadFor, makeRunner, out, withPlanCache, type GlobalArgs } from './context.js';

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
    const { plan } = await withPlanCache(async (cache) => {
      const { config, templates } = await loadFor(args.down ? 'down' : 'up', args, cache);
      return reconcileOnce(makeRunner(args.netns), config, templates, { dryRun: true, mode: args.down ? 'down' : 'up' });
    });
    out(formatPlan(plan));
    if (args['detailed-exitcode'] && plan.steps.length > 0) process.exitCode = 2;
  },
};
