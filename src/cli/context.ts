/** What every command needs: the config, the templates, and a runner (inside `--netns` when given). */
import { loadConfig, resolveConfigPath, type LoadedConfig } from '../config/load.js';
import { ExecaRunner } from '../exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../exec/runner.js';
import { useDesiredStore, type Templates } from '../plan/desired.js';
import { loadTemplates } from '../template/load.js';
import { PlanCache, planCacheDir } from './plan-cache.js';

export interface GlobalArgs {
  config?: string;
  netns?: string;
}

export function makeRunner(netns?: string): CommandRunner {
  const runner = new ExecaRunner();
  return netns ? inNamespace(runner, netns) : runner;
}

export async function loadAll(args: GlobalArgs, cache?: PlanCache): Promise<{ loaded: LoadedConfig; templates: Templates }> {
  const loaded = await loadConfig(resolveConfigPath(args.config), cache?.config);
  const templates = await loadTemplates(loaded.config.rules.dir, loaded.path);
  return { loaded, templates };
}

export const out = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);

/**
 * Runs a one-shot command with the plan cache (see plan-cache.ts), written once the command's work is done;
 * `VLAN_GATEWAY_PLAN_CACHE=off` runs it without.
 */
export async function withPlanCache<T>(work: (cache: PlanCache | undefined) => Promise<T>): Promise<T> {
  const dir = planCacheDir();
  const cache = dir ? new PlanCache(dir) : undefined;
  useDesiredStore(cache?.desired);
  try {
    const result = await work(cache);
    cache?.flush();
    return result;
  } finally {
    useDesiredStore(undefined);
  }
}
