/**
 * `vlan-gateway lab`: the write-up's network in namespaces, with the gateway applied in its router namespace.
 * `up` builds and applies, `check` sends real packets and compares them with what the config allows,
 * `down` removes it all, and `demo` (the README's first command) does down, up and check in one go.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { checkTemplates, userRulesGuard } from '../apply/user-rules-check.js';
import { configError, loadConfig, type LoadedConfig } from '../config/load.js';
import { printable } from '../config/problems.js';
import { ExecaRunner } from '../exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../exec/runner.js';
import { assertLabName, formatMatrix, labCheck, labDown, labPrefix, labUp, LabInputError, listLabNamespaces, missingLabAddresses, planLabTopology, DEFAULT_LAB_NAME } from '../lab/index.js';
import { readLabRecord, textDigest, writeLabRecord } from '../lab/record.js';
import type { LabTopology } from '../lab/topology.js';
import { exampleConfigPath } from '../package-files.js';
import { formatPlan } from '../plan/format.js';
import type { Templates } from '../plan/desired.js';
import { reconcileOnce } from '../reconcile/once.js';
import { withWriteLock } from './apply.js';
import { out, templatesOf, type GlobalArgs } from './context.js';
import { FailureError, UsageError } from './errors.js';

interface LabArgs extends GlobalArgs {
  name: string;
}

async function labConfig(args: LabArgs, path = args.config ?? exampleConfigPath()): Promise<{ loaded: LoadedConfig; topology: LabTopology }> {
  // The lab ignores $VLAN_GATEWAY_CONFIG: without --config it is the write-up's example (or, for check, what
  // `lab up` recorded).
  const loaded = await loadConfig(path);
  return { loaded, topology: labTopologyOf(loaded, args.name) };
}

/**
 * The lab for a config, or, where the lab cannot build one the gateway takes (a subnet where the lab puts its uplink
 * or its Internet host, one too small for the lab's client), the problems as `validate` says a config's: with the
 * file, each at its path and line. They were said bare ("vlan docs: 203.0.113.0/24 overlaps the uplink network
 * 203.0.113.0/24"), naming neither the file nor the key to change.
 */
export function labTopologyOf(loaded: LoadedConfig, name: string): LabTopology {
  try {
    return planLabTopology(loaded.config, name);
  } catch (error) {
    if (!(error instanceof LabInputError) || error.problems.length === 0) throw error;
    const { problems, lines } = configError(loaded.path, loaded.text, error.problems);
    const count = `${problems.length} problem${problems.length === 1 ? '' : 's'}`;
    throw new LabInputError(`the lab cannot be built from ${printable(loaded.path)}, though the gateway takes it (${count} with what the lab sets up itself):\n${lines.map((l) => `  ${l}`).join('\n')}`, problems);
  }
}

/**
 * The config `check` compares with: --config, else the one `lab up` recorded, else the example. Notes what a
 * user could misread: a recorded file edited since, or --config naming another file than the lab was built from.
 */
async function checkConfigPath(args: LabArgs): Promise<string> {
  const record = await readLabRecord(args.name);
  if (args.config !== undefined) {
    if (record && resolve(args.config) !== record.config) out(`note: lab ${args.name} was built from ${record.config}; checking against ${args.config}`);
    return args.config;
  }
  if (!record) return exampleConfigPath();
  let text: string;
  try {
    text = await readFile(record.config, 'utf8');
  } catch (error) {
    throw new UsageError(`lab ${args.name} was built from ${record.config}, which cannot be read now (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); give the config with --config`);
  }
  if (textDigest(text) !== record.digest) {
    out(`note: ${record.config} changed since \`lab up\` applied it; checking against it as it is now (apply it with: vlan-gateway apply --netns ${labPrefix(args.name)}router --config ${record.config})`);
  }
  return record.config;
}

/**
 * The config up would apply, checked as `validate` checks it (every template rendered, the user's rules parsed by
 * iptables with `--test`, which commits nothing and so needs no namespace of the lab's).
 */
async function checkedLabConfig(runner: CommandRunner, args: LabArgs): Promise<{ loaded: LoadedConfig; topology: LabTopology; templates: Templates }> {
  const { loaded, topology } = await labConfig(args);
  const templates = await templatesOf(loaded);
  await checkTemplates(runner, 'nft', loaded.config, templates);
  return { loaded, topology, templates };
}

async function up(runner: CommandRunner, args: LabArgs, checked?: Awaited<ReturnType<typeof checkedLabConfig>>): Promise<LabTopology> {
  // A config `validate` refuses builds nothing.
  const { loaded, topology, templates } = checked ?? await checkedLabConfig(runner, args);
  if ((await listLabNamespaces(runner, args.name)).length > 0) {
    throw new UsageError(`lab ${args.name} already exists; run \`vlan-gateway lab down --name ${args.name}\` first`);
  }
  out(`building lab ${args.name} from ${loaded.path} ...`);
  await undoneIfStopped(runner, args.name, async (stopped) => {
    await labUp(runner, topology);
    if (stopped()) return;
    // Recorded before the apply: a lab whose apply fails still stands, built from this config.
    await writeLabRecord(args.name, { config: resolve(loaded.path), digest: textDigest(loaded.text) });
    out(`applying the config in ${topology.router} ...`);
    const router = inNamespace(runner, topology.router);
    try {
      // As `apply --netns` does: no apply or down, and no supervisor, writing in the router beside it.
      const { plan } = await withWriteLock(topology.router, 'up', () => reconcileOnce(router, loaded.config, templates, { beforeWrite: userRulesGuard(router, templates) }), stopped);
      if (!stopped()) out(formatPlan(plan).replace(/pending\.$/, 'applied.')); // else the lab is removed: said below
    } catch (error) {
      if (stopped()) throw error; // the lab is removed (undoneIfStopped)
      // Only the kernel refuses what got this far (validate passed): the lab stands, to look into.
      out(`lab ${args.name} is built, but the config did not apply (below). Fix it and apply it with: vlan-gateway apply --netns ${topology.router} --config ${loaded.path}; or remove the lab with: vlan-gateway lab down --name ${args.name}`);
      throw error;
    }
  });
  return topology;
}

