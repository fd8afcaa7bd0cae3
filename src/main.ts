#!/usr/bin/env node
/** The composition root: yargs commands wired to real implementations. */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { applyCommand, downCommand } from './cli/apply.js';
import { describeError, exitCodeOf, EXIT } from './cli/errors.js';
import { labCommand } from './cli/lab.js';
import { planCommand } from './cli/plan.js';
import { runCommand } from './cli/run.js';
import { statusCommand } from './cli/status.js';
import { validateCommand } from './cli/validate.js';

export async function main(argv: string[]): Promise<number> {
  let failed: unknown;
  let usage = false;
  try {
    await yargs(argv)
      .scriptName('vlan-gateway')
      .usage('$0 <command> [options]\n\nA software router for Docker containers on several VLANs.')
      .option('config', { type: 'string', describe: 'config file (default: $VLAN_GATEWAY_CONFIG, else /etc/vlan-gateway/gateway.yaml)' })
      .option('netns', { type: 'string', describe: 'act inside this named network namespace (ip netns)' })
      .command(validateCommand)
      .command(planCommand)
      .command(applyCommand)
      .command(downCommand)
      .command(labCommand)
      .command(runCommand)
      .command(statusCommand)
      .demandCommand(1, 'Name a command.')
      .strict()
      .fail((message, error) => {
        if (error) throw error;
        usage = true;
        throw new Error(message);
      })
      .help()
      .parseAsync();
  } catch (error) {
    failed = error;
  }
  if (failed === undefined) return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  if (usage) {
    process.stderr.write(`${(failed as Error).message}\nRun vlan-gateway --help for usage.\n`);
    return EXIT.invalid;
  }
  process.stderr.write(`vlan-gateway: ${describeError(failed)}\n`);
  return exitCodeOf(failed);
}

process.exitCode = await main(hideBin(process.argv));
