/**
 * Reading a namespace's state: links and addresses, the default route, the sysctls we manage, and the
 * netfilter tables of the backend our rules belong to. Reads only; all parsing is in the pure parse-* modules.
 */
import { privilegeHint } from '../apply/hints.js';
import { CommandError, type CommandRunner } from '../exec/runner.js';
import type { Backend, Facts, Link, Route, SavedSet, SavedTable } from './facts.js';
import { parseDefaultRoute, parseIpAddr } from './parse-ip.js';
import { parseIpsetSave } from './parse-ipset.js';
import { hasAnyRules, hasOurChains, parseSave, tableOf } from './parse-save.js';

export const MANAGED_SYSCTLS = ['net.ipv4.ip_forward'] as const;

export class BackendError extends Error {
  override readonly name = 'BackendError';
}

export const saveCommand = (backend: Backend) => [`iptables-${backend}-save`, '-c'];
export const restoreCommand = (backend: Backend, counters = false) =>
  [`iptables-${backend}-restore`, '--noflush', '--wait', ...(counters ? ['--counters'] : [])];

export async function readLinks(runner: CommandRunner, withStats = false): Promise<Link[]> {
  const { stdout } = await runner.run(['ip', '-json', ...(withStats ? ['-s'] : []), 'addr', 'show']);
  return parseIpAddr(stdout);
}

export async function readDefaultRoute(runner: CommandRunner): Promise<Route | undefined> {
  const { stdout } = await runner.run(['ip', '-json', 'route', 'show', 'default']);
  return parseDefaultRoute(stdout);
}

export async function readSysctls(runner: CommandRunner): Promise<Record<string, string>> {
  const { stdout } = await runner.run(['sysctl', '-n', ...MANAGED_SYSCTLS]);
  const values = stdout.trim().split('\n');
  return Object.fromEntries(MANAGED_SYSCTLS.map((key, i) => [key, (values[i] ?? '').trim()]));
}

/** Our ipsets, or undefined when the ipset tool is not installed. */
export async function readSets(runner: CommandRunner): Promise<Map<string, SavedSet> | undefined> {
  try {
    return parseIpsetSave((await runner.run(['ipset', 'save'])).stdout);
  } catch (error) {
    if (error instanceof CommandError && error.exitCode === null) return undefined;
    throw error;
  }
}

/** One backend's tables, or undefined when that backend is not installed or not usable here. */
async function readBackend(runner: CommandRunner, backend: Backend): Promise<Map<string, SavedTable> | undefined> {
  if (backend === 'legacy') {
    // Reading a legacy table instantiates it in the namespace (and hooks it into every packet's path), so
    // look at the list of legacy tables first: none means nothing lives there, and nothing is created.
    const names = await runner.run(['cat', '/proc/net/ip_tables_names'], { allowFailure: true }).catch(() => undefined);
    if (!names || names.exitCode !== 0) return undefined;
    if (names.stdout.trim() === '') return new Map();
  }
  try {
    const result = await runner.run(saveCommand(backend), { allowFailure: true });
    if (result.exitCode === 0) return parseSave(result.stdout);
    // Not permitted is not "not installed": say so (with the flag that fixes it) instead of trying the other.
    if (privilegeHint(result.stderr)) throw new CommandError(saveCommand(backend), result.exitCode, result.stderr);
    return undefined;
  } catch (error) {
    if (error instanceof CommandError && error.exitCode === null) return undefined; // binary not found
    throw error;
  }
}

/**
 * iptables-nft and iptables-legacy keep separate rule sets. Ours go where the namespace's rules already live
 * (Docker's DNS chains tell); with none anywhere, nft. Our chains in both is a state we refuse to guess about.
 */
export async function readTables(runner: CommandRunner, preferred?: Backend): Promise<{ backend: Backend; tables: Map<string, SavedTable> }> {
  if (preferred) {
    const tables = await readBackend(runner, preferred);
    if (tables) return { backend: preferred, tables };
  }
  const [nft, legacy] = await Promise.all([readBackend(runner, 'nft'), readBackend(runner, 'legacy')]);
  if (!nft && !legacy) throw new BackendError('neither iptables-nft-save nor iptables-legacy-save works here; install iptables');
  if (nft && legacy && hasOurChains(nft) && hasOurChains(legacy)) {
    throw new BackendError('VGW- chains exist in both the iptables-nft and the iptables-legacy rule sets; the kernel runs both, '
      + 'so rules would be enforced twice. Remove one set (for example `iptables-legacy-save | grep VGW-`, then flush and delete those '
      + 'chains with iptables-legacy) and run again.');
  }
  if (legacy && (hasOurChains(legacy) || (!(nft && hasOurChains(nft)) && hasAnyRules(legacy) && !(nft && hasAnyRules(nft))))) {
    return { backend: 'legacy', tables: legacy };
  }
  if (nft) return { backend: 'nft', tables: nft };
  return { backend: 'legacy', tables: legacy! };
}

export async function readFacts(runner: CommandRunner, options: { backend?: Backend; withStats?: boolean } = {}): Promise<Facts> {
  const [links, defaultRoute, sysctls, { backend, tables }, sets] = await Promise.all([
    readLinks(runner, options.withStats),
    readDefaultRoute(runner),
    readSysctls(runner),
    readTables(runner, options.backend),
    readSets(runner),
  ]);
  return {
    links,
    ...(defaultRoute ? { defaultRoute } : {}),
    sysctls,
    backend,
    tables: { filter: tableOf(tables, 'filter'), nat: tableOf(tables, 'nat') },
    ...(sets ? { sets } : {}),
  };
}
