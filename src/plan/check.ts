/**
 * Checks on the rendered rules before the kernel sees them, so that a bad template is a config error (exit 2,
 * nothing applied) rather than a failed restore. `iptables-restore --test` accepts a jump to a chain that does
 * not exist (it may be a target extension), and the kernel refuses some targets only at commit time, so we check:
 * every jump goes to one of our chains declared in the same table, or to a standard target valid in that table
 * and hook (no DNAT in POSTROUTING, no DROP in nat, …); and our chains jump to each other without a loop. Pure.
 */
import { OUR_PREFIX, POSTROUTING_CHAIN, PREROUTING_CHAIN, STANDARD_TARGETS, USER_PREFIX } from './chains.js';
import type { DesiredChain } from './types.js';
import { inInterfaceOf, outInterfaceOf, verdictOf } from './rule-text.js';
import { sourceLineOf } from '../template/render.js';
import { ruleBody } from './hash.js';

/** One thing wrong with the rules: said as `text`; `file` is the template of rules.dir it is in, where it is in one. */
export interface PlanProblem {
  readonly text: string;
  readonly file?: string;
}

export class PlanError extends Error {
  override readonly name = 'PlanError';
  readonly problems: readonly PlanProblem[];
  /** Each problem a line of the message; a line in parentheses is a note on the problems before it. */
  constructor(problems: readonly PlanProblem[]) {
    super(problems.map((p) => p.text).join('\n'));
    this.problems = problems;
  }
}

const NAT_ONLY = new Set(['SNAT', 'DNAT', 'MASQUERADE', 'REDIRECT', 'NETMAP']);
const NOT_IN_NAT = new Set(['DROP', 'REJECT']);
const SOURCE_NAT = new Set(['SNAT', 'MASQUERADE']);
const DEST_NAT = new Set(['DNAT', 'REDIRECT']);
/** Targets the kernel takes only in the mangle or raw table (or security): refused in filter and nat at commit. */
const OTHER_TABLES = new Map([
  ...['DSCP', 'TOS', 'TTL', 'CLASSIFY', 'CHECKSUM', 'TEE'].map((t) => [t, 'mangle'] as const),
  ...['CT', 'NOTRACK', 'TRACE'].map((t) => [t, 'raw'] as const),
  ...['SECMARK', 'CONNSECMARK'].map((t) => [t, 'mangle or security'] as const),
]);

/**
 * The SET target's `--add-set`, `--del-set` or `--map-set` of one of our sets, in each spelling iptables reads: the
 * name after a space or "=" (`--add-set=VGW-NICS-0`), the option abbreviated (`--ad`, `--del-s`), the name in quotes.
 */
const OUR_SET_WRITE = new RegExp(`(?:^| )--(?:ad|del-|map-)[a-z-]*[ =](${OUR_PREFIX}\\S*)`);
/** Quoted text: a word in quotes is the word (iptables drops the quotes); text with spaces is no set's name. */
const QUOTED = /"([^"]*)"/g;
const unquoted = (line: string) => line.replace(QUOTED, (_all, text: string) => (/\s/.test(text) ? '""' : text));

/** The template a chain of rules.dir is rendered from: its file, and its text (to name the line a rule comes from). */
export interface ChainSource {
  readonly file: string;
  readonly source: string;
}

