/**
 * `vlan-gateway lab`: the write-up's network in namespaces, with the gateway applied in its router namespace.
 * `up` builds and applies, `check` sends real packets and compares them with what the config allows,
 * `down` removes it all, and `demo` (the README's first command) does down, up and check in one go.
 */
import type { CommandModule } from 'yargs';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { ExecaRunner } from '../exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../exec/runner.js';
import { formatMatrix, labCheck, labDown, labUp, listLabNamespaces, planLabTopology, DEFAULT_LAB_NAME } from '../lab/index.js';
import type { LabTopology } from '../lab/topology.js';
import { exampleConfigPath } from '../package-files.js';
import { formatPlan } from '../plan/format.js';
import { reconcileOnce } from '../reconcile/once.js';
import { loadTemplates } from '../template/load.js';
import { out, type GlobalArgs } from './context.js';
import { UsageError } from './errors.js';

interface LabArgs extends GlobalArgs {
  name: string;
}

async function labConfig(args: LabArgs): Promise<{ loaded: LoadedConfig; topology: LabTopology }> {
  // The lab ignores $VLAN_GATEWAY_CONFIG: without --config it is always the write-up's example.
  const loaded = await loadConfig(args.config ?? exampleConfigPath());
  return { loaded, topology: planLabTopology(loaded.config, args.name) };
}

async function up(runner: CommandRunner, args: LabArgs): Promise<LabTopology> {
  const { loaded, topology } = await labConfig(args);
  const templates = await loadTemplates(loaded.config.rules.dir, loaded.path);
  if ((await listLabNamespaces(runner, args.name)).length > 0) {
    throw new UsageError(`lab ${args.name} already exists; run \`vlan-gateway lab down --name ${args.name}\` first`);
  }
  out(`building lab ${args.name} from ${loaded.path} ...`);
  await labUp(runner, topology);
  out(`applying the config in ${topology.router} ...`);
  const { plan } = await reconcileOnce(inNamespace(runner, topology.router), loaded.config, templates);
  out(formatPlan(plan).replace(/pending\.$/, 'applied.'));
  return topology;
}

async function check(runner: CommandRunner, args: LabArgs): Promise<boolean> {
  const { loaded, topology } = await labConfig(args);
  if ((await listLabNamespaces(runner, args.name)).length === 0) {
    throw new UsageError(`lab ${args.name} does not exist; run \`vlan-gateway lab up --name ${args.name}\` first`);
  }
  const result = await labCheck(runner, topology, loaded.config);
  out(formatMatrix(result));
  // What the config allows is worked out from its forwarding rules and NAT; the user's own templates are not read.
  if (loaded.config.rules.dir) out(`note: the "allowed" column does not model the templates in rules.dir (${loaded.config.rules.dir}): a rule of yours shows as a mismatch`);
  return result.ok;
}

async function down(runner: CommandRunner, args: LabArgs): Promise<void> {
  const removed = await labDown(runner, args.name);
  out(removed.length > 0 ? `removed ${removed.join(', ')}` : `lab ${args.name}: nothing to remove`);
}

const withName = <T>(y: import('yargs').Argv<T>) =>
  y.option('name', { type: 'string', default: DEFAULT_LAB_NAME, describe: 'lab name (namespaces vgwlab-<name>-*)' });

export const labCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'lab <action>',
  describe: 'The write-up\'s two-VLAN network in network namespaces, routed by the gateway (needs root)',
  builder: (y) => withName(y)
    .positional('action', { choices: ['demo', 'up', 'check', 'down'] as const, describe: 'demo = down + up + check' })
    .epilogue('Without --config the lab uses the write-up\'s example (examples/lab.yaml).'),
  handler: async (raw) => {
    const args = raw as unknown as LabArgs & { action: string };
    const runner = new ExecaRunner();
    switch (args.action) {
      case 'up':
        await up(runner, args);
        // The lab does not remember its config: `check` must be given the same one, or it checks the example's policy.
        out(`\nlab ${args.name} is up. Try: vlan-gateway lab check --name ${args.name}${args.config ? ` --config ${args.config}` : ''}; remove it with: vlan-gateway lab down --name ${args.name}`);
        return;
      case 'check':
        if (!(await check(runner, args))) process.exitCode = 1;
        return;
      case 'down':
        return down(runner, args);
      case 'demo': {
        await down(runner, args);
        const topology = await up(runner, args);
        out('');
        const ok = await check(runner, args);
        out(`\nThe lab stays up for you to explore, e.g.: ip netns exec ${topology.router} iptables-save`);
        // Said as the user started it: `npm run lab` has its own script to undo it.
        out(`Remove it with: ${process.env.npm_lifecycle_event === 'lab' && args.name === DEFAULT_LAB_NAME ? 'npm run lab:down' : `vlan-gateway lab down --name ${args.name}`}`);
        if (!ok) process.exitCode = 1;
      }
    }
  },
};
