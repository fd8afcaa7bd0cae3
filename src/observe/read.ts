/**
 * Reading a namespace's state: links and addresses, the default route, the sysctls we manage, and the
 * netfilter tables of the backend our rules belong to. Reads only; all parsing is in the pure parse-* modules.
 */
import { halfInstalled, privilegeHint } from '../apply/hints.js';
import { asRun, CommandError, shownCommand, type CommandRunner } from '../exec/runner.js';
import type { Backend, Facts, KnownSets, KnownTables, Link, OtherForward, Route, RoutedPrefix, SavedSet, SavedTable } from './facts.js';
import { parseDefaultRoute, parseIpAddr, parseRoutedPrefixes } from './parse-ip.js';
import { parseIpsetHeaders, parseIpsetSave } from './parse-ipset.js';
import { OUR_PREFIX } from '../plan/chains.js';
import { verdictOf } from '../plan/rule-text.js';
import { forwardDropsTheRest, hasAnyRules, hasOurChains, SaveParser, tableOf } from './parse-save.js';
import { IPV6_DEFAULT_FORCE_FORWARDING, IPV6_FORCE_FORWARDING, IPV6_FORWARDING, ipv6ForwardingOn } from '../plan/warnings.js';

const MANAGED_SYSCTLS = ['net.ipv4.ip_forward'] as const;
/**
 * Read, never written: what the plan warns about (see plan/warnings.ts). Absent where the kernel has no IPv6 (and the
 * force_forwarding ones before Linux 6.17).
 */
const WATCHED_SYSCTLS = [IPV6_FORWARDING, IPV6_FORCE_FORWARDING, IPV6_DEFAULT_FORCE_FORWARDING] as const;

export class BackendError extends Error {
  override readonly name = 'BackendError';
}

export const saveCommand = (backend: Backend) => [`iptables-${backend}-save`, '-c'];
/**
 * How long a restore waits for the xtables lock (legacy; nft has none). A bare `--wait` waits for ever: a stuck
 * holder would hang the pass, or `vlan-gateway apply`, without a word. After this long the restore fails with
 * iptables' own message ("Another app is currently holding the xtables lock"), the round is rolled back, and a
 * supervisor retries with backoff. Holders keep the lock for milliseconds (kube-proxy waits 5 s).
 */
export const XTABLES_WAIT_SECONDS = 10;
export const restoreCommand = (backend: Backend, counters = false) =>
  [`iptables-${backend}-restore`, '--noflush', `--wait=${XTABLES_WAIT_SECONDS}`, ...(counters ? ['--counters'] : [])];

interface InterfaceFacts {
  readonly links: Link[];
  readonly defaultRoute?: Route;
  readonly routed: RoutedPrefix[];
}

/** Links, addresses and the main table's routes in one `ip -batch` (one process; each prints one JSON line). */
async function readInterfaces(runner: CommandRunner): Promise<InterfaceFacts> {
  const { stdout } = await runner.run(['ip', '-json', '-batch', '-'], { input: 'address show\nroute show\n' });
  const [addresses = '[]', routes = '[]'] = stdout.split('\n').filter((l) => l.trim() !== '');
  const defaultRoute = parseDefaultRoute(routes);
  return { links: parseIpAddr(addresses), ...(defaultRoute ? { defaultRoute } : {}), routed: parseRoutedPrefixes(routes) };
}

const procPath = (key: string) => `/proc/sys/${key.replaceAll('.', '/')}`;
const LEGACY_TABLES = '/proc/net/ip_tables_names';

/**
 * One `cat` of `paths`, files of one line each (sysctls), then `rest`, a file of any number of lines: each file's line
 * (trimmed), undefined where it is missing, and rest's lines likewise. cat prints the files in order and names each
 * missing one on stderr, exiting 1; a path is looked for alone in what it says (coreutils writes `cat: PATH: …`,
 * busybox's, the image's, `cat: can't open 'PATH': …`), so no path may be part of another.
 */
