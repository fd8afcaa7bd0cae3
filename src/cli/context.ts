/** What every command needs: the config, the templates, and a runner (inside `--netns` when given). */
import { loadConfig, resolveConfigPath, type LoadedConfig } from '../config/load.js';
import { ExecaRunner } from '../exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../exec/runner.js';
import type { Templates } from '../plan/desired.js';
import { loadTemplates } from '../template/load.js';

export interface GlobalArgs {
  config?: string;
  netns?: string;
}

export function makeRunner(netns?: string): CommandRunner {
  const runner = new ExecaRunner();
  return netns ? inNamespace(runner, netns) : runner;
}

export async function loadAll(args: GlobalArgs): Promise<{ loaded: LoadedConfig; templates: Templates }> {
  const loaded = await loadConfig(resolveConfigPath(args.config));
  const templates = await loadTemplates(loaded.config.rules.dir);
  return { loaded, templates };
}

export const out = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