/**
 * labUp undoes a build whose command fails; a Ctrl-C or a SIGTERM would end the process half-way instead, and one
 * while it applied (or waited for another apply to finish with its router) left the lab built without its config,
 * saying nothing. They are held while `up` builds and applies (a wait for the router's write lock ends at once),
 * and what was built is then removed before the process ends (130 or 143).
 */
async function undoneIfStopped(runner: CommandRunner, name: string, work: (stopped: () => boolean) => Promise<void>): Promise<void> {
  let signal: NodeJS.Signals | undefined;
  const hold = (s: NodeJS.Signals) => (signal ??= s);
  process.on('SIGINT', hold);
  process.on('SIGTERM', hold);
  try {
    await work(() => signal !== undefined).catch((error: unknown) => {
      if (signal === undefined) throw error; // a command the signal killed too: removed below
    });
    if (signal !== undefined) {
      await labDown(runner, name);
      process.stderr.write(`vlan-gateway: lab up stopped by ${signal}; what it had built is removed\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
  } finally {
    process.off('SIGINT', hold);
    process.off('SIGTERM', hold);
  }
}

async function check(runner: CommandRunner, args: LabArgs): Promise<boolean> {
  const present = await listLabNamespaces(runner, args.name);
  if (present.length === 0) {
    throw new UsageError(`lab ${args.name} does not exist; run \`vlan-gateway lab up --name ${args.name}\` first`);
  }
  const { loaded, topology } = await labConfig(args, await checkConfigPath(args));
  // A namespace removed by hand would show as every probe blocked: said as what it is.
  // A host of the config that the lab's namespaces do not hold (a lab built from another config) failed the check
  // half-way, its probe unable to bind (EADDRNOTAVAIL): said the same way, with the namespace of each address.
  const namespaces = topology.namespaces.filter((ns) => !present.includes(ns));
  const missing = namespaces.length > 0 ? namespaces : await missingLabAddresses(runner, topology);
  if (missing.length > 0) {
    throw new FailureError(`lab ${args.name} has no ${missing.join(', ')}, which ${loaded.path} needs: it was built from another config, or they were removed; `
      + `rebuild it: vlan-gateway lab down --name ${args.name}, then vlan-gateway lab up --name ${args.name} --config ${loaded.path}`);
  }
  const result = await labCheck(runner, topology, loaded.config);
  out(formatMatrix(result));
  // What the config allows is worked out from its forwarding rules and NAT; the user's own templates are not read.
  if (loaded.config.rules.dir) {
    out(`note: what the config allows is read from its forwarding rules and port forwards, not from the templates in rules.dir (${loaded.config.rules.dir}): `
      + 'a probe that a rule of yours decides otherwise shows as a mismatch (!)');
  }
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
    // The lab ignores $VLAN_GATEWAY_CONFIG (see labConfig): its own default, said where --help shows it.
    .option('config', { type: 'string', describe: 'config file (up, demo: default examples/lab.yaml, the write-up\'s example; check: default the one up applied)' })
    .positional('action', { choices: ['demo', 'up', 'check', 'down'] as const, describe: 'demo = down + up + check' })
    .epilogue('Without --config, `up` and `demo` use the write-up\'s example (examples/lab.yaml), and `check` the config `up` applied.')
    .hide('netns'), // refused: the lab makes its own namespaces
  handler: async (raw) => {
    const args = raw as unknown as LabArgs & { action: string };
    assertLabName(args.name);
    // Without root every lab command failed on its first namespace command, in words that did not say so: `check`
    // as "agent in vgwlab-demo-c20 exited (255) before it was ready: no output", `up` with Docker's --cap-add.
    const uid = process.geteuid?.();
    if (uid !== undefined && uid !== 0) {
      throw new FailureError(`lab needs root: it makes network namespaces and runs commands in them (vlan-gateway runs as uid ${uid} here); run it as root (sudo)`);
    }
    const runner = new ExecaRunner();
    switch (args.action) {
      case 'up':
        await up(runner, args);
        // `check` finds the config in the lab's record: no --config to repeat.
        out(`\nlab ${args.name} is up. Try: vlan-gateway lab check --name ${args.name}; remove it with: vlan-gateway lab down --name ${args.name}`);
        return;
      case 'check':
        if (!(await check(runner, args))) process.exitCode = 1;
        return;
      case 'down':
        return down(runner, args);
      case 'demo': {
        const checked = await checkedLabConfig(runner, args); // an invalid config leaves the lab that stands alone
        await down(runner, args);
        const topology = await up(runner, args, checked);
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