async function catFiles(runner: CommandRunner, paths: readonly string[], rest?: string) {
  const result = await runner.run(['cat', ...paths, ...(rest === undefined ? [] : [rest])], { allowFailure: true });
  const lines = result.stdout.split('\n');
  const missing = (path: string) => result.exitCode !== 0 && result.stderr.includes(path);
  let at = 0;
  const values = paths.map((path) => (missing(path) ? undefined : (lines[at++] ?? '').trim()));
  const restLines = rest === undefined || missing(rest) ? undefined : lines.slice(at).map((l) => l.trim()).filter(Boolean);
  return { result, values, restLines };
}

/**
 * The sysctls we manage or watch, and the list of legacy iptables tables, in one `cat` (procfs shows the reading
 * process's namespace). A watched sysctl is missing without IPv6, the legacy list where the legacy module is absent
 * (it is last, as its line count varies); a managed one missing (or empty) is an error.
 */
async function readProc(runner: CommandRunner): Promise<{ sysctls: Record<string, string>; legacyTables: string[] | undefined }> {
  const keys = [...MANAGED_SYSCTLS, ...WATCHED_SYSCTLS];
  const { result, values, restLines } = await catFiles(runner, keys.map(procPath), LEGACY_TABLES);
  const sysctls: Record<string, string> = {};
  keys.forEach((key, i) => {
    if (values[i] !== undefined) sysctls[key] = values[i];
  });
  if (MANAGED_SYSCTLS.some((key) => !sysctls[key])) throw new CommandError(asRun(runner, ['cat', ...MANAGED_SYSCTLS.map(procPath)]), result.exitCode, result.stderr);
  return { sysctls, legacyTables: restLines };
}

/**
 * The NICs (loopback aside) whose own force_forwarding is 1, in link order: one `cat` of theirs, once the links are
 * known, and only where the kernel has the setting (all.force_forwarding is there: Linux 6.17+) and neither
 * all.forwarding nor all.force_forwarding is 1 (everything is forwarded then, and warned of as such). A NIC gone since
 * the links were read, or without IPv6 (an MTU below 1280), has no such file: cat names it and goes on.
 */
export async function readForceForwardingNics(runner: CommandRunner, links: readonly Link[], sysctls: Readonly<Record<string, string>>): Promise<string[]> {
  if (sysctls[IPV6_FORCE_FORWARDING] === undefined || ipv6ForwardingOn(sysctls) !== undefined) return [];
  const nics = links.filter((l) => !l.loopback).map((l) => l.name);
  if (nics.length === 0) return [];
  // Not procPath: the directory is the NIC's own name, dots included (eth0.10). No NIC's path is part of another's
  // (the name is followed by /force_forwarding in each).
  const { values } = await catFiles(runner, nics.map((nic) => `/proc/sys/net/ipv6/conf/${nic}/force_forwarding`));
  return nics.filter((_nic, i) => values[i] === '1');
}

const LEGACY_IP6_TABLES = '/proc/net/ip6_tables_names';

/**
 * The ip6tables rule set whose FORWARD chain drops what it does not accept (see Facts.ipv6ForwardDroppedBy): nft,
 * else legacy, which is read only where the kernel has its filter table (a read would make it, and hook it into
 * every IPv6 packet's path). Reads only, and only while IPv6 forwarding is on; what cannot be read (ip6tables not
 * installed, not permitted) counts as no drop, so the warning about IPv6 forwarding stays.
 */
export async function readIpv6ForwardDrop(runner: CommandRunner): Promise<string | undefined> {
  const [nft, legacyTables] = await Promise.all([
    ip6ForwardDrops(runner, 'nft'),
    runner.run(['cat', LEGACY_IP6_TABLES], { allowFailure: true }).then((r) => (r.exitCode === 0 ? r.stdout.split('\n').map((l) => l.trim()) : [])),
  ]);
  if (nft) return 'ip6tables-nft';
  if (legacyTables.includes('filter') && await ip6ForwardDrops(runner, 'legacy')) return 'ip6tables-legacy';
  return undefined;
}

async function ip6ForwardDrops(runner: CommandRunner, backend: Backend): Promise<boolean> {
  try {
    const result = await runner.run([`ip6tables-${backend}-save`, '-t', 'filter'], { allowFailure: true });
    return result.exitCode === 0 && forwardDropsTheRest(new SaveParser().push(result.stdout).end().get('filter'));
  } catch (error) {
    if (error instanceof CommandError) return false;
    throw error;
  }
}

