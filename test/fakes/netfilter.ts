/**
 * A semantic fake of one network namespace, behind the product's CommandRunner interface.
 *
 * It keeps the state the gateway reads and writes — links with their IPv4 addresses, the default route, sysctls,
 * and the iptables rule sets of both backends — and answers the commands the product runs the way the real
 * tools do (same output formats, same error texts, same exit codes where it matters):
 *
 *   ip -json [-s] addr show | ip -json link show | ip -json route show [default] (the default routes, and the
 *     kernel's connected route of each primary address of an up link)
 *   ip addr add CIDR dev X [metric N] | ip addr del CIDR dev X | ip link set [dev] X up|down
 *   ip [-force] -batch - (those commands, one per line, on stdin)
 *   ip route replace|add default [tos T] via G [dev D] [proto P] [metric M] | ip route del default [tos T] [via G]
 *     [dev D] [proto P] [metric M]
 *   sysctl -n KEY… | sysctl KEY… | sysctl -w KEY=VALUE
 *   iptables-nft-save [-c] [-t T] | iptables-nft-restore [--noflush] [--wait[=S]] [--counters] [--test]
 *   (and iptables-save / iptables-restore, which point at nft as Debian's alternatives do)
 *   iptables-legacy-save / -restore: "not installed" unless switched on with setLegacy('installed');
 *   cat FILE… of /proc/sys/… and /proc/net/ip_tables_names (the legacy tables that exist: those a legacy restore
 *     has touched; the file is missing while legacy is not installed)
 *   ipset save | ipset list -t | ipset restore (create/add/del/swap/destroy, -exist) | ipset destroy NAME — unless
 *   ipset: false (not installed)
 *   conntrack --version | conntrack -L [-p udp] [<filters>] | conntrack -D <filters>, over the UDP flows made by
 *     udpDatagram (below) — unless conntrack: false (not installed)
 *   ip netns exec NAME <any of the above> (what --netns runs; NAME must be the fake's own `name`; a program that
 *     is not installed is then ip's `exec of "X" failed` with exit 1, not a failed spawn)
 *
 * The iptables part is not a recorder: restore text is parsed and executed. `*table` opens a transaction on a
 * copy of the table, and only `COMMIT` makes it live, so a payload with a good *filter and a bad *nat leaves
 * filter applied, as the real one does. It enforces what the kernel enforces and the product relies on:
 * a rule's chain must exist or be declared; every -j/-g target must be a standard target valid in the table
 * or an existing user chain (not a built-in one, and declared before use); -X only on an empty chain nothing
 * jumps to; no loops; NAT targets (and hook-bound matches such as owner) only where their hook allows them;
 * DROP is refused in nat; a missing COMMIT is an error. In --noflush mode a declared existing user chain is flushed, a new one created, built-in chains
 * keep their rules. Rules are stored the way iptables-save prints them back (base matches first, the comment
 * quoted, `-m tcp` made explicit, /32 added, ctstates in kernel order, addrtype's --src-type before --dst-type
 * and its types upper-case, REJECT's default --reject-with), so the
 * product cannot get away with comparing rule text instead of its hashes.
 *
 * Addresses behave as on this machine's kernel (checked with iproute2 6.1): a metric is kept and printed only
 * when set, `del` ignores it, a second address in a network the link has is a secondary (listed after every
 * primary, and removed with its primary: promote_secondaries is taken to be 0, the default).
 * Default routes too: the kernel keys one by its TOS and metric, so a route with `tos 0x10` and one without are two
 * routes (`replace` without a TOS never touches the TOS one), listed by TOS (highest first), then metric; `del`
 * matches the TOS exactly (none: 0) and whatever else it names (a metric of 0 names none).
 *
 * Deliberate simplifications: only the filter and nat tables exist; with nft both always exist (with legacy,
 * those a restore instantiated); user chains are listed sorted by name (as iptables-nft-save does), ipset
 * members sorted too (the kernel lists them in hash order);
 * every failure of iptables-restore is reported as `<prog>: line N failed: <reason>` with exit 1 (the reasons
 * are close to, not always exactly, the real texts; loops and NAT targets or matches outside their hooks are
 * reported at the table's COMMIT line), unless a table fault asks for iptables 1.8.9's other formats
 * (RestoreErrorFormat); option parsing knows the options listed in OPTIONS below and refuses anything else.
 * The save format was checked against iptables-nft v1.8.9 for every golden payload in test/golden/.
 */
import { CommandError, type Child, type CommandRunner, type RunOptions, type RunResult } from '../../src/exec/runner.js';

// ---------------------------------------------------------------------------------------------------------------
// Public shapes

export type FakeTable = 'filter' | 'nat';
export type FakeBackend = 'nft' | 'legacy';

export interface FakeLinkSpec {
  readonly name: string;
  readonly mac?: string;
  readonly up?: boolean;
  /**
   * CIDRs like 192.168.10.2/24, in the order the kernel got them; `192.168.10.1/24 metric 7010` for an address
   * added with a prefix-route metric (as the gateway marks its own).
   */
  readonly addresses?: readonly string[];
  readonly loopback?: boolean;
}

export interface FakeNetnsOptions {
  /** The namespace's name, for `ip netns exec NAME …` (default "vgw-fake"). */
  readonly name?: string;
  /** Links besides `lo` (which is always there, up, with 127.0.0.1/8). */
  readonly links?: readonly FakeLinkSpec[];
  /** The default route (no TOS, metric 0, no proto); add others with `ip route add default tos …`. */
  readonly defaultRoute?: { readonly gateway: string; readonly dev: string };
  /** Initial sysctl values; net.ipv4.ip_forward defaults to "0". */
  readonly sysctls?: Readonly<Record<string, string>>;
  /** /proc/sys mounted read-only, as inside a Docker container. */
  readonly readOnlySysctls?: boolean;
  /** Seed Docker's embedded-DNS chains (DOCKER_OUTPUT, DOCKER_POSTROUTING) into the nft nat table. */
  readonly dockerDns?: boolean;
  /** The legacy backend: not installed (its commands are not found), or installed. Default: absent. */
  readonly legacy?: 'absent' | 'installed';
  /** The ipset tool: installed (default) or not (its commands are not found). */
  readonly ipset?: boolean;
  /** The conntrack tool (conntrack-tools): installed (default) or not (its commands are not found). */
  readonly conntrack?: boolean;
}

/** A UDP flow's conntrack entry: the tuple of its first datagram, and that of its replies (after DNAT). */
export interface FakeFlow {
  readonly original: { readonly src: string; readonly dst: string; readonly sport: number; readonly dport: number };
  readonly reply: { readonly src: string; readonly dst: string; readonly sport: number; readonly dport: number };
}

/**
 * How iptables 1.8.9 reports a restore line it fails on (checked on this machine with iptables-nft-restore and
 * iptables-legacy-restore 1.8.9 in a throwaway namespace):
 * - 'line-failed': `<prog>: line N failed: <reason>` (exit 1) — legacy's words for a table the kernel refuses at
 *   COMMIT (the real one stops after "failed"; the fake adds the reason);
 * - 'error-occurred': `<prog> v1.8.9 (nf_tables): <reason>` / `Error occurred at line: N` / `Try …` (exit 2) — a
 *   line iptables cannot parse (a bad address, a chain that does not exist), nft and legacy alike;
 * - 'rule-append': `<prog> v1.8.9 (nf_tables): ` / `line N: RULE_APPEND failed (<reason>): rule in chain C` (exit 4)
 *   — iptables-nft when the kernel refuses a rule (TCPMSS on a UDP rule, say).
 */
export type RestoreErrorFormat = 'line-failed' | 'error-occurred' | 'rule-append';

/** Which command to fail, once (failNext) or every time (failOn). */
export interface FaultSpec {
  /** Fail an iptables-restore at the first line of this table's section (tables before it commit). */
  readonly table?: FakeTable;
  /** For a table fault: how the restore reports it (default 'line-failed'; `stderr` is then the reason). */
  readonly format?: RestoreErrorFormat;
  /** Fail any command this predicate picks. */
  readonly match?: (argv: readonly string[], input: string | undefined) => boolean;
  readonly stderr?: string;
  readonly exitCode?: number;
  /**
   * The command is killed by this signal before it does anything (a timeout, the OOM killer, someone's kill): it
   * fails as the real runner reports a killed child, exit code null, even with allowFailure.
   */
  readonly killed?: NodeJS.Signals;
  /**
   * The command does the first this many lines of its input before it is killed (with `killed`: ipset and ip take
   * them one by one; Infinity: all of it, as a restore killed once its commit was under way), or fails (the next
   * line is the one `stderr` names).
   */
  readonly afterLines?: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Netfilter model

interface Rule {
  /** Normalised body, as iptables-save prints it after `-A CHAIN `. */
  readonly body: string;
  readonly target: string | undefined;
  /** ipsets the rule matches on (a set in use cannot be destroyed). */
  readonly sets: readonly string[];
  /** Match modules the rule loads (some work only under some hooks). */
  readonly modules: readonly string[];
  /** Why the kernel refuses the rule itself when its table is committed (iptables' parser accepts it). */
  readonly refused?: string;
  packets: number;
  bytes: number;
}

interface Chain {
  readonly name: string;
  readonly builtin: boolean;
  policy: string;
  packets: number;
  bytes: number;
  rules: Rule[];
}

type Table = Map<string, Chain>;
type Ruleset = Record<FakeTable, Table>;

interface IpSet {
  readonly type: string;
  readonly members: Map<string, { packets: number; bytes: number }>;
  /**
   * Its header as created (`hashsize` rounded up to a power of two, at least 64; `maxelem`), as the kernel prints it
   * back. The kernel also doubles the hash table when a bucket overflows; the fake never does.
   */
  readonly hashsize: number;
  readonly maxelem: number;
  /**
   * The kernel's bucket size for the set (shown as `bucketsize`), and each net's bucket as allocated (slots), for the
   * hash:…,iface types, which hash the net alone: the kernel gives a new bucket two slots and grows a full one by two,
   * raising the bucket size first where one net fills it, up to 64 (AHASH_MAX_TUNED). At 64 it grows no bucket any
   * more: an add into a full one fails with "Hash is full" for good, however few members the set holds. A bucket whose
   * last member goes is freed. (Two nets never share a bucket here: the kernel rehashes those apart.)
   */
  bucketsize: number;
  /** By net (hash:…,iface sets only): its members, and the slots its bucket has. */
  readonly buckets: Map<string, { members: number; slots: number }>;
}

/** The kernel's first bucket size, its most (AHASH_MAX_TUNED), and the slots a bucket is made or grown with. */
const BUCKET_FIRST = 12;
const BUCKET_MOST = 64;
const BUCKET_STEP = 2;

/** `create`'s hashsize and maxelem (the kernel's defaults: 1024 and 65536); other options are taken as given. */
function setHeaderOptions(options: readonly string[]): { hashsize: number; maxelem: number } | string {
  let hashsize = 1024;
  let maxelem = 65536;
  for (let i = 0; i < options.length; i++) {
    if (options[i] !== 'hashsize' && options[i] !== 'maxelem') continue;
    const value = options[i + 1] ?? '';
    if (!/^\d+$/.test(value) || Number(value) === 0) return `Syntax error: '${value}' is invalid as number`;
    if (options[i] === 'maxelem') maxelem = Number(value);
    else for (hashsize = 64; hashsize < Number(value);) hashsize *= 2;
    i++;
  }
  return { hashsize, maxelem };
}

const TABLE_NAMES: readonly FakeTable[] = ['filter', 'nat'];
const BUILTIN: Record<FakeTable, readonly string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
};

