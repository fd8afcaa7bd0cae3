import type { CommandModule } from 'yargs';
import { userRulesRefusal, userTemplateFile } from '../apply/user-rules-check.js';
import { planDesired } from '../plan/desired.js';
import { syntheticFacts } from '../plan/synthetic.js';
import { loadAll, makeRunner, out, type GlobalArgs } from './context.js';

/**
 * Checks the file and renders every template against a namespace where all NICs are present, and has iptables
 * parse the user's own rules (`--test`: nothing is committed); touches nothing.
 */
export const validateCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'validate',
  describe: 'Check the config file and rule templates; change nothing',
  handler: async (args) => {
    const { loaded, templates } = await loadAll(args);
    const desired = planDesired(loaded.config, syntheticFacts(loaded.config), templates);
    const refusal = await userRulesRefusal(makeRunner(args.netns), 'nft', desired, userTemplateFile(templates));
    if (refusal) throw refusal;
    const rules = desired.chains.reduce((n, c) => n + c.rules.length, 0);
    out(`${loaded.path}: valid (${loaded.config.vlans.length} VLANs, ${desired.chains.length} chains, ${rules} rules when every NIC is present)`);
  },
};