/** `ipset save` as text, or undefined when the ipset tool is not installed. */
export async function readSetsText(runner: CommandRunner): Promise<string | undefined> {
  try {
    return (await runner.run(['ipset', 'save'])).stdout;
  } catch (error) {
    if (error instanceof CommandError && error.notFound) return undefined;
    throw error;
  }
}

/**
 * Our ipsets, or undefined when the ipset tool is not installed. Without `known`, one `ipset save`. With it (a
 * supervisor's later passes), one `ipset list -t`: each set whose header shows as many members as the supervisor
 * left in it is taken to hold them (the stats collector, reading every member for its counters, checks the
 * members themselves); if any set of ours does not match, one `ipset save` after all. At 100 VLANs that skips
 * reading and parsing 10,000 members a pass.
 */
async function readSets(runner: CommandRunner, known?: KnownSets): Promise<Map<string, SavedSet> | undefined> {
  if (known === undefined) {
    const text = await readSetsText(runner);
    return text === undefined ? undefined : parseIpsetSave(text);
  }
  let headers;
  try {
    headers = parseIpsetHeaders((await runner.run(['ipset', 'list', '-t'])).stdout);
  } catch (error) {
    if (error instanceof CommandError && error.notFound) return undefined;
    throw error;
  }
  const sets = new Map<string, SavedSet>();
  for (const [name, header] of headers) {
    const members = known.get(name);
    if (!members || members.size !== header.entries) return readSets(runner);
    const { entries: _entries, ...saved } = header;
    sets.set(name, { ...saved, members });
  }
  return sets;
}

/** The tables the gateway writes: a rule iptables cannot show elsewhere (mangle, raw) is none of its business. */
const OUR_TABLES: readonly string[] = ['filter', 'nat'];

const unreadable = (runner: CommandRunner, tool: string, tables: readonly string[], why: string) => new BackendError(
  `${tool} cannot read the ${tables.join(' and ')} table (${why}). The gateway cannot tell what is in it, so it changes `
  + `nothing; look with \`${shownCommand(runner.prefix, `nft list table ip ${tables[0]}`)}\`, and remove the rules iptables cannot show (written by nft itself, or by a newer iptables)`);

const linesOf = (stderr: string) => stderr.trim().split('\n').map((l) => l.trim()).filter(Boolean).join('; ');

/** One backend's tables, or undefined when that backend is not installed or not usable here. */
async function readBackend(runner: CommandRunner, backend: Backend, legacyTables?: string[]): Promise<Map<string, SavedTable> | undefined> {
  if (backend === 'legacy') {
    // Reading a legacy table instantiates it in the namespace (and hooks it into every packet's path), so
    // the list of legacy tables decides: none means nothing lives there, and nothing is read or created.
    if (legacyTables === undefined) return undefined;
    if (legacyTables.length === 0) return new Map();
  }
  try {
    // Taken whole once it has ended, not parsed as it comes: output taken as it comes needs a fork of node itself,
    // which holds the event loop 10-35 ms and slows the reads beside it; the command helper forks it from a small
    // shell (BENCHMARKS.md, session aw, "The save read whole"). The parse then waited for is about 20 ms at 10,000
    // rules.
    const parser = new SaveParser();
    const result = await runner.run(saveCommand(backend), { allowFailure: true });
    const tool = saveCommand(backend)[0]!;
    if (result.exitCode === 0) {
      parser.push(result.stdout);
      const tables = parser.end();
      // A table of ours left out is not an empty one: planning from it would add our chains and jumps again at
      // every apply, and down would not see them.
      const ours = parser.incompatible.filter((t) => OUR_TABLES.includes(t));
      if (ours.length > 0) throw unreadable(runner, tool, ours, 'iptables-nft-save says it is incompatible');
      return tables;
    }
    // Not permitted is not "not installed": say so (with the flag that fixes it) instead of trying the other.
    if (privilegeHint(result.stderr)) throw new CommandError(asRun(runner, saveCommand(backend)), result.exitCode, result.stderr);
    // A rule it cannot parse somewhere: not "not installed" either. Our two tables are read one by one then, and
    // only a rule in them stops the gateway (rare: the common read stays one process).
    if (/Parsing nftables rule failed/.test(result.stderr)) return await readOurTables(runner, backend);
    return undefined;
  } catch (error) {
    if (!(error instanceof CommandError && error.notFound)) throw error;
    // Its save not found and its restore there: not "not installed", but half of it (both are links to one
    // xtables-*-multi). Taken as absent, the other backend was chosen and written to, beside rules this one's save
    // would have shown (Docker's, the gateway's own).
    if (await installed(runner, restoreCommand(backend)[0]!)) throw new BackendError(halfInstalled(backend, 'save'));
    return undefined;
  }
}

