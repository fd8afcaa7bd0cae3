import type { CommandModule } from 'yargs';
import { userRulesRefusal, userTemplateFile, writesUserRules } from '../apply/user-rules-check.js';
import { formatPlan } from '../plan/format.js';
import type { Facts } from '../observe/facts.js';
import type { Plan } from '../plan/types.js';
import { reconcileOnce, type Mode } from '../reconcile/once.js';
import { loadFor, makeRunner, out, withPlanCache, type GlobalArgs } from './context.js';

async function converge(args: GlobalArgs, mode: Mode): Promise<void> {
  await withPlanCache(async (cache) => {
    const { config, templates } = await loadFor(mode, args, cache);
    const started = performance.now();
    const runner = makeRunner(args.netns);
    // The user's rules are parsed by iptables (`--test`, which commits nothing) before anything is written: a rule
    // only iptables refuses is an invalid config (exit 2, nothing applied), not a table written and rolled back.
    const beforeWrite = async (facts: Facts, plan: Plan) => {
      if (!writesUserRules(plan)) return;
      const refusal = await userRulesRefusal(runner, facts.backend, plan.desired, userTemplateFile(templates));
      if (refusal) throw refusal;
    };
    const { plan } = await reconcileOnce(runner, config, templates, { mode, beforeWrite });
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
