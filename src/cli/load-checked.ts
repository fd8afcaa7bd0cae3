/** The config a supervisor runs: loaded, schema-checked, and (once it can be) its user rules checked by iptables. */
import { checkTemplates } from '../apply/user-rules-check.js';
import { loadConfig } from '../config/load.js';
import type { CommandRunner } from '../exec/runner.js';
import type { Backend } from '../observe/facts.js';
import type { ConfigState } from '../reconcile/supervisor.js';
import { templatesOf } from './context.js';
import type { PlanCache } from './plan-cache.js';

export interface RulesCheck {
  readonly runner: CommandRunner;
  readonly backend: () => Backend;
}

/**
 * Loads a config and its templates (schema-checked). With `check`, renders them as if every NIC were present and
 * has iptables parse the user's rules (apply/user-rules-check.ts) in the gateway's namespace.
 */
export async function loadChecked(path: string, listen: string | undefined, check?: RulesCheck, cache?: PlanCache, fileOnly = false): Promise<ConfigState> {
  const loaded = await loadConfig(path, cache?.config, { listen, fileOnly });
  const templates = await templatesOf(loaded);
  const state = { path, text: loaded.text, config: loaded.config, templates };
  if (check) await checkRules(state, check);
  return state;
}

/** Every template rendered with every NIC present and with none, the user's rules parsed by iptables: throws what fails. */
export async function checkRules(state: ConfigState, check: RulesCheck): Promise<void> {
  await checkTemplates(check.runner, check.backend(), state.config, state.templates);
}