/** Our tables one at a time (`-t filter`, `-t nat`): what a save of every table failed on may be elsewhere. */
async function readOurTables(runner: CommandRunner, backend: Backend): Promise<Map<string, SavedTable>> {
  const tool = saveCommand(backend)[0]!;
  const reads = await Promise.all(OUR_TABLES.map(async (table) => {
    const parser = new SaveParser();
    const result = await runner.run([...saveCommand(backend), '-t', table], { allowFailure: true });
    parser.push(result.stdout);
    const tables = parser.end();
    if (result.exitCode !== 0) throw unreadable(runner, tool, [table], linesOf(result.stderr));
    if (parser.incompatible.includes(table)) throw unreadable(runner, tool, [table], 'iptables-nft-save says it is incompatible');
    return tables;
  }));
  return new Map(reads.flatMap((tables) => [...tables]));
}

/**
 * iptables-nft and iptables-legacy keep separate rule sets, and the kernel runs both. Ours go where the namespace's
 * rules already live: where our chains are; else where Docker's DNS chains are; else the one backend holding any
 * rule, chain of its own or policy other than ACCEPT; else nft. Our chains in both is a state we refuse to guess
 * about. The other backend's FORWARD is reported when it filters anything (see Facts.otherForward).
 */
export async function readTables(
  runner: CommandRunner,
  legacyTables: Promise<string[] | undefined>,
  preferred?: Backend,
): Promise<{ backend: Backend; tables: Map<string, SavedTable>; why?: string; otherForward?: OtherForward; unreadLegacy?: string[] }> {
  if (preferred) {
    // nft needs no list of tables: its read starts at once (a supervisor's passes know their backend).
    const tables = await readBackend(runner, preferred, preferred === 'legacy' ? await legacyTables : undefined);
    if (tables) return { backend: preferred, tables };
  }
  // The nft read starts at once; the legacy one waits only for the list of legacy tables.
  const readable = (error: unknown) => {
    if (error instanceof BackendError) return { unreadable: error };
    throw error;
  };
  const [nftRead, legacyRead] = await Promise.all([
    readBackend(runner, 'nft').then((tables) => ({ tables }), readable),
    legacyTables.then((names) => readBackend(runner, 'legacy', names)).then((tables) => ({ tables }), readable),
  ]);
  // One backend's tables unreadable (or its save missing beside its restore): a gateway whose chains are in the other
  // goes on there; any other would be guessing.
  const legacy = 'unreadable' in legacyRead ? undefined : legacyRead.tables;
  if ('unreadable' in nftRead) {
    if (legacy && hasOurChains(legacy)) return { backend: 'legacy', tables: legacy, why: 'the gateway\'s chains are there' };
    throw nftRead.unreadable;
  }
  const nft = nftRead.tables;
  // (Legacy's unread, the gateway's chains in nft: as where iptables-legacy is not installed, said below.)
  if ('unreadable' in legacyRead && !(nft && hasOurChains(nft))) throw legacyRead.unreadable;
  if (!nft && !legacy) throw new BackendError(NO_IPTABLES);
  // No legacy table in the kernel is read as an empty legacy rule set without running iptables-legacy-save (a read
  // would make the tables). With iptables-nft missing too, that would take legacy for installed: plan showed every
  // rule to add, and down removed the addresses, left every VGW- chain in nft in force and said it was done.
  if (!nft && (await legacyTables)?.length === 0 && !(await installed(runner, 'iptables-legacy-save'))) throw new BackendError(NO_IPTABLES);
  // The commands said as they run where the gateway does (ip netns exec NS under --netns), as the warnings' are.
  if (nft && legacy && hasOurChains(nft) && hasOurChains(legacy)) throw inBothBackends(nft, legacy, runner.prefix);
  // Legacy tables the kernel has, unread: iptables-legacy is not installed here (nft's tables were, so they are ours).
  const names = legacy === undefined ? await legacyTables : undefined;
  if (nft && names && names.length > 0) {
    return { backend: 'nft', tables: nft, why: `iptables-legacy is not installed here, or its save failed: the legacy tables (${names.join(', ')}) are not read`, unreadLegacy: names };
  }
  const { backend, why } = chooseBackend(nft, legacy);
  const other = backend === 'nft' ? legacy : nft;
  const otherForward = other ? forwardFilter(backend === 'nft' ? 'legacy' : 'nft', other) : undefined;
  return { backend, tables: (backend === 'nft' ? nft : legacy)!, why, ...(otherForward ? { otherForward } : {}) };
}

