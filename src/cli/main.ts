/**
 * The composition root: yargs commands wired to real implementations. Entered from src/main.ts (tsx) or from the
 * launcher (dist/vlan-gateway.mjs), which passes the code cache it loaded the bundle with.
 */
import yargs from 'yargs';
import { applyCommand, downCommand } from './apply.js';
import { setCodeCache, type CodeCache } from './code-cache.js';
import { describeError, exitCodeOf, EXIT } from './errors.js';
import { labCommand } from './lab.js';
import { planCommand } from './plan.js';
import { runCommand } from './run.js';
import { statusCommand } from './status.js';
import { validateCommand } from './validate.js';

export async function main(argv: string[], options: { codeCache?: CodeCache } = {}): Promise<number> {
  setCodeCache(options.codeCache);
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
