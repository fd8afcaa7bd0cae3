/**
 * The user's own rules (the VGW-USER- chains of rules.dir), parsed by iptables itself before anything is applied.
 * Our checks (render.ts, check.ts) know the syntax the planner owns; only iptables knows every match, target and
 * option it has: `-m nosuchmatch` or a misspelt option passes them and fails the restore. A restore with
 * `--test` parses the rules and commits nothing, so `validate` and a reload can refuse such a template as a config
 * error, instead of a later apply failing (and a restarted gateway never becoming ready). Only the user's chains
 * are tested: ours match on sets that may not exist yet, which iptables looks up while it parses. A rule of theirs
 * may match one of those too (README): that one is left to the commit, after the apply has made the set.
 */
import { asRun, CommandError, type CommandRunner } from '../exec/runner.js';
import { TABLES, type Backend, type Facts, type TableName } from '../observe/facts.js';
import { fromTemplate, PlanError, type ChainSource, type PlanProblem } from '../plan/check.js';
import type { Desired, Plan } from '../plan/types.js';
import { USER_HOOKS } from '../plan/chains.js';
import type { Config } from '../config/schema.js';
import { planDesired, type Templates } from '../plan/desired.js';
import { detachedFacts, syntheticFacts } from '../plan/synthetic.js';
import { TemplateError } from '../template/render.js';
import { restoreCommand } from '../observe/read.js';
import { restoreFailedLine } from './parse-restore-failure.js';
import { USER_PREFIX } from '../plan/chains.js';


/** Where each payload line came from: its table, chain and rule number, or nothing (a header, a declaration). */
type Origin = { table: string; chain: string; rule: number; body: string } | undefined;

function userRulesPayload(desired: Desired): { payload: string; origins: Origin[] } | undefined {
  const lines: string[] = [];
  const origins: Origin[] = [];
  const push = (line: string, origin?: Origin) => {
    lines.push(line);
    origins.push(origin);
  };
  for (const table of ['filter', 'nat'] as const) {
    const chains = desired.chains.filter((c) => c.table === table && c.name.startsWith(USER_PREFIX));
    if (chains.length === 0) continue;
    push(`*${table}`);
    for (const c of chains) push(`:${c.name} - [0:0]`);
    for (const c of chains) c.rules.forEach((r, i) => push(`-A ${c.name} ${r.line}`, { table, chain: c.name, rule: i + 1, body: r.line }));
    push('COMMIT');
  }
  return lines.length === 0 ? undefined : { payload: `${lines.join('\n')}\n`, origins };
}

/**
 * iptables-legacy could not take the xtables lock (another process held it past --wait, or its lock file cannot be
 * opened: a read-only /run): it read no rule, and said nothing about them.
 */
const XTABLES_LOCK_BUSY = /holding the xtables lock|can't open lock file/;

/**
 * The most refused rules one check names. iptables-restore stops at the first line it refuses and names that one
 * alone: the rest are found by asking again without it, one run per refused rule (on the failure path only: a
 * payload it accepts is one run), so a user with several bad rules fixes them in one edit, not one per run.
 */
export const REFUSALS_SAID = 10;

/**
 * What iptables says of the user's rules, as a PlanError naming each rule it refuses (up to REFUSALS_SAID) by its
 * chain, number and template, with iptables' reason; undefined when it accepts them, or when it cannot be asked here
 * (no iptables, or not root: validate on a laptop), since the apply asks it again. A restore that could not take the
 * xtables lock judged no rule: that is thrown as the runtime failure it is (a CommandError with iptables' message),
 * not a refusal of the config (after a first refusal, the refusals found so far are said).
 */