const NO_IPTABLES = 'neither iptables-nft-save nor iptables-legacy-save works here; install iptables';

/** Whether `tool` is on the PATH (its `--version` reads no table, so it makes none). */
export async function installed(runner: CommandRunner, tool: string): Promise<boolean> {
  try {
    await runner.run([tool, '--version']);
    return true;
  } catch (error) {
    if (error instanceof CommandError && error.notFound) return false;
    throw error;
  }
}

/** Which backend, and why, from what each one's save shows (undefined: that tool is not here, or holds nothing). */
export function chooseBackend(nft: Map<string, SavedTable> | undefined, legacy: Map<string, SavedTable> | undefined): { backend: Backend; why: string } {
  if (!nft) return { backend: 'legacy', why: 'iptables-nft is not installed' };
  if (legacy && hasOurChains(legacy)) return { backend: 'legacy', why: 'the gateway\'s chains are there' };
  if (hasOurChains(nft)) return { backend: 'nft', why: 'the gateway\'s chains are there' };
  if (legacy && hasDockerChains(legacy) && !hasDockerChains(nft)) return { backend: 'legacy', why: 'Docker\'s DNS chains are there' };
  if (hasDockerChains(nft)) return { backend: 'nft', why: 'Docker\'s DNS chains are there' };
  if (legacy && hasAnyRules(legacy) && !hasAnyRules(nft)) return { backend: 'legacy', why: 'the namespace\'s rules are there' };
  if (hasAnyRules(nft)) return { backend: 'nft', why: 'the namespace\'s rules are there' };
  return { backend: 'nft', why: 'no rules in either: the default' };
}

/**
 * Our chains in both rule sets: which set to keep (where the gateway would write if neither held its chains: where
 * Docker's DNS chains or the namespace's other rules are), and the commands that remove the other one. Said whole,
 * since the way out is the operator's: the gateway cannot tell which set is current.
 */
export function inBothBackends(nft: Map<string, SavedTable>, legacy: Map<string, SavedTable>, prefix?: readonly string[]): BackendError {
  const { backend: keep, why } = chooseBackend(withoutOurs(nft), withoutOurs(legacy));
  const drop: Backend = keep === 'nft' ? 'legacy' : 'nft';
  const reason = why === 'no rules in either: the default' ? 'neither holds other rules, and nft is the default' : why;
  return new BackendError(`VGW- chains exist in both the iptables-nft and the iptables-legacy rule sets; the kernel runs both, so rules `
    + `would be enforced twice, and the gateway cannot tell which set is current. Keep the ones in iptables-${keep} (${reason}), and `
    + `remove those in iptables-${drop} (in the gateway's network namespace), then run again:\n`
    + removalCommands(drop, drop === 'nft' ? nft : legacy).map((c) => `  ${shownCommand(prefix, c)}`).join('\n'));
}

/** The tables without our chains and the rules that jump to them: what the namespace holds besides the gateway. */
function withoutOurs(tables: Map<string, SavedTable>): Map<string, SavedTable> {
  const others = new Map<string, SavedTable>();
  for (const [name, table] of tables) {
    const rules = new Map([...table.rules]
      .filter(([chain]) => !chain.startsWith(OUR_PREFIX))
      .map(([chain, list]) => [chain, list.filter((r) => !verdictOf(r.body)?.startsWith(OUR_PREFIX))] as const)
      .filter(([, list]) => list.length > 0));
    others.set(name, { ...table, chains: new Set([...table.chains].filter((c) => !c.startsWith(OUR_PREFIX))), rules });
  }
  return others;
}

