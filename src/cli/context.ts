/** What every command needs: the config, the templates, and a runner (inside `--netns` when given). */
import { loadConfig, resolveConfigPath, type LoadedConfig } from '../config/load.js';
import { ExecaRunner } from '../exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../exec/runner.js';
import { useDesiredStore, type Templates } from '../plan/desired.js';
import { loadTemplates } from '../template/load.js';
import { FileDesiredStore, renderCacheDir } from './desired-store.js';

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

/**
 * Runs a one-shot command's planning with the render cache (see desired-store.ts), written once the command's
 * work is done; `VLAN_GATEWAY_RENDER_CACHE=off` plans without it.
 */
export async function withRenderCache<T>(work: () => Promise<T>): Promise<T> {
  const dir = renderCacheDir();
  const store = dir ? new FileDesiredStore(dir) : undefined;
  useDesiredStore(store);
  try {
    const result = await work();
    store?.flush();
    return result;
  } finally {
    useDesiredStore(undefined);
  }
}