/** Targets, and the tables (and for NAT, the hooks) where the kernel accepts them. */
const TARGETS: Record<string, { tables: readonly FakeTable[]; hooks?: readonly string[] }> = {
  ACCEPT: { tables: ['filter', 'nat'] },
  DROP: { tables: ['filter'] }, // "The nat table is not intended for filtering"
  RETURN: { tables: ['filter', 'nat'] },
  REJECT: { tables: ['filter'] },
  LOG: { tables: ['filter', 'nat'] },
  NFLOG: { tables: ['filter', 'nat'] },
  MARK: { tables: ['filter', 'nat'] },
  CONNMARK: { tables: ['filter', 'nat'] },
  TCPMSS: { tables: ['filter', 'nat'] }, // no table of its own (usually mangle); the kernel wants -p tcp (see normaliseRule)
  MASQUERADE: { tables: ['nat'], hooks: ['POSTROUTING'] },
  SNAT: { tables: ['nat'], hooks: ['POSTROUTING', 'INPUT'] },
  DNAT: { tables: ['nat'], hooks: ['PREROUTING', 'OUTPUT'] },
  REDIRECT: { tables: ['nat'], hooks: ['PREROUTING', 'OUTPUT'] },
};

/** Matches the kernel accepts only under some hooks (xt_owner: LOCAL_OUT and POST_ROUTING). */
const MATCH_HOOKS: Record<string, readonly string[]> = {
  owner: ['OUTPUT', 'POSTROUTING'],
};

/** Options iptables knows (in the subset the fake supports): how many values each takes, and the module it needs. */
const OPTIONS: Record<string, { values: number; module?: string; base?: string }> = {
  '-s': { values: 1, base: '-s' }, '--source': { values: 1, base: '-s' },
  '-d': { values: 1, base: '-d' }, '--destination': { values: 1, base: '-d' },
  '-i': { values: 1, base: '-i' }, '--in-interface': { values: 1, base: '-i' },
  '-o': { values: 1, base: '-o' }, '--out-interface': { values: 1, base: '-o' },
  '-p': { values: 1, base: '-p' }, '--protocol': { values: 1, base: '-p' },
  '-m': { values: 1 }, '--match': { values: 1 },
  '-j': { values: 1 }, '--jump': { values: 1 }, '-g': { values: 1 }, '--goto': { values: 1 },
  '--comment': { values: 1, module: 'comment' },
  '--ctstate': { values: 1, module: 'conntrack' },
  '--state': { values: 1, module: 'state' },
  '--dport': { values: 1, module: 'tcp|udp' }, '--sport': { values: 1, module: 'tcp|udp' },
  '--destination-port': { values: 1, module: 'tcp|udp' }, '--source-port': { values: 1, module: 'tcp|udp' },
  '--dports': { values: 1, module: 'multiport' }, '--sports': { values: 1, module: 'multiport' },
  '--ports': { values: 1, module: 'multiport' },
  '--icmp-type': { values: 1, module: 'icmp' },
  '--src-range': { values: 1, module: 'iprange' }, '--dst-range': { values: 1, module: 'iprange' },
  '--match-set': { values: 2, module: 'set' }, '--set': { values: 2, module: 'set' },
  '--limit': { values: 1, module: 'limit' }, '--limit-burst': { values: 1, module: 'limit' },
  '--mark': { values: 1, module: 'mark' },
  '--dst-type': { values: 1, module: 'addrtype' }, '--src-type': { values: 1, module: 'addrtype' },
  '--uid-owner': { values: 1, module: 'owner' }, '--gid-owner': { values: 1, module: 'owner' },
  '--to-source': { values: 1 }, '--to-destination': { values: 1 }, '--to-ports': { values: 1 },
  '--reject-with': { values: 1 }, '--log-prefix': { values: 1 }, '--log-level': { values: 1 },
  '--set-mark': { values: 1 }, '--set-xmark': { values: 1 }, '--set-mss': { values: 1 },
  '--clamp-mss-to-pmtu': { values: 0 }, '--random': { values: 0 }, '--random-fully': { values: 0 }, '--persistent': { values: 0 },
};

/** libxt_addrtype's type names (it accepts them in any case and saves them upper-case). */
const ADDRESS_TYPES = ['UNSPEC', 'UNICAST', 'LOCAL', 'BROADCAST', 'ANYCAST', 'MULTICAST', 'BLACKHOLE', 'UNREACHABLE', 'PROHIBIT', 'THROW', 'NAT', 'XRESOLVE'];
const CTSTATE_ORDER = ['INVALID', 'NEW', 'RELATED', 'ESTABLISHED', 'UNTRACKED', 'SNAT', 'DNAT'];
const IFNAME = /^!?[A-Za-z0-9_.@:+-]{1,15}$/;
const IPV4 = /^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const PORT_ITEM = /^\d{1,5}(:\d{1,5})?$/;

class RestoreFailure extends Error {}
/** iptables-legacy's kernel refusing a table at COMMIT: `<prog>: line N failed`, nothing more. */
class CommitRefused extends RestoreFailure {}

/** A failed restore line as iptables 1.8.9 reports it (see RestoreErrorFormat). */
function restoreError(program: string, backend: FakeBackend, format: RestoreErrorFormat, n: number, line: string, reason: string): { stderr: string; exitCode: number } {
  const banner = `${program} v1.8.9 (${backend === 'nft' ? 'nf_tables' : 'legacy'}): `;
  switch (format) {
    case 'line-failed':
      return { stderr: `${program}: line ${n} failed: ${reason}\n`, exitCode: 1 };
    case 'error-occurred':
      return { stderr: `${banner}${reason}\nError occurred at line: ${n}\nTry \`${program} -h' or '${program} --help' for more information.\n`, exitCode: 2 };
    case 'rule-append': {
      const chain = /^\S+ (\S+)/.exec(line)?.[1] ?? '?';
      return { stderr: `${banner}\nline ${n}: RULE_${/^(-I|--insert) /.test(line) ? 'INSERT' : 'APPEND'} failed (${reason}): rule in chain ${chain}\n`, exitCode: 4 };
    }
  }
}

function emptyRuleset(): Ruleset {
  const table = (name: FakeTable): Table => new Map(BUILTIN[name].map((c) => [c, { name: c, builtin: true, policy: 'ACCEPT', packets: 0, bytes: 0, rules: [] }]));
  return { filter: table('filter'), nat: table('nat') };
}

function cloneTable(table: Table): Table {
  return new Map([...table].map(([name, c]) => [name, { ...c, rules: c.rules.map((r) => ({ ...r })) }]));
}

/** Splits a restore line into tokens, honouring double quotes the way iptables-restore does. */
function tokenize(line: string): string[] {
  const tokens: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line)) !== null) {
    if (m[2]?.includes('"')) throw new RestoreFailure('Bad argument (unbalanced quote)');
    tokens.push(m[1] ?? m[2]!);
  }
  return tokens;
}

const validPort = (p: string) => p.split(':').every((n) => Number(n) >= 0 && Number(n) <= 65535);

function checkAddress(value: string): string {
  const [address, prefix, extra] = value.split('/');
  if (extra !== undefined || !IPV4.test(address ?? '') || (prefix !== undefined && !(/^\d{1,2}$/.test(prefix) && Number(prefix) <= 32))) {
    throw new RestoreFailure(`host/network \`${value}' not found`);
  }
  return prefix === undefined ? `${address}/32` : value;
}

/** How iptables-save prints a string value (libxtables' xtables_save_string): bare when it is only letters,
 * digits, "_" and "-", else double-quoted with \\ before ", \\ and '. */
function saveString(value: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(value)) return value;
  return `"${value.replace(/["\\']/g, (c) => `\\${c}`)}"`;
}

/**
 * Parses a rule body (everything after `-A CHAIN`), checks it the way iptables would, and returns it in the
 * form iptables-save prints back.
 */