/** A rule body that a shell passes to iptables as it reads (no $, backquote, backslash, ! or single quote). */
const SHELL_SAFE = /^[\w .,:/=@%+"-]*$/;
/** A word a shell passes as it is (a chain name: iptables takes `x;y`, `a$b` or `it's` as one). */
const PLAIN_WORD = /^[\w.,:/=@%+-]+$/;
const shellWord = (word: string) => (PLAIN_WORD.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`);

/**
 * `iptables-<backend>` commands that remove our chains from a rule set: every jump to one of them from a chain of
 * someone's, a chain's last first, so that the numbers before it hold (by its text, or by its number where the text
 * is not shell-safe or another rule of the chain has the same text: a delete by text takes the first rule of that
 * text, which may be before one deleted by number and move it), then each chain flushed, then deleted (a chain may
 * be deleted once nothing refers to it). A chain's name is quoted where a shell would read it otherwise.
 */
function removalCommands(backend: Backend, tables: Map<string, SavedTable>): string[] {
  const tool = `iptables-${backend}`;
  const commands: string[] = [];
  for (const [table, { chains, rules }] of tables) {
    const ours = [...chains].filter((c) => c.startsWith(OUR_PREFIX));
    for (const [chain, list] of rules) {
      if (chain.startsWith(OUR_PREFIX)) continue;
      const seen = new Map<string, number>();
      for (const { body } of list) seen.set(body, (seen.get(body) ?? 0) + 1);
      for (let i = list.length - 1; i >= 0; i--) {
        const { body } = list[i]!;
        if (!verdictOf(body)?.startsWith(OUR_PREFIX)) continue;
        const byText = SHELL_SAFE.test(body) && seen.get(body) === 1;
        commands.push(`${tool} -t ${table} -D ${shellWord(chain)} ${byText ? body : String(i + 1)}`);
      }
    }
    for (const chain of ours) commands.push(`${tool} -t ${table} -F ${chain}`);
    for (const chain of ours) commands.push(`${tool} -t ${table} -X ${chain}`);
  }
  return commands;
}

/** A backend's FORWARD chain, when it filters anything: rules, or a policy other than ACCEPT. */
function forwardFilter(backend: Backend, tables: Map<string, SavedTable>): OtherForward | undefined {
  const filter = tables.get('filter');
  const rules = filter?.rules.get('FORWARD')?.length ?? 0;
  const policy = filter?.policies?.get('FORWARD');
  if (rules === 0 && policy === undefined) return undefined;
  return { backend, rules, ...(policy ? { policy } : {}) };
}

/** Docker's embedded-DNS chains, which every container with a user-defined network has in its nat table. */
function hasDockerChains(tables: Map<string, SavedTable>): boolean {
  const nat = tables.get('nat');
  return Boolean(nat && (nat.chains.has('DOCKER_OUTPUT') || nat.chains.has('DOCKER_POSTROUTING')));
}

/**
 * The reads of a pass: the interfaces come first (the planner needs only them), our sets (the set steps need only
 * them and the desired state) before the tables as a rule, the whole facts after.
 */
export interface StagedFacts {
  readonly interfaces: Promise<InterfaceFacts>;
  /** Our sets as `facts` will hold them (undefined: no ipset tool). */
  readonly sets: Promise<Map<string, SavedSet> | undefined>;
  readonly facts: Promise<Facts>;
}

export function readFactsStaged(runner: CommandRunner, options: { backend?: Backend; knownSets?: KnownSets; knownTables?: KnownTables } = {}): StagedFacts {
  // Four processes in parallel: iptables-*-save, ip, cat, ipset (the legacy save only where legacy tables exist; a
  // second cat, of the NICs' force_forwarding, once ip and cat are done, on Linux 6.17+; two more for ip6tables, only
  // while IPv6 forwarding is on). `interfaces` resolves once that second cat has been started.
  // The save is the slowest read (about 100 ms at 10,000 rules), so it is started first (the command helper forks
  // them in the order they are asked for). With known tables (see KnownTables) there is no save.
  let giveLegacyTables!: (names: Promise<string[] | undefined>) => void;
  const legacyTables = new Promise<string[] | undefined>((resolve) => (giveLegacyTables = resolve));
  const tables: Promise<TableFacts> = options.knownTables ? Promise.resolve(options.knownTables) : readTableFacts(runner, legacyTables, options.backend);
  const interfacesRead = readInterfaces(runner);
  const proc = readProc(runner);
  giveLegacyTables(proc.then((p) => p.legacyTables, () => undefined)); // a failed cat fails `facts` below
  const sets = readSets(runner, options.knownSets);
  // A NIC forwarding IPv6 of its own (Linux 6.17+), once the NICs are known: one more cat where the kernel has it.
  // It is started before `interfaces` resolves: whoever waits for the interfaces (the planner, which renders then and
  // holds the event loop for tens of milliseconds at a full apply) would otherwise start it only once it is done.
  const nicReads = Promise.all([interfacesRead, proc]).then(([{ links }, { sysctls }]) => ({ nics: readForceForwardingNics(runner, links, sysctls) }));
  const forceForwarding = nicReads.then((started) => started.nics);
  const interfaces = nicReads.then(() => interfacesRead);
  // IPv6 forwarding on (rare): whether an ip6tables FORWARD chain of the operator's drops what it does not accept.
  const ipv6Drop = Promise.all([proc, forceForwarding])
    .then(([p, nics]) => (ipv6ForwardingOn(p.sysctls) !== undefined || nics.length > 0 ? readIpv6ForwardDrop(runner) : undefined), () => undefined);
  const facts = Promise.all([
    interfacesRead,
    proc,
    tables,
    sets,
    ipv6Drop,
    forceForwarding,
  ]).then(([{ links, defaultRoute, routed }, { sysctls }, { backend, tables, backendWhy, otherForward, unreadLegacy }, sets, ipv6ForwardDroppedBy, nics]): Facts => ({
    links,
    ...(defaultRoute ? { defaultRoute } : {}),
    routed,
    sysctls,
    backend,
    tables,
    ...(sets ? { sets } : {}),
    ...(backendWhy ? { backendWhy } : {}),
    ...(otherForward ? { otherForward } : {}),
    ...(unreadLegacy ? { unreadLegacy } : {}),
    ...(ipv6ForwardDroppedBy ? { ipv6ForwardDroppedBy } : {}),
    ...(nics.length > 0 ? { ipv6ForceForwardingNics: nics } : {}),
    ...(runner.prefix ? { commandPrefix: runner.prefix } : {}),
  }));
  // Whoever awaits `interfaces` first must not leave a failure of `facts` unhandled meanwhile; it is still
  // thrown to whoever awaits `facts`.
  facts.catch(() => {});
  sets.catch(() => {});
  interfaces.catch(() => {}); // reads started ahead of a config file that failed to load are awaited by nobody
  return { interfaces, sets, facts };
}

/** Our two tables as the backend's save shows them (see readTables). */
async function readTableFacts(runner: CommandRunner, legacyTables: Promise<string[] | undefined>, preferred?: Backend): Promise<TableFacts> {
  const { backend, tables, why, otherForward, unreadLegacy } = await readTables(runner, legacyTables, preferred);
  return {
    backend, tables: { filter: tableOf(tables, 'filter'), nat: tableOf(tables, 'nat') },
    ...(why ? { backendWhy: why } : {}), ...(otherForward ? { otherForward } : {}), ...(unreadLegacy ? { unreadLegacy } : {}),
  };
}

/** Our tables, and what the choice of backend found on the way (absent when a pass knew them). */
type TableFacts = KnownTables & Pick<Facts, 'backendWhy' | 'otherForward' | 'unreadLegacy'>;

/** The tables alone, read afresh (a pass whose write from the tables it knew was refused: see KnownTables). */
export function readTablesAgain(runner: CommandRunner, backend: Backend): Promise<KnownTables> {
  const legacyTables = backend === 'legacy' ? readProc(runner).then((p) => p.legacyTables) : Promise.resolve(undefined);
  return readTableFacts(runner, legacyTables, backend);
}
