/** What every command needs: the config, the templates, and a runner (inside `--netns` when given). */
import { templateRenderError } from '../apply/user-rules-check.js';
import { configError, loadConfig, resolveConfigPath, withConfigSource, type LoadedConfig } from '../config/load.js';
import { ConfigError, type Problem } from '../config/problems.js';
import type { Config } from '../config/schema.js';
import { ExecaRunner } from '../exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../exec/runner.js';
import { readFactsStaged, type StagedFacts } from '../observe/read.js';
import { useDesiredStore, type Templates } from '../plan/desired.js';
import { loadTemplates, loadTemplatesAndProblems } from '../template/load.js';
import { TemplateError, templateProblemText } from '../template/render.js';
import { describeError } from './errors.js';
import { PlanCache, planCacheDir } from './plan-cache.js';

export interface GlobalArgs {
  config?: string;
  netns?: string;
}

export function makeRunner(netns?: string): CommandRunner {
  const runner = new ExecaRunner();
  // Not `netns ? …`: an empty name must fail in ip (main.ts refuses it first), never mean the caller's own network.
  return netns !== undefined ? inNamespace(runner, netns) : runner;
}

export async function loadAll(args: GlobalArgs, cache?: PlanCache): Promise<{ loaded: LoadedConfig; templates: Templates }> {
  const loaded = await loadConfig(resolveConfigPath(args.config), cache?.config).catch((error: unknown) => {
    throw withConfigSource(error, args.config);
  });
  return { loaded, templates: await templatesOf(loaded) };
}

/**
 * The built-in templates and those of the config's rules.dir, whose problems carry the line of the key. A file of
 * rules.dir that is no known template, or cannot be read, is said with what rendering the others finds (a syntax
 * error, a missing value, a line refused), each a problem of rules.dir: a file named alone hid the others' errors
 * until the next run, and a user fixed one problem a run.
 */
export async function templatesOf(loaded: LoadedConfig): Promise<Templates> {
  let found: Awaited<ReturnType<typeof loadTemplatesAndProblems>>;
  try {
    found = await loadTemplatesAndProblems(loaded.config.rules.dir, loaded.path);
  } catch (error) {
    throw error instanceof ConfigError ? configError(loaded.path, loaded.text, error.problems) : error;
  }
  if (found.problems.length === 0) return found.templates;
  // The rest of what the render says (how many lines went unsaid, in which render) are its last lines, as notes.
  const rendered = templateRenderError(loaded.config, found.templates);
  const error = configError(loaded.path, loaded.text, [...found.problems,
    ...(rendered?.problems ?? []).map((p): Problem => ({ path: ['rules', 'dir'], message: templateProblemText(p), file: p.file }))]);
  throw rendered && rendered.notes.length > 0 ? new ConfigError(error.source, error.problems, [...error.lines, ...rendered.notes]) : error;
}

/** The config and templates a command works from: for `down` (and `plan --down`), whatever config there is. */
export async function loadFor(mode: 'up' | 'down', args: GlobalArgs, cache: PlanCache | undefined): Promise<{ config: Config; templates: Templates }> {
  if (mode === 'down') return loadForDown(args, cache);
  const { loaded, templates } = await loadAll(args, cache);
  return { config: loaded.config, templates };
}

/**
 * `load` (the config file: YAML, validation, templates) while the namespace is read. The load holds the main thread,
 * and the reads are processes of their own, which the command helper starts for a fraction of a millisecond each: at
 * 10,000 rules the two took 285 ms one after the other and 186 side by side (BENCHMARKS.md, session ax). The reads
 * change nothing, so a load that fails leaves them to end unread. The caller keeps anything else from writing to the
 * namespace from before the reads start until its pass has written (apply's write lock).
 */
export async function readWhileLoading<T>(runner: CommandRunner, load: () => Promise<T>): Promise<{ loaded: T; reading: StagedFacts }> {
  const reading = readFactsStaged(runner);
  return { loaded: await load(), reading };
}

/**
 * What `down` needs of the config is little: what it removes is found by our own marks (VGW- chains, jumps and
 * sets, addresses with our metric), and the config only names the VLANs in the output. So a broken config does
 * not stand between the user and a clean namespace: it is reported, and down goes on without it.
 */
async function loadForDown(args: GlobalArgs, cache: PlanCache | undefined): Promise<{ config: Config; templates: Templates }> {
  try {
    const { loaded, templates } = await loadAll(args, cache);
    return { config: loaded.config, templates };
  } catch (error) {
    if (!(error instanceof ConfigError || error instanceof TemplateError)) throw error;
    process.stderr.write(`vlan-gateway: ${describeError(error)}\n`
      + 'vlan-gateway: down goes on without it: removing what the gateway added by its own marks (VGW- chains, jumps and sets, its addresses)\n');
    return { config: NO_VLANS, templates: await loadTemplates() };
  }
}

/** A config with nothing in it, for down alone (the schema wants one VLAN; down needs none). */
const NO_VLANS: Config = {
  uplink: { nat: 'masquerade' }, vlans: [], forwarding: { default: 'accept', rules: [] }, portForwards: [], rules: {}, reconcile: {}, http: { allowFrom: [] },
};

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
    // Said, as the supervisor says it: a cache set where others can change it is a mistake to fix, not a slow start.
    const distrusted = cache?.distrusted();
    if (distrusted !== undefined) {
      process.stderr.write(`vlan-gateway: warning: the plan cache ${cache!.dir} is not used: ${distrusted} (only a directory that root owns and nobody else can write to, reached through none that others can change, is used)\n`);
    }
    return result;
  } finally {
    useDesiredStore(undefined);
  }
}