export function checkJumpTargets(chains: readonly DesiredChain[], sources: ReadonlyMap<string, ChainSource> = new Map()): void {
  // Per table, our chains by name; each rule's target read once (10,000 rules at 100 VLANs).
  const byTable = new Map<string, Map<string, DesiredChain>>();
  for (const chain of chains) (byTable.get(chain.table) ?? byTable.set(chain.table, new Map()).get(chain.table)!).set(chain.name, chain);
  const targets = new Map(chains.map((chain) => [chain, chain.rules.map((rule) => rule.target ?? verdictOf(rule.line))]));
  const ours = (chain: DesiredChain, target: string | undefined) => (target?.startsWith(OUR_PREFIX) ? byTable.get(chain.table)!.get(target) : undefined);
  const problems: PlanProblem[] = [];
  /** A problem of one rule: named by its chain and number, and by its template where it comes from one. */
  const atRule = (chain: DesiredChain, index: number, what: string) => {
    const source = sources.get(chain.name);
    problems.push({
      text: `${chain.table} ${chain.name} rule ${index + 1}${fromTemplate(source, chain.rules[index]!.line)}${what}`,
      ...(source ? { file: source.file } : {}),
    });
  };

  // The nat hooks each chain is reachable from decide which NAT targets it may use.
  const hooks = new Map<string, Set<string>>();
  const reach = (chain: DesiredChain | undefined, hook: string, seen: Set<DesiredChain>) => {
    if (!chain || seen.has(chain)) return;
    seen.add(chain);
    (hooks.get(chain.name) ?? hooks.set(chain.name, new Set()).get(chain.name)!).add(hook);
    for (const target of targets.get(chain)!) reach(ours(chain, target), hook, seen);
  };
  reach(byTable.get('nat')?.get(PREROUTING_CHAIN), 'PREROUTING', new Set());
  reach(byTable.get('nat')?.get(POSTROUTING_CHAIN), 'POSTROUTING', new Set());

  for (const chain of chains) {
    if (chain.table === 'nat' && chain.name.startsWith(USER_PREFIX)) {
      // iptables refuses `-o` in PREROUTING and `-i` in POSTROUTING ("Can't use -o with PREROUTING"), but not in a chain
      // jumped to from there (nft and legacy alike), where the kernel has no such NIC for the packet and the rule never
      // matches: `-o {{uplink.nic}}` in nat/prerouting.hbs was applied, and silently did nothing.
      const from = hooks.get(chain.name) ?? new Set();
      chain.rules.forEach((rule, index) => {
        const body = ruleBody(rule.line);
        if (from.has('PREROUTING') && outInterfaceOf(body) !== undefined) {
          atRule(chain, index, ` matches an outgoing NIC (-o) in PREROUTING, where a packet has none yet: the match cannot work there (iptables refuses -o in PREROUTING itself)`);
        }
        if (from.has('POSTROUTING') && inInterfaceOf(body) !== undefined) {
          atRule(chain, index, ` matches an incoming NIC (-i) in POSTROUTING, where a packet has none any more: the match cannot work there (iptables refuses -i in POSTROUTING itself)`);
        }
      });
    }
    targets.get(chain)!.forEach((target, index) => {
      if (target === undefined) return;
      if (target.startsWith(OUR_PREFIX)) {
        if (!ours(chain, target)) {
          atRule(chain, index, ` jumps to ${target}, which is not a chain declared in the ${chain.table} table`);
        }
        return;
      }
      if (target === 'SET' && chain.name.startsWith(USER_PREFIX)) {
        // The gateway owns its sets as it owns its chains: one written from a rule (a NIC, a subnet added to
        // VGW-SUBNET-NICS) changes its verdicts, and the next pass puts it back.
        const written = OUR_SET_WRITE.exec(unquoted(chain.rules[index]!.line))?.[1];
        if (written) atRule(chain, index, ` writes into ${written}, the gateway's own set: use a set of your own`);
      }
      if (!STANDARD_TARGETS.has(target)) {
        atRule(chain, index, ` jumps to ${target}, which is neither one of our chains nor a standard target`);
      } else if (OTHER_TABLES.has(target)) {
        atRule(chain, index, ` uses ${target}, which the kernel allows only in the ${OTHER_TABLES.get(target)!} table (the gateway writes filter and nat)`);
      } else if (chain.table === 'filter' && NAT_ONLY.has(target)) {
        atRule(chain, index, ` uses ${target}, which belongs in the nat table`);
      } else if (chain.table === 'nat' && NOT_IN_NAT.has(target)) {
        atRule(chain, index, ` uses ${target}, which the nat table does not allow (filter in the forward template instead)`);
      } else if (chain.table === 'nat') {
        const from = hooks.get(chain.name) ?? new Set();
        if (SOURCE_NAT.has(target) && from.has('PREROUTING')) atRule(chain, index, ` uses ${target} in PREROUTING; source NAT belongs in POSTROUTING`);
        if (DEST_NAT.has(target) && from.has('POSTROUTING')) atRule(chain, index, ` uses ${target} in POSTROUTING; destination NAT belongs in PREROUTING`);
      }
    });
  }

  // Loops: the kernel refuses a ruleset in which a chain can reach itself. Depth-first over our chains, the
  // current path kept as a stack (it is only read when a loop is found).
  const state = new Map<DesiredChain, 'visiting' | 'done'>();
  const path: DesiredChain[] = [];
  const visit = (chain: DesiredChain): void => {
    const seen = state.get(chain);
    if (seen === 'done') return;
    if (seen === 'visiting') {
      const cycle = [...path.slice(path.indexOf(chain)), chain].map((c) => c.name);
      const files = [...new Set(cycle.map((c) => sources.get(c)?.file).filter((f) => f !== undefined))];
      // Through several templates: the first it names is the file of it.
      problems.push({ text: `jump loop: ${cycle.join(' -> ')}${files.length > 0 ? ` (from ${files.join(', ')})` : ''}`, ...(files[0] ? { file: files[0] } : {}) });
      return;
    }
    state.set(chain, 'visiting');
    path.push(chain);
    for (const target of targets.get(chain)!) {
      const next = ours(chain, target);
      if (next) visit(next);
    }
    path.pop();
    state.set(chain, 'done');
  };
  for (const chain of chains) visit(chain);

  if (problems.length > 0) throw new PlanError(problems);
}

/**
 * " (from FILE line N)" after a rule of rules.dir: its template, and the line there where one line of it is the rule as
 * written (a rule a loop or a value made is named by its number in the chain alone); '' for a chain of the gateway's.
 */
export function fromTemplate(template: ChainSource | undefined, rule: string): string {
  if (!template) return '';
  const line = sourceLineOf(template.source, ruleBody(rule));
  return ` (from ${template.file}${line === undefined ? '' : ` line ${line}`})`;
}