function normaliseRule(tokens: readonly string[], table: FakeTable): { body: string; target: string | undefined; sets: string[]; modules: string[]; refused?: string } {
  const sets: string[] = [];
  const base: Record<string, string[]> = {};
  const rest: string[] = [];
  const modules = new Set<string>();
  /** Each `-m addrtype` match: where its options start in `rest`, and whether it got a type (checked at the end). */
  const addrtypes: Array<{ start: number; typed: boolean }> = [];
  let proto: string | undefined;
  let target: string | undefined;
  let negate = false;
  let needsPortProto = false;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (token === '!') {
      negate = true;
      continue;
    }
    const option = OPTIONS[token];
    if (!option) throw new RestoreFailure(`unknown option "${token}"`);
    const values = tokens.slice(i + 1, i + 1 + option.values);
    if (values.length < option.values || values.some((v) => v.startsWith('-') && !/^-\d/.test(v))) {
      throw new RestoreFailure(`option "${token}" requires an argument`);
    }
    i += option.values;
    const not = negate ? ['!'] : [];
    negate = false;
    const value = values[0] ?? '';
    if (option.base) {
      if (base[option.base]) throw new RestoreFailure(`multiple ${option.base} flags not allowed`);
      let shown = value;
      if (option.base === '-s' || option.base === '-d') shown = checkAddress(value);
      if ((option.base === '-i' || option.base === '-o') && !IFNAME.test(value)) throw new RestoreFailure(`Bad interface name "${value}"`);
      if (option.base === '-p') {
        if (!['tcp', 'udp', 'icmp', 'all', 'sctp'].includes(value)) throw new RestoreFailure(`unknown protocol "${value}" specified`);
        proto = value;
      }
      base[option.base] = [...not, option.base, shown];
      continue;
    }
    if (token === '-m' || token === '--match') {
      modules.add(value);
      rest.push(...not, '-m', value);
      if (value === 'addrtype') addrtypes.push({ start: rest.length, typed: false });
      continue;
    }
    if (token === '-j' || token === '--jump' || token === '-g' || token === '--goto') {
      if (target !== undefined) throw new RestoreFailure('multiple -j flags not allowed');
      target = value;
      rest.push(token.startsWith('-g') || token === '--goto' ? '-g' : '-j', value);
      continue;
    }
    if (option.module) {
      const wanted = option.module.split('|');
      const loaded = wanted.find((m) => modules.has(m));
      if (!loaded) {
        // tcp/udp options load their match implicitly after -p tcp/udp; iptables-save prints it explicitly.
        if (option.module === 'tcp|udp' && proto && wanted.includes(proto)) {
          modules.add(proto);
          rest.push('-m', proto);
        } else {
          throw new RestoreFailure(`unknown option "${token}"`);
        }
      }
      if (option.module === 'multiport') needsPortProto = true;
    }
    let shown = value;
    switch (token) {
      case '--comment':
        if (value.length > 256) throw new RestoreFailure('COMMENT must be less than 256 characters');
        shown = saveString(value);
        break;
      case '--limit': {
        const m = /^(\d+)\/(s|sec|second|m|min|minute|h|hour|d|day)$/.exec(value);
        if (!m) throw new RestoreFailure(`bad rate "${value}"`);
        const unit = { s: 'sec', m: 'min', h: 'hour', d: 'day' }[m[2]![0] as 's' | 'm' | 'h' | 'd'];
        shown = `${m[1]}/${unit}`;
        break;
      }
      case '--ctstate':
      case '--state': {
        const states = value.split(',');
        const unknown = states.find((s) => !CTSTATE_ORDER.includes(s));
        if (unknown) throw new RestoreFailure(`Bad ctstate "${unknown}"`);
        shown = CTSTATE_ORDER.filter((s) => states.includes(s)).join(',');
        break;
      }
      case '--match-set':
      case '--set':
        sets.push(value);
        if (!/^(src|dst)(,(src|dst))*$/.test(values[1] ?? '')) throw new RestoreFailure(`bad set flags "${values[1] ?? ''}"`);
        break;
      case '--src-type':
      case '--dst-type': {
        const types = value.split(',').map((type) => type.toUpperCase());
        const bad = types.find((type) => !ADDRESS_TYPES.includes(type));
        if (bad !== undefined) throw new RestoreFailure(`addrtype: bad type "${value.split(',')[types.indexOf(bad)]}"`);
        shown = types.join(',');
        break;
      }
      case '--dport': case '--sport': case '--destination-port': case '--source-port':
        if (!PORT_ITEM.test(value) || !validPort(value)) throw new RestoreFailure(`invalid port/service \`${value}' specified`);
        break;
      case '--dports': case '--sports': case '--ports': {
        const items = value.split(',');
        if (!items.every((p) => PORT_ITEM.test(p) && validPort(p))) throw new RestoreFailure(`invalid port/service \`${value}' specified`);
        const slots = items.reduce((n, p) => n + (p.includes(':') ? 2 : 1), 0);
        if (slots > 15) throw new RestoreFailure('too many ports specified');
        break;
      }
      default:
        break;
    }
    const name = token === '--destination-port' ? '--dport' : token === '--source-port' ? '--sport' : token;
    const addrtype = addrtypes.at(-1);
    if ((token === '--src-type' || token === '--dst-type') && addrtype) {
      addrtype.typed = true;
      // libxt_addrtype saves --src-type before --dst-type, whichever came first.
      const dst = token === '--src-type' ? rest.indexOf('--dst-type', addrtype.start) : -1;
      if (dst >= 0) {
        rest.splice(rest[dst - 1] === '!' ? dst - 1 : dst, 0, ...not, name, shown);
        continue;
      }
    }
    rest.push(...not, name, ...(option.values === 0 ? [] : [shown, ...values.slice(1)]));
  }
  if (negate) throw new RestoreFailure('"!" is not followed by an option');
  if (addrtypes.some((a) => !a.typed)) throw new RestoreFailure('addrtype: you must specify --src-type or --dst-type');
  if (needsPortProto && proto !== 'tcp' && proto !== 'udp' && proto !== 'sctp') {
    throw new RestoreFailure("multiport needs `-p tcp', `-p udp', `-p udplite', `-p sctp' or `-p dccp'");
  }
  if (target === 'REJECT' && !rest.includes('--reject-with')) rest.push('--reject-with', 'icmp-port-unreachable');
  if (target !== undefined) {
    const known = TARGETS[target];
    if (known && !known.tables.includes(table)) {
      throw new RestoreFailure(target === 'DROP' && table === 'nat'
        ? 'The "nat" table is not intended for filtering, the use of DROP is therefore inhibited.'
        : `target ${target} is not valid in the ${table} table`);
    }
  }
  const ordered = ['-s', '-d', '-i', '-o', '-p'].flatMap((k) => base[k] ?? []);
  // xt_TCPMSS is registered for TCP only: the kernel's x_tables check refuses it on a rule not limited to -p tcp.
  const refused = target === 'TCPMSS' && base['-p']?.join(' ') !== '-p tcp' ? 'Invalid argument' : undefined;
  return { body: [...ordered, ...rest].join(' '), target, sets, modules: [...modules], ...(refused ? { refused } : {}) };
}

/**
 * Checks a table as the kernel does when the transaction commits: no loops, NAT targets and hook-bound matches
 * only under their hooks (a chain nothing reaches may hold them: the kernel checks a rule where it is reached).
 * A hook problem comes with the rules that make it: the jumps from the hook down to the chain, and the rule.
 */
function checkTable(table: Table, name: FakeTable): { reason: string; rules: readonly Rule[] } | undefined {
  const jumpsOf = (chain: Chain) => chain.rules.map((r) => r.target).filter((t): t is string => t !== undefined && table.has(t) && !table.get(t)!.builtin);
  // Loops: depth-first search from every chain.
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (chain: string): boolean => {
    if (state.get(chain) === 'done') return false;
    if (state.get(chain) === 'visiting') return true;
    state.set(chain, 'visiting');
    const loop = jumpsOf(table.get(chain)!).some(visit);
    state.set(chain, 'done');
    return loop;
  };
  for (const chain of table.keys()) if (visit(chain)) return { reason: 'Too many links (a loop of jumps)', rules: [] };
  // Hooks: which built-in chains reach each user chain.
  for (const hook of BUILTIN[name]) {
    const seen = new Set<string>();
    const walk = (chain: string): { reason: string; rules: readonly Rule[] } | undefined => {
      if (seen.has(chain)) return undefined;
      seen.add(chain);
      const c = table.get(chain)!;
      for (const rule of c.rules) {
        const hooks = rule.target ? TARGETS[rule.target]?.hooks : undefined;
        if (hooks && !hooks.includes(hook)) return { reason: `Invalid argument (${rule.target} in ${chain} is reached from ${hook})`, rules: [rule] };
        const match = rule.modules.find((m) => MATCH_HOOKS[m] && !MATCH_HOOKS[m].includes(hook));
        if (match) return { reason: `Invalid argument (-m ${match} in ${chain} is reached from ${hook})`, rules: [rule] };
      }
      for (const jump of c.rules.filter((r) => r.target !== undefined && table.has(r.target) && !table.get(r.target)!.builtin)) {
        const problem = walk(jump.target!);
        if (problem) return { reason: problem.reason, rules: [jump, ...problem.rules] };
      }
      return undefined;
    };
    const problem = walk(hook);
    if (problem) return problem;
  }
  return undefined;
}

