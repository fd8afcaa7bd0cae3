import type { CommandModule } from 'yargs';
import { checkTemplates } from '../apply/user-rules-check.js';
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
    const desired = await checkTemplates(makeRunner(args.netns), 'nft', loaded.config, templates);
    const rules = desired.chains.reduce((n, c) => n + c.rules.length, 0);
    out(`${loaded.path}: valid (${loaded.config.vlans.length} VLAN${loaded.config.vlans.length === 1 ? '' : 's'}, ${desired.chains.length} chains, ${rules} rules when every NIC is present)`);
  },
};