async function userRulesRefusal(runner: CommandRunner, backend: Backend, desired: Desired,
  templateOf: (chain: string) => ChainSource | undefined, gatewaySets: () => ReadonlySet<string>): Promise<PlanError | undefined> {
  const test = userRulesPayload(desired);
  if (!test) return undefined;
  const argv = [...restoreCommand(backend), '--test'];
  const lines = test.payload.split('\n');
  const origins = [...test.origins];
  const refused: PlanProblem[] = [];
  for (;;) {
    let result;
    try {
      result = await runner.run(argv, { input: lines.join('\n'), allowFailure: true });
    } catch (error) {
      if (refused.length > 0) break;
      if (error instanceof CommandError && error.notFound) return undefined; // not installed here
      throw error;
    }
    if (result.exitCode === 0) break;
    if (/Permission denied|you must be root/.test(result.stderr) || XTABLES_LOCK_BUSY.test(result.stderr)) {
      if (refused.length > 0) break;
      if (XTABLES_LOCK_BUSY.test(result.stderr)) throw new CommandError(asRun(runner, argv), result.exitCode, result.stderr);
      return undefined;
    }
    const line = restoreFailedLine(result.stderr);
    const origin = line === undefined ? undefined : origins[line - 1];
    const reason = result.stderr.split('\n').map((l) => l.replace(/^iptables[-\w]* v[\d.]+ \([^)]*\): /, '').trim())
      .find((l) => l !== '' && !/^Error occurred at line|^Try `/.test(l)) ?? `exit ${result.exitCode}`;
    const missingSet = /^Set (\S+) doesn't exist/.exec(reason)?.[1];
    if (origin && missingSet !== undefined && gatewaySets().has(missingSet)) {
      // One of the gateway's sets that it makes before it writes the tables (a fresh namespace: a container's start, after
      // `down`), which the README lets a rule match: not a fault of the rule. Its commit is its check. Every rule
      // matching that set is left out at once: one more --test per set, not per rule (a loop over 100 VLANs).
      const matches = (o: Origin) => o !== undefined && o.body.split(' ').some((word, i, words) => word === missingSet && words[i - 1] === '--match-set');
      for (let i = lines.length - 1; i >= 0; i--) {
        if (i === line! - 1 || matches(origins[i])) {
          lines.splice(i, 1);
          origins.splice(i, 1);
        }
      }
      continue;
    }
    if (!origin) {
      // Not a rule of theirs (a declaration, COMMIT): nothing to leave out and ask again about.
      refused.push({ text: `iptables refuses the rules of rules.dir: ${reason}` });
      break;
    }
    const template = templateOf(origin.chain);
    refused.push({ text: `${origin.table} ${origin.chain} rule ${origin.rule}${fromTemplate(template, origin.body)}: iptables refuses it: ${reason}`, ...(template ? { file: template.file } : {}) });
    if (refused.length === REFUSALS_SAID) {
      refused.push({ text: `(iptables names one refused rule at a time: after ${REFUSALS_SAID}, the rules after the last were not checked)` });
      break;
    }
    lines.splice(line! - 1, 1);
    origins.splice(line! - 1, 1);
  }
  return refused.length === 0 ? undefined : new PlanError(refused);
}

const setNames = (desired: Desired): ReadonlySet<string> => new Set(desired.sets.map((set) => set.name));

/** Does the plan write a rule into one of the user's chains (so iptables has not parsed it yet)? */
const writesUserRules = (plan: Plan): boolean => plan.steps.some((s) => s.kind === 'table'
  && s.chains.some((c) => c.chain.startsWith(USER_PREFIX) && c.added.length > 0));

/**
 * For reconcileOnce's beforeWrite: iptables parses the user's rules the plan is about to write, and a refusal is
 * thrown before the first write (an invalid config: nothing applied), instead of a table written and rolled back.
 */
export const userRulesGuard = (runner: CommandRunner, templates: Templates, options: { readOnly?: boolean } = {}) => async (facts: Facts, plan: Plan): Promise<void> => {
  if (!writesUserRules(plan)) return;
  const templateOf = userTemplateOf(templates);
  // iptables-legacy-restore --test makes a table that is not there yet as it reads it (empty, hooked in: its
  // module's doing). `plan` changes nothing: such a table's rules are parsed by iptables-nft, whose --test makes
  // nothing and whose parser (libxtables) is the same. A table that exists declares its built-in chains.
  const absent = options.readOnly && facts.backend === 'legacy' ? TABLES.filter((table) => facts.tables[table].chains.size === 0) : [];
  const only = (keep: (table: string) => boolean): Desired => ({ ...plan.desired, chains: plan.desired.chains.filter((c) => keep(c.table)) });
  const sets = () => setNames(plan.desired);
  const refusals = absent.length === 0 ? [await userRulesRefusal(runner, facts.backend, plan.desired, templateOf, sets)] : [
    await userRulesRefusal(runner, 'legacy', only((table) => !absent.includes(table as TableName)), templateOf, sets),
    await userRulesRefusal(runner, 'nft', only((table) => absent.includes(table as TableName)), templateOf, sets),
  ];
  const said = refusals.filter((r): r is PlanError => r !== undefined);
  if (said.length > 0) throw new PlanError(said.flatMap((r) => r.problems));
};

/**
 * `validate` and every reload: the templates rendered as the gateway will meet them, with every NIC attached and
 * with none yet (a template's `{{uplink.nic}}` has no value then: a rule that only works with it must sit in
 * `{{#if uplink.nic}}`), each checked by the planner and, for the user's rules, by iptables. Returns the desired
 * state with every NIC attached; throws what fails.
 */
export async function checkTemplates(runner: CommandRunner, backend: Backend, config: Config, templates: Templates): Promise<Desired> {
  const attached = syntheticFacts(config);
  const desired = planDesired(config, attached, templates);
  // validate renders as where ipset is missing (no sets); the sets the gateway makes where it is, planned only when a
  // rule matches one that is not there, and once.
  const withSets = (facts: Facts) => {
    let names: ReadonlySet<string> | undefined;
    return () => (names ??= setNames(planDesired(config, { ...facts, sets: new Map() }, templates)));
  };
  const refusal = await refusalUnlessLocked(runner, backend, desired, userTemplateOf(templates), withSets(attached));
  if (refusal instanceof PlanError) throw refusal;
  if (templates.user.length === 0) return desired;
  let detached: Desired;
  try {
    detached = planDesired(config, detachedFacts(), templates);
  } catch (error) {
    throw withContext(error);
  }
  // The lock held past one wait: not a second wait for it.
  const alone = refusal === LOCKED ? undefined
    : await refusalUnlessLocked(runner, backend, detached, userTemplateOf(templates), withSets(detachedFacts()));
  if (alone instanceof PlanError) throw withContext(alone);
  return desired;
}

/**
 * What rendering the templates finds, as checkTemplates renders them (every NIC attached, then none, said with the
 * render it arose in), without the planner's checks of the rules or iptables': for templates whose rules.dir has
 * problems of its own, so that those are said with their render's (cli/context.ts). A PlanError is not returned (the
 * run after rules.dir is fixed says it).
 */
export function templateRenderError(config: Config, templates: Templates): TemplateError | undefined {
  const render = (facts: Parameters<typeof planDesired>[1]) => {
    try {
      planDesired(config, facts, templates);
      return undefined;
    } catch (error) {
      if (error instanceof TemplateError) return error;
      if (error instanceof PlanError) return undefined;
      throw error;
    }
  };
  const attached = render(syntheticFacts(config));
  if (attached || templates.user.length === 0) return attached;
  const detached = render(detachedFacts());
  return detached && withContext(detached) as TemplateError;
}

const LOCKED = Symbol('the xtables lock was held');

/**
 * userRulesRefusal, with no verdict where the xtables lock stayed held (LOCKED): a reload (or the render check after
 * a start) then goes on as where iptables cannot be asked, and the pass that writes the rules has the kernel judge
 * them (a rule it refuses sends the supervisor back to the config that last applied). Refusing the config for it
 * left a valid edit unapplied until the file changed again.
 */
async function refusalUnlessLocked(...args: Parameters<typeof userRulesRefusal>): Promise<PlanError | typeof LOCKED | undefined> {
  try {
    return await userRulesRefusal(...args);
  } catch (error) {
    if (error instanceof CommandError && XTABLES_LOCK_BUSY.test(error.stderr)) return LOCKED;
    throw error;
  }
}

const DETACHED = 'rendered as at a start before Docker attaches the NICs: no VLAN has its NIC yet, and uplink.nic has no value; '
  + 'put a rule that needs it inside {{#if uplink.nic}}';

/** The same error, saying in which render it arose. */
function withContext(error: unknown): unknown {
  if (error instanceof PlanError) return new PlanError([...error.problems, { text: `(${DETACHED})` }]);
  if (error instanceof TemplateError) {
    // One problem says the render in its own sentence; several, once after them (as a PlanError does).
    const [first, ...others] = error.problems;
    return others.length === 0 && error.unsaid === 0 ? new TemplateError(error.file, `${error.detail} (${DETACHED})`, error.line)
      : new TemplateError(first!.file, first!.detail, first!.line, others, error.unsaid, `(${DETACHED})`);
  }
  return error;
}

/** The template a VGW-USER- chain is rendered from. */
export const userTemplateOf = (templates: Templates) => (chain: string): Templates['user'][number]['template'] | undefined =>
  templates.user.find((u) => USER_HOOKS[u.hook].chain === chain)?.template;