function formatTable(name: FakeTable, table: Table, counters: boolean): string[] {
  const chains = [
    ...BUILTIN[name].map((c) => table.get(c)!),
    ...[...table.values()].filter((c) => !c.builtin).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
  ];
  return [
    `*${name}`,
    ...chains.map((c) => `:${c.name} ${c.builtin ? c.policy : '-'} [${c.builtin ? c.packets : 0}:${c.builtin ? c.bytes : 0}]`),
    ...chains.flatMap((c) => c.rules.map((r) => `${counters ? `[${r.packets}:${r.bytes}] ` : ''}-A ${c.name}${r.body ? ` ${r.body}` : ''}`)),
    'COMMIT',
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Links

interface FakeLink {
  index: number;
  name: string;
  mac: string;
  up: boolean;
  /** Carrier (LOWER_UP) while up; false: `ip link` says NO-CARRIER (cable out, peer down). */
  carrier: boolean;
  loopback: boolean;
  addresses: FakeAddress[];
}

interface FakeAddress {
  readonly address: string;
  readonly prefix: number;
  /** The prefix-route metric `ip addr add … metric N` gave it; 0 (not shown, as by iproute2) when none. */
  readonly metric: number;
  /** Added while the link already had an address in the same network with the same prefix length. */
  readonly secondary: boolean;
}

/**
 * Adds an address the way the kernel lists it: a secondary at the end, a primary after the last primary.
 * Returns false when the link has it already (same address and prefix length).
 */
function insertAddress(list: FakeAddress[], cidr: { address: string; prefix: number }, metric: number): boolean {
  if (list.some((a) => a.address === cidr.address && a.prefix === cidr.prefix)) return false;
  const secondary = list.some((a) => a.prefix === cidr.prefix && sameNetwork(a.address, cidr.address, cidr.prefix));
  const lastPrimary = list.reduce((last, a, i) => (a.secondary ? last : i), -1);
  list.splice(secondary ? list.length : lastPrimary + 1, 0, { ...cidr, metric, secondary });
  return true;
}

/** Removes an address; removing a primary takes its secondaries with it (promote_secondaries is 0, the default). */
function removeAddress(list: FakeAddress[], cidr: { address: string; prefix: number }): boolean {
  const gone = list.find((a) => a.address === cidr.address && a.prefix === cidr.prefix);
  if (!gone) return false;
  const keep = list.filter((a) => a !== gone
    && (gone.secondary || !(a.secondary && a.prefix === gone.prefix && sameNetwork(a.address, gone.address, gone.prefix))));
  list.splice(0, list.length, ...keep);
  return true;
}

const toNumber = (address: string) => address.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const sameNetwork = (a: string, b: string, prefix: number) => {
  const block = 2 ** (32 - prefix);
  return Math.floor(toNumber(a) / block) === Math.floor(toNumber(b) / block);
};

/** `ip addr add`'s metric (also spelled priority or preference): a 32-bit unsigned integer. */
function parseMetricArg(text: string | undefined): number {
  if (text === undefined || !/^\d+$/.test(text) || Number(text) > 4294967295) {
    throw new Error(`Error: argument "${text ?? ''}" is wrong: "metric" value is invalid\n`);
  }
  return Number(text);
}

/** A FakeLinkSpec address: `CIDR` or `CIDR metric N`. */
function parseSpecAddress(text: string): { cidr: { address: string; prefix: number }; metric: number } {
  const [cidr, keyword, metric, ...extra] = text.trim().split(/\s+/);
  if ((keyword !== undefined && keyword !== 'metric') || extra.length > 0) throw new Error(`fake: bad address spec "${text}"`);
  return { cidr: parseCidrArg(cidr), metric: keyword === undefined ? 0 : parseMetricArg(metric) };
}

function parseCidrArg(text: string | undefined): { address: string; prefix: number } {
  const m = /^([\d.]+)(?:\/(\d{1,2}))?$/.exec(text ?? '');
  if (!m || !IPV4.test(m[1]!) || Number(m[2] ?? 32) > 32) throw new Error(`Error: any valid prefix is expected rather than "${text}".`);
  return { address: m[1]!, prefix: Number(m[2] ?? 32) };
}

/** A MAC address Docker would give a NIC with this address (02:42 + the IPv4 octets). */
export function dockerMac(cidr: string): string {
  const address = cidr.split('/')[0]!;
  return `02:42:${address.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join(':')}`;
}

/** A default route; the kernel keys it by TOS and metric (another of either is another route). */
interface FakeRoute {
  readonly tos: number;
  readonly metric: number;
  readonly gateway: string;
  readonly dev: string;
  /** As given (`proto 122`); absent for boot, the default, which iproute2 does not print. */
  readonly proto?: string;
}

/** As `ip route` prints it (`default tos 0x10 via G dev D proto 122 metric 5`). */
const formatTos = (tos: number) => `0x${tos.toString(16).padStart(2, '0')}`;
const routeText = (r: FakeRoute) => `default${r.tos ? ` tos ${formatTos(r.tos)}` : ''} via ${r.gateway} dev ${r.dev}`
  + `${r.proto ? ` proto ${r.proto}` : ''}${r.metric ? ` metric ${r.metric}` : ''}`;

/**
 * The words of `ip route add|replace|del default …` after `default`, by keyword; undefined (with the fake's
 * message) for anything it does not know.
 */
function parseRouteWords(words: readonly string[]): { tos?: number; via?: string; dev?: string; proto?: string; metric?: number } | string {
  const out: { tos?: number; via?: string; dev?: string; proto?: string; metric?: number } = {};
  for (let i = 0; i < words.length; i += 2) {
    const [key, value] = [words[i]!, words[i + 1]];
    if (value === undefined) return `Error: argument "${key}" is wrong: missing value`;
    if (key === 'tos' || key === 'dsfield') {
      if (!/^(0x[\da-f]{1,2}|\d{1,3})$/i.test(value) || Number(value) > 255) return `Error: argument "${value}" is wrong: TOS value is invalid`;
      out.tos = Number(value);
    } else if (key === 'via') out.via = value;
    else if (key === 'dev') out.dev = value;
    else if (key === 'proto' || key === 'protocol') out.proto = value;
    else if (key === 'metric' || key === 'priority' || key === 'preference') {
      if (!/^\d+$/.test(value)) return `Error: argument "${value}" is wrong: "metric" value is invalid`;
      out.metric = Number(value);
    } else return `fake: unsupported ip route option "${key}"`;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The fake

/** Docker's DNS chains as a container's namespace holds them (seed them into a backend of a test's choosing). */
export const DOCKER_DNS_RULES = `*nat
:DOCKER_OUTPUT - [0:0]
:DOCKER_POSTROUTING - [0:0]
-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT
-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:41641
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:35361
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p tcp -m tcp --sport 41641 -j SNAT --to-source :53
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p udp -m udp --sport 35361 -j SNAT --to-source :53
COMMIT
`;

type Output = { stdout?: string; stderr?: string; exitCode?: number };

export class FakeNetns implements CommandRunner {
  private readonly links: FakeLink[] = [];
  private nextIndex = 1;
  /** The main table's default routes, in the kernel's order (by TOS, highest first, then metric). */
  private routes: FakeRoute[] = [];
  private readonly sysctls: Map<string, string>;
  private readOnly: boolean;
  private readonly rulesets: { nft: Ruleset; legacy: Ruleset | undefined };
  /** Legacy tables that exist in the kernel (a legacy restore instantiates its tables). */
  private readonly legacyTables = new Set<FakeTable>();
  private readonly ipsets = new Map<string, IpSet>();
  private lingering = 0;
  private busySets = { times: 0, set: undefined as string | undefined };
  private ipsetInstalled: boolean;
  private readonly conntrackInstalled: boolean;
  /** The UDP flows conntrack tracks, in the order they started. */
  private flows: FakeFlow[] = [];
  private readonly pending: FaultSpec[] = [];
  private readonly persistent: FaultSpec[] = [];
  private readonly monitors: Array<(line: string) => void> = [];
  /** Every command run, for a failing test's message (not for assertions: compare snapshots instead). */
  readonly history: string[] = [];
  /** What `ip netns exec` knows this namespace as. */
  readonly name: string;

  constructor(options: FakeNetnsOptions = {}) {
    this.name = options.name ?? 'vgw-fake';
    this.addLink({ name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, addresses: ['127.0.0.1/8'] });
    for (const link of options.links ?? []) this.addLink(link);
    if (options.defaultRoute) this.routes.push({ tos: 0, metric: 0, ...options.defaultRoute });
    this.sysctls = new Map(Object.entries({ 'net.ipv4.ip_forward': '0', ...options.sysctls }));
    this.readOnly = options.readOnlySysctls ?? false;
    this.rulesets = { nft: emptyRuleset(), legacy: options.legacy === 'installed' ? emptyRuleset() : undefined };
    this.ipsetInstalled = options.ipset ?? true;
    this.conntrackInstalled = options.conntrack ?? true;
    if (options.dockerDns) this.seed('nft', DOCKER_DNS_RULES);
  }

  // ---- test controls -------------------------------------------------------------------------------------------

  /**
   * A UDP datagram arriving on `nic`, as conntrack and the nat table's PREROUTING take it: the flow of its tuple if
   * conntrack has one (its NAT was decided by its first datagram), else a new flow, DNATed by the first DNAT rule of
   * PREROUTING that matches it (the rules of the backend holding the gateway's chains are walked: -i, -p, --dport and
   * addrtype's --dst-type LOCAL, jumps and RETURN; any other match is refused, so a test cannot pass on a rule the fake
   * does not understand). Returns where it goes: the flow's reply source. Source NAT is not modelled.
   */
  udpDatagram(datagram: { nic: string; src: string; sport: number; dst: string; dport: number }): { address: string; port: number } {
    const { src, sport, dst, dport } = datagram;
    let flow = this.flows.find((f) => f.original.src === src && f.original.sport === sport && f.original.dst === dst && f.original.dport === dport);
    if (!flow) {
      const dnat = this.preroutingDnat(datagram);
      flow = { original: { src, dst, sport, dport }, reply: { src: dnat?.address ?? dst, dst: src, sport: dnat?.port ?? dport, dport: sport } };
      this.flows.push(flow);
    }
    return { address: flow.reply.src, port: flow.reply.sport };
  }

  /** The UDP flows conntrack has now. */
  conntrackFlows(): readonly FakeFlow[] {
    return this.flows;
  }

  private preroutingDnat(d: { nic: string; dst: string; dport: number }): { address: string; port: number } | undefined {
    const backend: FakeBackend = this.rulesets.legacy && [...this.rulesets.legacy.nat.keys()].some((c) => c.startsWith('VGW-')) ? 'legacy' : 'nft';
    const nat = this.rulesets[backend]!.nat;
    const local = this.links.some((l) => l.addresses.some((a) => a.address === d.dst));
    const walk = (chainName: string, depth: number): { address: string; port: number } | 'accept' | undefined => {
      if (depth > 16) throw new Error('fake: PREROUTING loops');
      for (const rule of nat.get(chainName)?.rules ?? []) {
        const words = tokenize(rule.body);
        let matches = true;
        let jump: string | undefined;
        let to: string | undefined;
        for (let i = 0; i < words.length; i++) {
          const word = words[i]!;
          const value = words[i + 1];
          i++;
          if (word === '-m' || word === '--comment') continue;
          if (word === '-i') matches &&= value === d.nic;
          else if (word === '-p') matches &&= value === 'udp';
          else if (word === '--dst-type') matches &&= value === 'LOCAL' && local;
          else if (word === '--dport') {
            const [low, high = low] = (value ?? '').split(':').map(Number);
            matches &&= d.dport >= low! && d.dport <= high!;
          } else if (word === '-j') jump = value;
          else if (word === '--to-destination') to = value;
          else throw new Error(`fake: udpDatagram cannot evaluate "${word}" in nat ${chainName}: ${rule.body}`);
        }
        if (!matches) continue;
        if (jump === 'DNAT') {
          const [address, ports] = (to ?? '').split(':');
          return { address: address!, port: ports === undefined ? d.dport : Number(ports.split('-')[0]) };
        }
        if (jump === 'ACCEPT') return 'accept';
        if (jump === 'RETURN') return undefined;
        if (jump !== undefined && nat.has(jump)) {
          const found = walk(jump, depth + 1);
          if (found !== undefined) return found;
          continue;
        }
        if (jump !== undefined) throw new Error(`fake: udpDatagram cannot evaluate target ${jump} in nat ${chainName}`);
      }
      return undefined;
    };
    const found = walk('PREROUTING', 0);
    return found === 'accept' ? undefined : found;
  }

  /** Attaches a NIC, as `docker network connect` does (a new ifindex every time). */
  addLink(spec: FakeLinkSpec): void {
    if (this.links.some((l) => l.name === spec.name)) throw new Error(`fake: link ${spec.name} exists`);
    const addresses: FakeAddress[] = [];
    for (const text of spec.addresses ?? []) {
      const { cidr, metric } = parseSpecAddress(text);
      if (!insertAddress(addresses, cidr, metric)) throw new Error(`fake: ${spec.name} lists ${text} twice`);
    }
    this.links.push({
      index: this.nextIndex++,
      name: spec.name,
      mac: (spec.mac ?? (spec.addresses?.[0] ? dockerMac(spec.addresses[0]) : '02:00:00:00:00:01')).toLowerCase(),
      up: spec.up ?? true,
      carrier: true,
      loopback: spec.loopback ?? false,
      addresses,
    });
    this.notify(`${this.nextIndex - 1}: ${spec.name}: <BROADCAST,MULTICAST,UP,LOWER_UP>`);
  }

  /** Detaches a NIC (`docker network disconnect`): its addresses go, and so do the default routes through it. */
  removeLink(name: string): void {
    const i = this.links.findIndex((l) => l.name === name);
    if (i < 0) throw new Error(`fake: no link ${name}`);
    this.links.splice(i, 1);
    this.routes = this.routes.filter((r) => r.dev !== name);
    this.notify(`Deleted ${name}`);
  }

  /** The NIC's carrier lost (cable out, peer down: `ip link` says NO-CARRIER) or back; the kernel's link event follows. */
  setCarrier(name: string, carrier: boolean): void {
    const link = this.links.find((l) => l.name === name);
    if (!link) throw new Error(`fake: no link ${name}`);
    link.carrier = carrier;
    this.notify(`${link.index}: ${name}: <${carrier ? 'BROADCAST,MULTICAST,UP,LOWER_UP' : 'NO-CARRIER,BROADCAST,MULTICAST,UP'}>`);
  }

  hasLink(name: string): boolean {
    return this.links.some((l) => l.name === name);
  }

  setReadOnlySysctls(readOnly: boolean): void {
    this.readOnly = readOnly;
  }

  /** Installs or removes iptables-legacy (an installed one starts empty; seed it with seed('legacy', …)). */
  setLegacy(mode: 'absent' | 'installed'): void {
    this.rulesets.legacy = mode === 'installed' ? (this.rulesets.legacy ?? emptyRuleset()) : undefined;
  }

  /** Runs restore text (with --noflush --counters) against a backend, for setting up a scene; throws on error. */
  seed(backend: FakeBackend, text: string): void {
    const result = this.restore(`iptables-${backend}-restore`, backend, ['--noflush', '--counters'], text);
    if ((result.exitCode ?? 0) !== 0) throw new Error(`fake: seed failed: ${result.stderr}`);
  }

  /** Fails the next command the spec matches (once). `{ table: 'nat' }` fails the next restore that writes nat. */
  failNext(spec: FaultSpec): void {
    this.pending.push(spec);
  }

  /** Fails every command the predicate matches until clearFaults(). */
  failOn(match: (argv: readonly string[], input: string | undefined) => boolean, spec: Omit<FaultSpec, 'match'> = {}): void {
    this.persistent.push({ ...spec, match });
  }

  /**
   * As iptables-nft leaves a set after the last rule matching on it is deleted: still referenced for the next
   * `reads` reads of `ipset list -t` (the kernel lets go in a work item after the restore has returned), and
   * refused to `destroy` meanwhile. Every set, for simplicity.
   */
  lingerReferences(reads: number): void {
    this.lingering = reads;
  }

  /**
   * As the kernel refuses to swap or destroy a set while another process dumps it (the stats collector's `ipset save`
   * holds each set it prints): the next `times` swap and destroy lines of `ipset restore` (of `set` only, one of a
   * swap's two names, when given) fail with EBUSY in ipset 7.17's words (checked on kernel 6.18), the lines before them
   * having taken effect.
   */
  refuseAsBusy(times: number, set?: string): void {
    this.busySets = { times, set };
  }

  clearFaults(): void {
    this.pending.length = 0;
    this.persistent.length = 0;
    this.busySets = { times: 0, set: undefined };
  }

  /** Traffic: every rule of every chain in the backend's tables counts `packets` more packets. */
  countPackets(packets = 1, bytes = 84, backend: FakeBackend = 'nft'): void {
    const ruleset = this.rulesets[backend];
    if (!ruleset) return;
    for (const table of TABLE_NAMES) {
      for (const chain of ruleset[table].values()) {
        for (const rule of chain.rules) {
          rule.packets += packets;
          rule.bytes += bytes;
        }
      }
    }
  }

  /** iptables-save text of one backend (what the real `iptables-<backend>-save [-c]` prints, minus the date). */
  save(backend: FakeBackend = 'nft', counters = false): string {
    const ruleset = this.rulesets[backend];
    if (!ruleset) return '';
    const lines = this.tablesOf(backend).flatMap((t) => formatTable(t, ruleset[t], counters));
    return lines.length > 0 ? `${lines.join('\n')}\n` : '';
  }

  /** The tables a backend has: nft always both (a simplification), legacy those that were instantiated. */
  private tablesOf(backend: FakeBackend): FakeTable[] {
    return backend === 'nft' ? [...TABLE_NAMES] : TABLE_NAMES.filter((t) => this.legacyTables.has(t));
  }

  /** `ipset save` text (members with counters when asked), sets and members sorted. */
  saveSets(counters = false, only?: string): string {
    const out: string[] = [];
    for (const [name, set] of [...this.ipsets].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (only !== undefined && name !== only) continue;
      // The kernel prints the bucket size and the hash's seed too; the fake only a bucket size it has raised.
      const bucketsize = set.bucketsize === BUCKET_FIRST ? '' : ` bucketsize ${set.bucketsize} initval 0x00000000`;
      out.push(`create ${name} ${set.type} family inet hashsize ${set.hashsize} maxelem ${set.maxelem} counters${bucketsize}`);
      // The kernel lists members in hash order; the fake sorts them, so history does not show.
      for (const [member, c] of [...set.members].sort(([a], [b]) => (a < b ? -1 : 1))) out.push(`add ${name} ${member}${counters ? ` packets ${c.packets} bytes ${c.bytes}` : ''}`);
    }
    return out.length > 0 ? `${out.join('\n')}\n` : '';
  }

  /**
   * The whole namespace as deterministic text: links (by name, without ifindex, which a re-attached NIC changes)
   * with their addresses, the default routes, sysctls, and both backends' rule sets without counters.
   */
  snapshot(): string {
    const out: string[] = ['# links'];
    for (const link of [...this.links].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      out.push(`${link.name} ${link.mac} ${link.up ? 'up' : 'down'}${link.loopback ? ' loopback' : ''}`);
      for (const a of link.addresses) out.push(`    inet ${a.address}/${a.prefix}${a.metric ? ` metric ${a.metric}` : ''}`);
    }
    out.push('# route', ...(this.routes.length > 0 ? this.routes.map(routeText) : ['(no default route)']));
    out.push('# sysctls', ...[...this.sysctls].sort().map(([k, v]) => `${k} = ${v}`));
    out.push('# iptables-nft', this.save('nft').trimEnd());
    out.push('# iptables-legacy', this.rulesets.legacy ? this.save('legacy').trimEnd() || '(no tables)' : '(not installed)');
    out.push('# ipsets', this.saveSets().trimEnd() || '(none)');
    return `${out.join('\n')}\n`;
  }

  // ---- CommandRunner -------------------------------------------------------------------------------------------

  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    this.history.push(argv.join(' '));
    const result = this.dispatch(argv, options.input);
    let stdout = result.stdout ?? '';
    if (options.onStdout) {
      // In two pieces split mid-line, as a pipe may deliver it.
      const cut = Math.floor(stdout.length / 2);
      for (const piece of [stdout.slice(0, cut), stdout.slice(cut)]) if (piece !== '') options.onStdout(piece);
      stdout = '';
    }
    const out: RunResult = { stdout, stderr: result.stderr ?? '', exitCode: result.exitCode ?? 0 };
    if (out.exitCode !== 0 && !options.allowFailure) throw new CommandError(argv, out.exitCode, out.stderr, out.stdout);
    return out;
  }

  start(argv: readonly string[]): Child {
    if (argv[0] !== 'ip' || !argv.includes('monitor')) throw new CommandError(argv, null, `${argv[0]}: not found (the fake only starts "ip monitor")`);
    const listeners: Array<(line: string) => void> = [];
    let resolve!: (code: number | null) => void;
    const exited = new Promise<number | null>((r) => {
      resolve = r;
    });
    const forward = (line: string) => listeners.forEach((l) => l(line));
    this.monitors.push(forward);
    return {
      pid: undefined,
      onLine: (listener) => void listeners.push(listener),
      exited,
      stop: async () => {
        const i = this.monitors.indexOf(forward);
        if (i >= 0) this.monitors.splice(i, 1);
        resolve(null);
        await exited;
      },
    };
  }

  private notify(line: string): void {
    for (const monitor of this.monitors) monitor(line);
  }

  private dispatch(argv: readonly string[], input: string | undefined): Output {
    const fault = this.takeFault(argv, input);
    if (fault?.killed) {
      if (fault.afterLines !== undefined) {
        const part = fault.afterLines === Infinity ? input : `${(input ?? '').split('\n').slice(0, fault.afterLines).join('\n')}\n`;
        this.execute(argv, part);
      }
      throw new CommandError(argv, null, `killed by ${fault.killed}`);
    }
    if (fault) {
      if (fault.afterLines !== undefined) this.execute(argv, `${(input ?? '').split('\n').slice(0, fault.afterLines).join('\n')}\n`);
      return { stderr: fault.stderr ?? `${argv[0]}: injected failure\n`, exitCode: fault.exitCode ?? 1 };
    }
    return this.execute(argv, input);
  }

  private execute(argv: readonly string[], input: string | undefined): Output {
    const [program, ...args] = argv;
    const iptables = /^iptables(?:-(nft|legacy))?-(save|restore)$/.exec(program ?? '');
    if (iptables) {
      const backend: FakeBackend = iptables[1] === 'legacy' ? 'legacy' : 'nft';
      if (!this.rulesets[backend]) throw new CommandError(argv, null, 'not found', '', true);
      return iptables[2] === 'save' ? this.saveCommand(program!, backend, args) : this.restore(program!, backend, args, input ?? '');
    }
    if (program === 'ip') return this.ip(args, input);
    if (program === 'cat') return this.cat(args);
    if (program === 'ipset') {
      if (!this.ipsetInstalled) throw new CommandError(argv, null, 'not found', '', true);
      return this.ipset(args, input ?? '');
    }
    if (program === 'sysctl') return this.sysctl(args);
    if (program === 'conntrack') {
      if (!this.conntrackInstalled) throw new CommandError(argv, null, 'not found', '', true);
      return this.conntrack(args);
    }
    throw new CommandError(argv, null, `${program}: not found (the fake does not implement it)`, '', true);
  }

  /** A pending or persistent fault for this command; table faults are handled inside restore. */
  private takeFault(argv: readonly string[], input: string | undefined): FaultSpec | undefined {
    const i = this.pending.findIndex((f) => f.table === undefined && f.match?.(argv, input));
    if (i >= 0) return this.pending.splice(i, 1)[0];
    return this.persistent.find((f) => f.table === undefined && f.match?.(argv, input));
  }

  // ---- iptables ------------------------------------------------------------------------------------------------

  private saveCommand(program: string, backend: FakeBackend, args: readonly string[]): Output {
    const counters = args.includes('-c') || args.includes('--counters');
    const t = args.indexOf('-t');
    const only = t >= 0 ? args[t + 1] : undefined;
    if (only !== undefined && !TABLE_NAMES.includes(only as FakeTable)) {
      return { stderr: `${program}: Unable to open table ${only}\n`, exitCode: 1 };
    }
    const ruleset = this.rulesets[backend]!;
    const version = backend === 'nft' ? 'v1.8.9 (nf_tables)' : 'v1.8.9 (legacy)';
    const stdout = TABLE_NAMES.filter((name) => only === undefined || name === only).flatMap((name) => [
      `# Generated by ${program} ${version} on Thu Jan  1 00:00:00 1970`,
      ...formatTable(name, ruleset[name], counters),
      '# Completed on Thu Jan  1 00:00:00 1970',
    ]).join('\n');
    return { stdout: `${stdout}\n` };
  }

  private restore(program: string, backend: FakeBackend, args: readonly string[], input: string): Output {
    const flags = new Set(args);
    for (const flag of flags) {
      if (!['--noflush', '-n', '--wait', '-w', '--counters', '-c', '--test', '-t'].includes(flag) && !/^--wait=\d+$/.test(flag)) {
        return { stderr: `${program}: unrecognized option '${flag}'\n`, exitCode: 2 };
      }
    }
    const noflush = flags.has('--noflush') || flags.has('-n');
    const counters = flags.has('--counters') || flags.has('-c');
    const test = flags.has('--test') || flags.has('-t');
    const ruleset = this.rulesets[backend]!;
    const lines = input.split('\n');
    /** The table being written; `added`: the rules this restore adds to it, with their line and chain. */
    let open: { name: FakeTable; work: Table; fault: FaultSpec | undefined; added: Map<Rule, { n: number; chain: string; insert: boolean }> } | undefined;
    for (let n = 1; n <= lines.length; n++) {
      const line = lines[n - 1]!.trim();
      if (line === '' || line.startsWith('#')) continue;
      try {
        if (open?.fault && line !== `*${open.name}` && !line.startsWith(':')) {
          throw new RestoreFailure(open.fault.stderr ?? 'Operation not permitted (injected fault)');
        }
        if (line.startsWith('*')) {
          if (open) throw new RestoreFailure(`COMMIT expected before *${line.slice(1)}`);
          const name = line.slice(1);
          if (!TABLE_NAMES.includes(name as FakeTable)) throw new RestoreFailure(`Table '${name}' does not exist`);
          if (backend === 'legacy' && !test) this.legacyTables.add(name as FakeTable);
          const work = cloneTable(ruleset[name as FakeTable]);
          if (!noflush) {
            for (const [chainName, chain] of [...work]) {
              if (chain.builtin) chain.rules = [];
              else work.delete(chainName);
            }
          }
          open = { name: name as FakeTable, work, fault: this.takeTableFault(name as FakeTable), added: new Map() };
        } else if (line === 'COMMIT') {
          if (!open) throw new RestoreFailure('COMMIT without a table');
          // What the kernel refuses, it refuses when the table reaches it: --test never gets there.
          if (!test) {
            const refused = this.kernelRefusal(program, backend, open.work, open.name, open.added);
            if (refused) return refused;
          }
          if (!test) ruleset[open.name] = open.work;
          open = undefined;
        } else if (!open) {
          throw new RestoreFailure('no table specified');
        } else if (line.startsWith(':')) {
          this.declare(open.work, line, counters);
        } else {
          const rule = this.command(open.work, open.name, line, counters);
          if (rule) open.added.set(rule, { n, chain: /^\S+ (\S+)/.exec(line)![1]!, insert: /^(-I|--insert) /.test(line) });
        }
      } catch (error) {
        if (!(error instanceof RestoreFailure)) throw error;
        if (error instanceof CommitRefused) return { stderr: `${program}: line ${n} failed\n`, exitCode: 1 };
        return restoreError(program, backend, open?.fault?.format ?? 'line-failed', n, line, error.message);
      }
    }
    const lineCount = input.endsWith('\n') ? lines.length - 1 : lines.length;
    if (open) return { stderr: `${program}: COMMIT expected at line ${lineCount + 1}\n`, exitCode: 1 };
    return {};
  }

  /**
   * The kernel's verdict on a table as it is committed (see checkTable), said as the backend says it (checked on this
   * machine, iptables 1.8.9, kernel 6.18). iptables-nft hands the kernel one rule at a time, and the kernel checks each
   * as it is added: each rule it refuses for itself (TCPMSS without -p tcp) is named by its line, `line N: RULE_APPEND
   * failed (Invalid argument): rule in chain C` (exit 4); failing none, a match or target outside its hooks is named at
   * the line that made it reachable (the rule, or the jump to its chain, whichever came later; RULE_INSERT for an -I).
   * iptables-legacy hands the kernel the table whole: `line N failed` at the COMMIT line (exit 1), and nothing else.
   * Not modelled: TCPMSS's wish for a SYN match and its hook check (iptables-legacy only), loops as nft says them.
   */
  private kernelRefusal(program: string, backend: FakeBackend, work: Table, table: FakeTable, added: ReadonlyMap<Rule, { n: number; chain: string; insert: boolean }>): Output | undefined {
    const inTable = (rule: Rule) => [...work.values()].some((c) => c.rules.includes(rule));
    const refused = [...added].filter(([rule]) => rule.refused !== undefined && inTable(rule));
    const problem = refused.length > 0 ? undefined : checkTable(work, table);
    if (refused.length === 0 && !problem) return undefined;
    const first = problem?.rules.flatMap((rule) => added.get(rule) ?? []).sort((a, b) => b.n - a.n)[0];
    // Once one is refused so, every jump from a built-in chain added after it is refused too (seen with our hook jumps).
    const lines = !problem ? refused.map(([, at]) => at) : !first ? []
      : [first, ...[...added].filter(([rule, at]) => at.n > first.n && BUILTIN[table].includes(at.chain) && rule.target !== undefined && work.has(rule.target)
        && !work.get(rule.target)!.builtin).map(([, at]) => at)];
    // iptables-legacy says only which line (COMMIT) failed, no errno and no chain: exactly that, so that no test can
    // lean on words it never prints (a reason naming the user's chain once made the product look as if it named one).
    if (backend === 'legacy') throw new CommitRefused();
    if (lines.length === 0) throw new RestoreFailure(problem?.reason ?? refused[0]![0].refused!);
    const reason = problem ? 'Invalid argument' : refused[0]![0].refused!;
    const named = lines.map(({ n, chain, insert }) => `line ${n}: RULE_${insert ? 'INSERT' : 'APPEND'} failed (${reason}): rule in chain ${chain}\n`).join('');
    return { stderr: `${program} v1.8.9 (nf_tables): \n${named}`, exitCode: 4 };
  }

  private takeTableFault(table: FakeTable): FaultSpec | undefined {
    const i = this.pending.findIndex((f) => f.table === table);
    if (i >= 0) return this.pending.splice(i, 1)[0];
    return this.persistent.find((f) => f.table === table);
  }

  private declare(work: Table, line: string, counters: boolean): void {
    const m = /^:(\S+) (\S+)(?: \[(\d+):(\d+)\])?$/.exec(line);
    if (!m) throw new RestoreFailure('Bad chain declaration');
    const [, name, policy, packets, bytes] = m as unknown as [string, string, string, string?, string?];
    if (name.length > 28) throw new RestoreFailure(`chain name \`${name}' too long (must be under 29 chars)`);
    const existing = work.get(name);
    if (existing?.builtin) {
      if (policy !== 'ACCEPT' && policy !== 'DROP') throw new RestoreFailure(`Bad built-in chain policy ${policy}`);
      existing.policy = policy;
      if (counters) {
        existing.packets = Number(packets ?? 0);
        existing.bytes = Number(bytes ?? 0);
      }
      return;
    }
    if (policy !== '-') throw new RestoreFailure(`Can't set policy \`${policy}' on user-defined chain \`${name}'`);
    if (/^(ACCEPT|DROP|RETURN|QUEUE)$/.test(name) || TARGETS[name]) throw new RestoreFailure(`chain name \`${name}' is a target name`);
    if (existing) existing.rules = []; // --noflush: a declared user chain is flushed and refilled
    else work.set(name, { name, builtin: false, policy: '-', packets: 0, bytes: 0, rules: [] });
  }

  /** Runs one command line of a restore; returns the rule it added, if it added one. */
  private command(work: Table, table: FakeTable, line: string, counters: boolean): Rule | undefined {
    let tokens = tokenize(line);
    let packets = 0;
    let bytes = 0;
    const counted = /^\[(\d+):(\d+)\]$/.exec(tokens[0] ?? '');
    if (counted) {
      if (counters) {
        packets = Number(counted[1]);
        bytes = Number(counted[2]);
      }
      tokens = tokens.slice(1);
    }
    const [command, chainName, ...rest] = tokens;
    const chainOf = (name: string | undefined): Chain => {
      const chain = name === undefined ? undefined : work.get(name);
      if (!chain) throw new RestoreFailure(`No chain/target/match by that name (chain ${name ?? '?'})`);
      return chain;
    };
    const ruleFrom = (body: readonly string[]): Rule => {
      const { body: normal, target, sets, modules, refused } = normaliseRule(body, table);
      const missing = sets.find((name) => !this.ipsets.has(name));
      if (missing !== undefined) throw new RestoreFailure(`Set ${missing} doesn't exist.`);
      if (target !== undefined && !TARGETS[target]) {
        const chain = work.get(target);
        if (!chain) throw new RestoreFailure(`Couldn't load target \`${target}':No such file or directory`);
        if (chain.builtin) throw new RestoreFailure(`cannot jump to the built-in chain ${target}`);
      }
      return { body: normal, target, sets, modules, ...(refused ? { refused } : {}), packets, bytes };
    };
    switch (command) {
      case '-A':
      case '--append': {
        const chain = chainOf(chainName);
        const rule = ruleFrom(rest);
        chain.rules.push(rule);
        return rule;
      }
      case '-I':
      case '--insert': {
        const chain = chainOf(chainName);
        const position = rest[0] !== undefined && /^\d+$/.test(rest[0]) ? Number(rest.shift()) : 1;
        if (position < 1 || position > chain.rules.length + 1) throw new RestoreFailure('Index of insertion too big.');
        const rule = ruleFrom(rest);
        chain.rules.splice(position - 1, 0, rule);
        return rule;
      }
      case '-D':
      case '--delete': {
        const chain = chainOf(chainName);
        if (rest.length === 1 && /^\d+$/.test(rest[0]!)) {
          const index = Number(rest[0]);
          if (index < 1 || index > chain.rules.length) throw new RestoreFailure('Index of deletion too big.');
          chain.rules.splice(index - 1, 1);
          return;
        }
        const { body } = normaliseRule(rest, table);
        const index = chain.rules.findIndex((r) => r.body === body);
        if (index < 0) throw new RestoreFailure('Bad rule (does a matching rule exist in that chain?).');
        chain.rules.splice(index, 1);
        return;
      }
      case '-N':
      case '--new-chain':
        if (chainName === undefined || work.has(chainName)) throw new RestoreFailure('Chain already exists.');
        work.set(chainName, { name: chainName, builtin: false, policy: '-', packets: 0, bytes: 0, rules: [] });
        return;
      case '-F':
      case '--flush':
        if (chainName === undefined) for (const chain of work.values()) chain.rules = [];
        else chainOf(chainName).rules = [];
        return;
      case '-X':
      case '--delete-chain': {
        const chain = chainOf(chainName);
        if (chain.builtin) throw new RestoreFailure(`Cannot delete built-in chain ${chain.name}`);
        const referenced = [...work.values()].some((c) => c.rules.some((r) => r.target === chain.name));
        if (referenced || chain.rules.length > 0) throw new RestoreFailure(`CHAIN_DEL failed (Device or resource busy): chain ${chain.name}`);
        work.delete(chain.name);
        return;
      }
      case '-P':
      case '--policy': {
        const chain = chainOf(chainName);
        if (!chain.builtin || (rest[0] !== 'ACCEPT' && rest[0] !== 'DROP')) throw new RestoreFailure('Bad policy name');
        chain.policy = rest[0];
        return;
      }
      default:
        throw new RestoreFailure(`unknown command "${command ?? ''}"`);
    }
  }

  // ---- ipset ---------------------------------------------------------------------------------------------------

  private ipset(args: readonly string[], input: string): Output {
    const fail = (message: string, line?: number): Output => ({
      stderr: `ipset v7.17: ${line === undefined ? '' : `Error in line ${line}: `}${message}\n`, exitCode: 1,
    });
    const inUse = (name: string) => this.lingering > 0 || Object.values(this.rulesets).some((ruleset) => ruleset
      && TABLE_NAMES.some((t) => [...ruleset[t].values()].some((c) => c.rules.some((r) => r.sets.includes(name)))));
    // A set being dumped by another process (refuseAsBusy): one refusal used.
    const busy = (...names: string[]) => {
      const { times, set } = this.busySets;
      if (times <= 0 || (set !== undefined && !names.includes(set))) return false;
      this.busySets.times--;
      return true;
    };
    const [command, ...rest] = args;
    if (command === 'save' || command === '-S') {
      // `ipset save SET` prints that set alone, and fails for one that does not exist, as ipset does.
      const only = rest[0];
      if (only !== undefined && !this.ipsets.has(only)) return fail('The set with the given name does not exist');
      return { stdout: this.saveSets(true, only) };
    }
    if ((command === 'list' || command === '-L') && rest.length === 1 && (rest[0] === '-t' || rest[0] === '-terse')) {
      // As ipset 7.17 prints it (the kernel's size in memory and references are not modelled: fixed numbers).
      const blocks = [...this.ipsets].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, set]) => [
        `Name: ${name}`, `Type: ${set.type}`, 'Revision: 8',
        `Header: family inet hashsize ${set.hashsize} maxelem ${set.maxelem} counters bucketsize ${set.bucketsize} initval 0x00000000`,
        'Size in memory: 1000', `References: ${this.lingering > 0 ? 1 : 0}`, `Number of entries: ${set.members.size}`,
      ].join('\n'));
      if (this.lingering > 0) this.lingering--;
      return { stdout: blocks.length > 0 ? `${blocks.join('\n\n')}\n` : '' };
    }
    if (command === 'destroy' || command === 'x') {
      const name = rest[0];
      if (name === undefined) return fail('destroying every set is not supported by the fake');
      if (!this.ipsets.has(name)) return fail('The set with the given name does not exist');
      if (inUse(name)) return fail('Set cannot be destroyed: it is in use by a kernel component');
      this.ipsets.delete(name);
      return {};
    }
    if (command !== 'restore' && command !== '-R') return fail(`fake: unsupported command ipset ${args.join(' ')}`);
    const lines = input.split('\n');
    for (let n = 1; n <= lines.length; n++) {
      // A comment is a line starting with "#" (ipset 7.17); one inside a line is a word ("Unknown argument: `#'").
      const words = lines[n - 1]!.trim().split(/\s+/).filter((w) => w !== '');
      if (words.length === 0 || words[0]!.startsWith('#')) continue;
      const exist = words.includes('-exist');
      const [verb, name, arg, ...options] = words.filter((w) => w !== '-exist');
      // `packets N bytes N` (a member's counters, as ipset save prints them and restore takes them); nothing else.
      const counters = new Map<string, number>();
      for (let i = 0; verb === 'add' && i < options.length; i += 2) {
        if ((options[i] !== 'packets' && options[i] !== 'bytes') || !/^\d+$/.test(options[i + 1] ?? '')) return fail(`Syntax error: unknown option ${options[i]}`, n);
        counters.set(options[i]!, Number(options[i + 1]));
      }
      if (verb === 'destroy' && name !== undefined) {
        if (!this.ipsets.has(name)) return fail('The set with the given name does not exist', n);
        if (inUse(name) || busy(name)) return fail('Set cannot be destroyed: it is in use by a kernel component', n);
        this.ipsets.delete(name);
        continue;
      }
      if (name === undefined || arg === undefined) return fail('Syntax error: missing arguments', n);
      if (verb === 'create') {
        if (!/^hash:(ip|net)(,iface|,port)?$/.test(arg)) return fail(`Syntax error: typename '${arg}' is unknown`, n);
        const header = setHeaderOptions(options);
        if (typeof header === 'string') return fail(header, n);
        // -exist takes a set of the same type and maxelem for the same set, whatever its hashsize (as the kernel does).
        const existing = this.ipsets.get(name);
        if (existing && (!exist || existing.type !== arg || existing.maxelem !== header.maxelem)) return fail('Set cannot be created: set with the same name already exists', n);
        if (!existing) this.ipsets.set(name, { type: arg, members: new Map(), ...header, bucketsize: BUCKET_FIRST, buckets: new Map() });
        continue;
      }
      if (verb === 'swap') {
        // The two names change places: rules refer to the name (the kernel swaps the references with the sets).
        const first = this.ipsets.get(name);
        const second = this.ipsets.get(arg);
        if (!first) return fail('The set with the given name does not exist', n);
        if (!second) return fail('Sets cannot be swapped: the second set does not exist', n);
        if (first.type !== second.type) return fail('The sets cannot be swapped: their type does not match', n);
        if (busy(name, arg)) return fail('Kernel error received: Device or resource busy', n);
        this.ipsets.set(name, second);
        this.ipsets.set(arg, first);
        continue;
      }
      const set = this.ipsets.get(name);
      if (!set) return fail('The set with the given name does not exist', n);
      if (verb === 'add' || verb === 'del') {
        const m = /^((?:\d{1,3}\.){3}\d{1,3})(?:\/(\d{1,2}))?(?:,([A-Za-z0-9_.@:+-]{1,15}))?$/.exec(arg);
        if (!m || !IPV4.test(m[1]!) || (set.type.endsWith(',iface') && m[3] === undefined)) return fail(`Syntax error: '${arg}' is not a valid element`, n);
        const member = `${m[1]}${m[2] === undefined || m[2] === '32' ? '' : `/${m[2]}`}${m[3] === undefined ? '' : `,${m[3]}`}`;
        const net = set.type.endsWith(',iface') ? member.slice(0, member.indexOf(',')) : undefined;
        if (verb === 'add') {
          if (set.members.has(member) && !exist) return fail("Element cannot be added to the set: it's already added", n);
          if (net !== undefined && !set.members.has(member)) {
            const bucket = set.buckets.get(net) ?? set.buckets.set(net, { members: 0, slots: 0 }).get(net)!;
            if (bucket.slots === 0) bucket.slots = BUCKET_STEP;
            else if (bucket.members >= bucket.slots) {
              if (set.bucketsize >= BUCKET_MOST) return fail('Hash is full, cannot add more elements', n);
              if (set.bucketsize <= bucket.members) set.bucketsize += BUCKET_STEP;
              bucket.slots += BUCKET_STEP;
            }
            bucket.members++;
          }
          const had = set.members.get(member);
          set.members.set(member, { packets: counters.get('packets') ?? had?.packets ?? 0, bytes: counters.get('bytes') ?? had?.bytes ?? 0 });
        } else {
          if (!set.members.has(member) && !exist) return fail("Element cannot be deleted from the set: it's not added", n);
          if (net !== undefined && set.members.has(member) && --set.buckets.get(net)!.members === 0) set.buckets.delete(net);
          set.members.delete(member);
        }
        continue;
      }
      return fail(`Syntax error: unknown command ${verb}`, n);
    }
    return {};
  }

  // ---- ip ------------------------------------------------------------------------------------------------------

  private ip(argsIn: readonly string[], input: string | undefined): Output {
    if (argsIn[0] === 'netns' && argsIn[1] === 'exec') {
      const [, , name, ...inner] = argsIn;
      if (name !== this.name) return { stderr: `Cannot open network namespace "${name ?? ''}": No such file or directory\n`, exitCode: 255 };
      if (inner.length === 0) return { stderr: 'No command specified\n', exitCode: 255 };
      try {
        return this.dispatch(inner, input);
      } catch (error) {
        // A program that is not installed: ip reports it and exits 1 (iproute2 6.1), instead of a failed spawn.
        if (error instanceof CommandError && error.notFound) return { stderr: `exec of "${inner[0]}" failed: No such file or directory\n`, exitCode: 1 };
        throw error;
      }
    }
    const args = [...argsIn];
    let json = false;
    let stats = false;
    let force = false;
    let batch: string | undefined;
    while (args[0]?.startsWith('-')) {
      const flag = args.shift()!;
      if (flag === '-json' || flag === '-j') json = true;
      else if (flag === '-s' || flag === '-stats') stats = true;
      else if (flag === '-force') force = true;
      else if (flag === '-batch' || flag === '-b') batch = args.shift();
      else if (flag !== '-4') return { stderr: `Option "${flag}" is unknown, try "ip -help".\n`, exitCode: 255 };
    }
    if (batch !== undefined) {
      if (batch !== '-') return { stderr: 'fake: only ip -batch - (stdin) is implemented\n', exitCode: 255 };
      return this.ipBatch(input ?? '', force, [...(json ? ['-json'] : []), ...(stats ? ['-s'] : [])]);
    }
    return this.ipCommand(argsIn, args, json, stats);
  }

  /**
   * `ip [-force] -batch -` as iproute2 6.1 runs it: one command per line, cut at its first "#" (a comment, even in
   * the middle of a word or inside quotes: a NIC named eth#1 reads as eth), a line ending in a backslash joined with
   * the next (none: "Missing continuation line", and ip ends as if the input had), blank lines skipped but counted;
   * a failing line prints its error and `Command failed -:N`; without -force ip stops there (exit 1),
   * with -force it goes on and exits 1 at the end. A malformed argument (exit 255) ends ip at once, with no
   * "Command failed" line.
   */
  private ipBatch(input: string, force: boolean, flags: readonly string[]): Output {
    let stdout = '';
    let stderr = '';
    let failed = false;
    const lines = input.split('\n');
    if (input.endsWith('\n')) lines.pop();
    for (let n = 1; n <= lines.length; n++) {
      let raw = lines[n - 1]!;
      let text = raw.split('#')[0]!;
      while (!raw.includes('#') && text.endsWith('\\')) {
        if (n === lines.length) return { stdout, stderr: `${stderr}Missing continuation line\n`, exitCode: failed ? 1 : 0 };
        raw = lines[n++]!;
        text = text.slice(0, -1) + raw.split('#')[0]!;
      }
      const words = text.trim().split(/\s+/).filter((w) => w !== '');
      if (words.length === 0) continue;
      // Each line is a command of its own for history and for faults (failOn can pick one line of a batch).
      const argv = ['ip', ...flags, ...words];
      this.history.push(`${argv.join(' ')}  (-batch line ${n})`);
      const fault = this.takeFault(argv, undefined);
      const result = fault ? { stderr: fault.stderr ?? 'ip: injected failure\n', exitCode: fault.exitCode ?? 1 } : this.ip(argv.slice(1), undefined);
      stdout += result.stdout ?? '';
      stderr += result.stderr ?? '';
      if ((result.exitCode ?? 0) === 255) return { stdout, stderr, exitCode: 255 };
      if ((result.exitCode ?? 0) !== 0) {
        stderr += `Command failed -:${n}\n`;
        failed = true;
        if (!force) break;
      }
    }
    return { stdout, stderr, exitCode: failed ? 1 : 0 };
  }

  private ipCommand(argsIn: readonly string[], args: string[], json: boolean, stats: boolean): Output {
    const [object, verb = 'show', ...rest] = args;
    const fail = (stderr: string, exitCode = 2): Output => ({ stderr: `${stderr}\n`, exitCode });
    const link = (name: string | undefined) => this.links.find((l) => l.name === name);
    const devArg = (words: readonly string[]) => {
      const i = words.indexOf('dev');
      return i >= 0 ? words[i + 1] : undefined;
    };
    const isObject = (word: string | undefined, full: string) => word !== undefined && word.length > 0 && full.startsWith(word);

    if (isObject(object, 'address') || object === 'addr') {
      if (verb === 'show' || verb === 'list') {
        if (!json) return fail('fake: only ip -json addr show is implemented', 255);
        return { stdout: `${JSON.stringify(this.links.map((l) => this.linkJson(l, true, stats)))}\n` };
      }
      if (verb === 'add' || verb === 'del' || verb === 'delete') {
        let cidr: { address: string; prefix: number };
        let metric = 0;
        try {
          cidr = parseCidrArg(rest[0]);
        } catch (error) {
          return fail((error as Error).message, 1);
        }
        for (let i = 1; i < rest.length; i += 2) {
          const word = rest[i]!;
          if (word === 'dev') continue;
          if (word !== 'metric' && word !== 'priority' && word !== 'preference') return fail(`fake: unsupported ip addr ${verb} option "${word}"`, 255);
          try {
            metric = parseMetricArg(rest[i + 1]);
          } catch (error) {
            return fail((error as Error).message, 255);
          }
        }
        const nic = link(devArg(rest));
        if (!nic) return fail(`Cannot find device "${devArg(rest) ?? ''}"`, 1);
        // The kernel keys an IPv4 address by its local address and prefix length; del ignores the metric.
        if (verb === 'add' && !insertAddress(nic.addresses, cidr, metric)) return fail('Error: ipv4: Address already assigned.');
        if (verb !== 'add' && !removeAddress(nic.addresses, cidr)) return fail('Error: ipv4: Address not found.');
        this.notify(`${nic.index}: ${nic.name}    inet ${cidr.address}/${cidr.prefix}`);
        return {};
      }
    }
    if (object === 'link') {
      if (verb === 'show' || verb === 'list') {
        if (!json) return fail('fake: only ip -json link show is implemented', 255);
        return { stdout: `${JSON.stringify(this.links.map((l) => this.linkJson(l, false, stats)))}\n` };
      }
      if (verb === 'set') {
        const words = rest[0] === 'dev' ? rest.slice(1) : rest;
        const nic = link(words[0]);
        if (!nic) return fail(`Cannot find device "${words[0] ?? ''}"`, 1);
        if (words.includes('up')) nic.up = true;
        else if (words.includes('down')) nic.up = false;
        else return fail(`fake: unsupported ip link set ${words.join(' ')}`, 255);
        this.notify(`${nic.index}: ${nic.name}: <${nic.up ? 'UP' : ''}>`);
        return {};
      }
    }
    if (object === 'route' || object === 'r' || object === 'ro') {
      if (verb === 'show' || verb === 'list') {
        if ((rest.length > 0 && rest[0] !== 'default') || !json) return fail('fake: only ip -json route show [default] is implemented', 255);
        // As iproute2 6.1 prints them: tos and metric only when set, a protocol number as a string.
        const routes: object[] = this.routes.map((r) => ({
          dst: 'default', ...(r.tos ? { tos: formatTos(r.tos) } : {}), gateway: r.gateway, dev: r.dev,
          ...(r.proto ? { protocol: r.proto } : {}), ...(r.metric ? { metric: r.metric } : {}), flags: [],
        }));
        if (rest[0] !== 'default') {
          for (const l of this.links) {
            for (const a of l.up ? l.addresses.filter((x) => !x.secondary) : []) {
              const block = 2 ** (32 - a.prefix);
              const network = Math.floor(toNumber(a.address) / block) * block;
              const dst = `${[24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join('.')}/${a.prefix}`;
              routes.push({ dst, dev: l.name, protocol: 'kernel', scope: 'link', prefsrc: a.address, flags: [] });
            }
          }
        }
        return { stdout: `${JSON.stringify(routes)}\n` };
      }
      if (verb === 'replace' || verb === 'add') {
        const words = rest[0] === 'default' ? parseRouteWords(rest.slice(1)) : 'fake: only ip route replace|add default … is implemented';
        if (typeof words === 'string') return fail(words, 255);
        const gateway = words.via;
        if (gateway === undefined || !IPV4.test(gateway)) return fail('fake: only ip route replace default via G [dev D]', 255);
        const tos = words.tos ?? 0;
        const metric = words.metric ?? 0;
        const same = this.routes.findIndex((r) => r.tos === tos && r.metric === metric);
        if (verb === 'add' && same >= 0) return fail('RTNETLINK answers: File exists');
        const dev = words.dev;
        if (dev !== undefined && !link(dev)) return fail(`Cannot find device "${dev}"`, 1);
        const nic = this.links.find((l) => (dev === undefined || l.name === dev) && l.up
          && l.addresses.some((a) => sameNetwork(a.address, gateway, a.prefix)));
        if (!nic) return fail('Error: Nexthop has invalid gateway.');
        const route: FakeRoute = { tos, metric, gateway, dev: nic.name, ...(words.proto && words.proto !== 'boot' ? { proto: words.proto } : {}) };
        if (same >= 0) this.routes[same] = route;
        else this.routes.push(route);
        this.routes.sort((a, b) => b.tos - a.tos || a.metric - b.metric);
        return {};
      }
      if (verb === 'del' || verb === 'delete') {
        const words = rest[0] === 'default' ? parseRouteWords(rest.slice(1)) : 'fake: only ip route del default … is implemented';
        if (typeof words === 'string') return fail(words, 255);
        // The TOS is part of the key (none given: 0); the rest must match where given (a metric of 0 is none).
        const gone = this.routes.findIndex((r) => r.tos === (words.tos ?? 0) && (!words.metric || r.metric === words.metric)
          && (words.proto === undefined || (r.proto ?? 'boot') === words.proto) && (words.via === undefined || r.gateway === words.via)
          && (words.dev === undefined || r.dev === words.dev));
        if (gone < 0) return fail('RTNETLINK answers: No such process');
        this.routes.splice(gone, 1);
        return {};
      }
    }
    return fail(`fake: unsupported command ip ${argsIn.join(' ')}`, 255);
  }

  private linkJson(l: FakeLink, withAddresses: boolean, stats: boolean): object {
    return {
      ifindex: l.index,
      ifname: l.name,
      flags: l.loopback ? ['LOOPBACK', ...(l.up ? ['UP', 'LOWER_UP'] : [])]
        : [...(l.up && !l.carrier ? ['NO-CARRIER'] : []), 'BROADCAST', 'MULTICAST', ...(l.up ? ['UP', ...(l.carrier ? ['LOWER_UP'] : [])] : [])],
      mtu: l.loopback ? 65536 : 1500,
      qdisc: 'noqueue',
      operstate: l.loopback ? 'UNKNOWN' : l.up && l.carrier ? 'UP' : 'DOWN',
      group: 'default',
      link_type: l.loopback ? 'loopback' : 'ether',
      address: l.mac,
      broadcast: l.loopback ? '00:00:00:00:00:00' : 'ff:ff:ff:ff:ff:ff',
      ...(stats ? {
        stats64: {
          rx: { bytes: 0, packets: 0, errors: 0, dropped: 0, over_errors: 0, multicast: 0 },
          tx: { bytes: 0, packets: 0, errors: 0, dropped: 0, carrier_errors: 0, collisions: 0 },
        },
      } : {}),
      ...(withAddresses ? {
        // As iproute2 6.1 prints them: metric only when set, "secondary" only when true.
        addr_info: l.addresses.map((a) => ({
          family: 'inet', local: a.address, prefixlen: a.prefix, ...(a.metric ? { metric: a.metric } : {}),
          scope: l.loopback ? 'host' : 'global', ...(a.secondary ? { secondary: true } : {}),
          label: l.name, valid_life_time: 4294967295, preferred_life_time: 4294967295,
        })),
      } : {}),
    };
  }

  // ---- cat (procfs) -----------------------------------------------------------------------------------------------

  /**
   * `cat` of procfs files: /proc/sys/… (the sysctls) and /proc/net/ip_tables_names (the legacy tables that exist;
   * the file is missing while iptables-legacy is not installed). Like cat, a missing file is reported and skipped,
   * and the exit code is 1 at the end.
   */
  private cat(paths: readonly string[]): Output {
    let stdout = '';
    let stderr = '';
    for (const path of paths) {
      const key = path.startsWith('/proc/sys/') ? path.slice('/proc/sys/'.length).replaceAll('/', '.') : undefined;
      if (key !== undefined && this.sysctls.has(key)) {
        stdout += `${this.sysctls.get(key)}\n`;
      } else if (path === '/proc/net/ip_tables_names' && this.rulesets.legacy) {
        stdout += this.tablesOf('legacy').map((t) => `${t}\n`).join('');
      } else {
        stderr += `cat: ${path}: No such file or directory\n`;
      }
    }
    return { stdout, stderr, exitCode: stderr ? 1 : 0 };
  }

  // ---- conntrack -----------------------------------------------------------------------------------------------

  /**
   * conntrack-tools 1.4.7 as checked on this machine: -L prints one line per entry (and a count on stderr); -D deletes
   * the entries its filters match (exit 1 when none did). A port is read as the number it starts with, as the real one
   * does (`--orig-port-dst 6000-6010` is 6000). Only UDP flows exist here.
   */
  private conntrack(args: readonly string[]): Output {
    const banner = 'conntrack v1.4.7 (conntrack-tools): ';
    if (args[0] === '--version' || args[0] === '-V') return { stdout: 'conntrack v1.4.7 (conntrack-tools)\n' };
    type Filter = (f: FakeFlow) => boolean;
    const parse = (words: readonly string[]): Filter | string => {
      const tests: Filter[] = [];
      for (let i = 1; i < words.length; i += 2) {
        const option = words[i]!;
        const value = words[i + 1];
        if (value === undefined) return `option \`${option}' requires an argument`;
        const port = Number(/^\d*/.exec(value)![0] || Number.NaN);
        const field: Record<string, (f: FakeFlow) => string | number> = {
          '-s': (f) => f.original.src, '--src': (f) => f.original.src, '--orig-src': (f) => f.original.src,
          '-d': (f) => f.original.dst, '--dst': (f) => f.original.dst, '--orig-dst': (f) => f.original.dst,
          '-r': (f) => f.reply.src, '--reply-src': (f) => f.reply.src, '-q': (f) => f.reply.dst, '--reply-dst': (f) => f.reply.dst,
          '--sport': (f) => f.original.sport, '--orig-port-src': (f) => f.original.sport,
          '--dport': (f) => f.original.dport, '--orig-port-dst': (f) => f.original.dport,
          '--reply-port-src': (f) => f.reply.sport, '--reply-port-dst': (f) => f.reply.dport,
        };
        if (option === '-p' || option === '--protonum') {
          if (value !== 'udp') tests.push(() => false);
        } else if (field[option]) {
          const get = field[option];
          const ports = option.includes('port');
          tests.push((f) => get(f) === (ports ? port : value));
        } else {
          return `unknown option \`${option}'`;
        }
      }
      return (f) => tests.every((t) => t(f));
    };
    const line = (f: FakeFlow) => `udp      17 29 src=${f.original.src} dst=${f.original.dst} sport=${f.original.sport} dport=${f.original.dport} `
      + `[UNREPLIED] src=${f.reply.src} dst=${f.reply.dst} sport=${f.reply.sport} dport=${f.reply.dport} mark=0 use=1\n`;
    const remove = (filter: Filter) => {
      const gone = this.flows.filter(filter);
      this.flows = this.flows.filter((f) => !filter(f));
      return gone;
    };
    if (args[0] === '-L' || args[0] === '-D') {
      const filter = parse(args);
      if (typeof filter === 'string') return { stderr: `${banner}${filter}\n`, exitCode: 2 };
      const chosen = args[0] === '-L' ? this.flows.filter(filter) : remove(filter);
      const verb = args[0] === '-L' ? 'shown' : 'deleted';
      return { stdout: chosen.map(line).join(''), stderr: `${banner}${chosen.length} flow entries have been ${verb}.\n`, exitCode: args[0] === '-D' && chosen.length === 0 ? 1 : 0 };
    }
    return { stderr: `${banner}fake: unsupported conntrack ${args.join(' ')}\n`, exitCode: 2 };
  }

  // ---- sysctl --------------------------------------------------------------------------------------------------

  private sysctl(args: readonly string[]): Output {
    const path = (key: string) => `/proc/sys/${key.replace(/\./g, '/')}`;
    if (args[0] === '-w') {
      const out: string[] = [];
      for (const assignment of args.slice(1)) {
        const eq = assignment.indexOf('=');
        if (eq < 0) return { stderr: `sysctl: "${assignment}" must be of the form name=value\n`, exitCode: 255 };
        const key = assignment.slice(0, eq);
        const value = assignment.slice(eq + 1);
        if (!this.sysctls.has(key)) return { stderr: `sysctl: cannot stat ${path(key)}: No such file or directory\n`, exitCode: 255 };
        if (this.readOnly) return { stderr: `sysctl: setting key "${key}": Read-only file system\n`, exitCode: 255 };
        this.sysctls.set(key, value);
        out.push(`${key} = ${value}`);
      }
      return { stdout: `${out.join('\n')}\n` };
    }
    const bare = args[0] === '-n';
    const keys = bare ? args.slice(1) : args;
    const out: string[] = [];
    for (const key of keys) {
      const value = this.sysctls.get(key);
      if (value === undefined) return { stdout: out.length ? `${out.join('\n')}\n` : '', stderr: `sysctl: cannot stat ${path(key)}: No such file or directory\n`, exitCode: 255 };
      out.push(bare ? value : `${key} = ${value}`);
    }
    return { stdout: `${out.join('\n')}\n` };
  }
}
