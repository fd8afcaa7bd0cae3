/**
 * From desired state and facts to the steps that close the gap. Chains are compared by their sequence of rule
 * hashes, so an unchanged chain is never rewritten (its packet counters live on) and one VLAN's change touches
 * only its chains. Each table becomes one `iptables-restore --noflush` payload, plus an undo payload that puts
 * back the previous content of exactly the chains and jumps it changes. Pure.
 */
import { shownCommand } from '../exec/runner.js';
import type { Facts, KnownTables, SavedRule, SavedSet, SavedTable, TableName } from '../observe/facts.js';
import { TABLES } from '../observe/facts.js';
import { conntrackClears } from './conntrack.js';
import { BUILTIN_CHAINS, FORWARD_CHAIN, FORWARDING_WAS_OFF, IP_FORWARD, jumpBody, OUR_ADDRESS_METRIC, OUR_PREFIX, POSTROUTING_CHAIN } from './chains.js';
import { verdictOf } from './rule-text.js';
import { BUCKET_LIMIT, remakeName, SET_MAXELEM, setMaxelem } from './set-size.js';
import type { ChainChange, Desired, DesiredChain, DesiredRule, DesiredSet, Jump, JumpChange, Plan, Step, TableStep } from './types.js';
import { uplinkOverlapWarnings, warningsOf } from './warnings.js';

/** A set of our name (VGW-*) that is not as the gateway makes it: nothing is applied until it is removed. */
export class ForeignSetError extends Error {
  override readonly name = 'ForeignSetError';
}

/**
 * A chain or set of ours that the plan removes, but that a rule of someone else's still refers to (a chain of
 * their own that jumps to one of ours, a `-m set --match-set VGW-…` in FORWARD): the kernel refuses to delete it
 * ("Device or resource busy", "in use by a kernel component"), naming neither the rule nor its chain, and the
 * whole round is rolled back. It is said here, before anything is written, with the rule to delete.
 */
export class InUseError extends Error {
  override readonly name = 'InUseError';
}

interface TableDiff {
  readonly step?: TableStep;
}

/** Does a saved chain hold exactly the desired rules, in order (by hash)? No arrays made: 10,000 rules a pass. */
function sameRules(saved: readonly SavedRule[], desired: readonly DesiredRule[]): boolean {
  if (saved.length !== desired.length) return false;
  for (let i = 0; i < saved.length; i++) if (saved[i]!.hash !== desired[i]!.hash) return false;
  return true;
}

/**
 * Targets that never end a packet's walk with an ACCEPT: they drop it, or note or alter it and go on ('' is no
 * target). An MSS clamp (`-p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`) often sits first in FORWARD.
 */
/** The jumps whose absence lets a packet be forwarded without the policy (filter) or without the NAT (nat). */
const UNPOLICED_HOOKS = [['FORWARD', FORWARD_CHAIN], ['POSTROUTING', POSTROUTING_CHAIN]] as const;
const CANNOT_ACCEPT = new Set(['', 'DROP', 'REJECT', 'LOG', 'NFLOG', 'ULOG', 'MARK', 'CONNMARK', 'TRACE', 'AUDIT', 'TCPMSS', 'SET', 'IDLETIMER', 'LED', 'RATEEST']);

interface SavedJump {
  readonly hook: string;
  readonly target: string;
  readonly body: string;
  /** 1-based, in its hook chain: where a rollback puts it back, with its counters. */
  readonly position: number;
  readonly rule: SavedRule;
}

/** Every jump to a chain of ours found in the built-in chains: ours, duplicates, and any a user wrote. */
function savedJumps(table: SavedTable): SavedJump[] {
  const found: SavedJump[] = [];
  for (const [chain, rules] of table.rules) {
    if (!BUILTIN_CHAINS.has(chain)) continue;
    rules.forEach((rule, i) => {
      const target = verdictOf(rule.body);
      if (target?.startsWith(OUR_PREFIX)) found.push({ hook: chain, target, body: rule.body, position: i + 1, rule });
    });
  }
  return found;
}

/**
 * Is a saved jump exactly the one wanted: our comment (its note included) and nothing else? A jump with a match
 * of its own (`-i eth1 -j VGW-FORWARD`, a user's) would send only part of the traffic through our policy, and the
 * rest under the built-in chain's policy: it is not ours, and is replaced by ours.
 */
function isJump(saved: SavedJump, jump: Jump): boolean {
  return saved.hook === jump.hook && saved.target === jump.target
    && saved.body.replace(/--comment "([^"\s]*)"/, '--comment $1') === jumpBody(jump.target, jump.note);
}

/** A rule's counters as an undo puts them back: as read, or from zero where they are not the kernel's now. */
const countersOf = (rule: SavedRule, read: boolean) => (read ? `[${rule.packets}:${rule.bytes}]` : '[0:0]');

/**
 * `countersRead`: the saved rules' counters are what the kernel held when this pass read them. Not so in tables a
 * supervisor remembers (KnownTables): there they are those of a reading some passes ago, or zero where it wrote
 * since, and an undo that put them back would set the kernel's counters to numbers it no longer holds (a rule at
 * 15 packets back at 10). Such an undo re-creates its rules from zero.
 */
function diffTable(table: TableName, desiredChains: readonly DesiredChain[], desiredJumps: readonly Jump[], saved: SavedTable, countersRead = true): TableDiff {
  const ours = [...saved.chains].filter((c) => c.startsWith(OUR_PREFIX));
  const wanted = new Map(desiredChains.map((c) => [c.name, c]));
  const changes: ChainChange[] = [];

  for (const chain of desiredChains) {
    const before = saved.rules.get(chain.name) ?? [];
    if (!saved.chains.has(chain.name)) {
      changes.push({ chain: chain.name, change: 'create', added: chain.rules.map((r) => r.line), removed: [] });
    } else if (!sameRules(before, chain.rules)) {
      const beforeHashes = new Set(before.map((r) => r.hash));
      const afterHashes = new Set(chain.rules.map((r) => r.hash));
      const added = chain.rules.filter((r) => !beforeHashes.has(r.hash)).map((r) => r.line);
      const removed = before.filter((r) => r.hash === undefined || !afterHashes.has(r.hash)).map((r) => r.body);
      // First match wins: a new order is a change a reviewer must see, rule by rule.
      const order = added.length === 0 && removed.length === 0 ? { order: chain.rules.map((r) => r.line) } : {};
      changes.push({ chain: chain.name, change: 'rewrite', added, removed, ...order });
    }
  }
  for (const chain of ours) {
    if (!wanted.has(chain)) {
      changes.push({ chain, change: 'delete', added: [], removed: (saved.rules.get(chain) ?? []).map((r) => r.body) });
    }
  }

  // Nothing may let a packet past our jump: a rule of someone else's above it that can end its walk with an
  // ACCEPT (itself, a chain of its own, a RETURN to the built-in chain's policy where it is not DROP, a queue) would skip the source
  // check and every forwarding rule, or (in nat) our NAT. Our jump found below such a rule is moved to the top, as
  // one found missing is inserted there, whichever came first. A rule that can only drop, note or alter a packet and
  // let it go on (an operator's emergency DROP, an MSS clamp) is left above it, and so are jumps of ours removed
  // anyway (stale, duplicates, not as we make them). An exemption from our NAT goes in rules.dir's
  // nat/postrouting.hbs, whose chain runs before our NAT rules.
  const present = savedJumps(saved);
  const kept = new Map<Jump, SavedJump>();
  const jumpRemovals: SavedJump[] = [];
  // Why each removed jump goes, for the person reading the plan: a jump moved to the top otherwise shows as the
  // same jump added and removed.
  const why = new Map<SavedJump, string>();
  const foreign = (r: SavedRule) => !present.some((q) => q.rule === r);
  // A RETURN in a built-in chain whose policy is DROP ends the packet's walk with that DROP: it lets none past.
  const canAccept = (hook: string, r: SavedRule) => {
    const verdict = verdictOf(r.body) ?? '';
    return !CANNOT_ACCEPT.has(verdict) && !(verdict === 'RETURN' && saved.policies?.get(hook) === 'DROP');
  };
  const foreignAbove = (p: SavedJump) => (saved.rules.get(p.hook) ?? []).slice(0, p.position - 1)
    .find((r) => foreign(r) && canAccept(p.hook, r));
  for (const p of present) {
    const desired = desiredJumps.find((j) => !kept.has(j) && isJump(p, j));
    const above = desired ? foreignAbove(p) : undefined;
    if (desired && !above) {
      kept.set(desired, p);
      continue;
    }
    jumpRemovals.push(p);
    // One of ours with another note (an older version's) below such a rule goes for that rule first.
    const renoted = /--comment "?vgw:hook/.test(p.body) && !desiredJumps.some((j) => isJump(p, j))
      && desiredJumps.some((j) => j.hook === p.hook && j.target === p.target);
    const blocking = above ?? (renoted ? foreignAbove(p) : undefined);
    why.set(p, blocking ? `below ${blocking.body}, which can let packets past it: put back at the top`
      : desiredJumps.some((j) => isJump(p, j)) ? 'a second copy'
        : !desiredJumps.some((j) => j.hook === p.hook && j.target === p.target) ? 'its chain is no longer wanted'
          : /--comment "?vgw:hook/.test(p.body) ? 'written again with the note the gateway keeps in it'
            : 'not the gateway\'s jump: only the gateway\'s own, with no match, sends every packet through its chain');
  }
  // Rules are deleted by their text, never by number (a rule inserted since the read would take another's number),
  // and a text deletes its first copy: deleting a copy of a kept jump leaves the last copy instead. That is the same
  // while only our jumps lie between them; with a rule of someone else's between, every copy goes and ours is
  // inserted anew at the top.
  for (const [jump, p] of kept) {
    const copies = jumpRemovals.filter((r) => r.hook === p.hook && r.body === p.body);
    if (copies.length === 0) continue;
    const last = Math.max(...copies.map((r) => r.position));
    const between = (saved.rules.get(p.hook) ?? []).slice(p.position, last - 1);
    const other = between.find(foreign);
    if (other) {
      kept.delete(jump);
      jumpRemovals.push(p);
      why.set(p, `a copy of it lies below ${other.body}, and deleting the copy would delete this one: put back at the top`);
    }
  }
  const jumpAdds = desiredJumps.filter((j) => !kept.has(j));
  // Did every packet of the hook walk our chain before this step? Only through a jump of ours with no match (a note
  // of its own aside) that nothing above could let a packet past. A jump added where there was none such opens a
  // chain the hook's traffic went around until now (Plan.unpoliced).
  const covered = (j: Jump) => present.some((p) => p.hook === j.hook && p.target === j.target
    && p.body.replace(/-m comment --comment (?:"[^"]*"|\S+) ?/, '') === `-j ${j.target}` && !foreignAbove(p));
  const jumpChanges: JumpChange[] = [
    ...jumpAdds.map((j): JumpChange => ({ hook: j.hook, target: j.target, change: 'add', body: jumpBody(j.target, j.note), ...(covered(j) ? {} : { uncovered: true as const }) })),
    ...jumpRemovals.map((p): JumpChange => ({ hook: p.hook, target: p.target, change: 'remove', body: p.body, position: p.position, why: why.get(p)! })),
  ];

  if (changes.length === 0 && jumpChanges.length === 0) return {};

  const rewritten = changes.filter((c) => c.change !== 'delete').map((c) => wanted.get(c.chain)!);
  const deleted = changes.filter((c) => c.change === 'delete').map((c) => c.chain);
  // The hook jumps before the rules: each rule is then added to a chain its hook already reaches, and a rule the
  // kernel refuses only where it is reached (`-m owner` from PREROUTING, say) is refused on its own line, which
  // iptables-nft names ("line 7: RULE_APPEND failed (Invalid argument): rule in chain VGW-USER-PREROUTING"). With the
  // jumps last, as at a first apply they were, it named our jump ("rule in chain PREROUTING"), and the user's
  // template went unsaid. Our chains before the user's (desired order): the jump into a user chain comes before its
  // rules too. Packets never see the order: a table's restore is one commit, atomic on either backend (one nf_tables
  // transaction; iptables-legacy replaces the whole table at COMMIT). A jump removed goes before one added: `-D`
  // deletes the first copy of its text, which the jump moved to the top would otherwise be.
  const payload = [
    `*${table}`,
    ...rewritten.map((c) => `:${c.name} - [0:0]`),
    ...deleted.map((c) => `:${c} - [0:0]`),
    ...jumpRemovals.map((j) => `-D ${j.hook} ${j.body}`),
    ...jumpAdds.map((j) => `-I ${j.hook} 1 ${jumpBody(j.target, j.note)}`),
    ...rewritten.flatMap((c) => c.rules.map((r) => `-A ${c.name} ${r.line}`)),
    ...deleted.map((c) => `-X ${c}`),
    'COMMIT',
    '',
  ].join('\n');

  // Undo: what was there before, counters included; chains this step creates are emptied and removed.
  const existedBefore = changes.filter((c) => c.change !== 'create').map((c) => c.chain);
  const created = changes.filter((c) => c.change === 'create').map((c) => c.chain);
  const undo = [
    `*${table}`,
    ...existedBefore.map((c) => `:${c} - [0:0]`),
    ...created.map((c) => `:${c} - [0:0]`),
    ...existedBefore.flatMap((c) => (saved.rules.get(c) ?? []).map((r) => `${countersOf(r, countersRead)} -A ${c} ${r.body}`)),
    ...jumpAdds.map((j) => `-D ${j.hook} ${jumpBody(j.target, j.note)}`),
    // Each where it was: our jumps added are gone by now, and putting them back in order of position puts every
    // one of them before what followed it (a rule above our jump stays above it).
    ...[...jumpRemovals].sort((a, b) => a.position - b.position).map((j) => `${countersOf(j.rule, countersRead)} -I ${j.hook} ${j.position} ${j.body}`),
    ...created.map((c) => `-X ${c}`),
    'COMMIT',
    '',
  ].join('\n');

  return { step: { kind: 'table', table, payload, undo, chains: changes, jumps: jumpChanges } };
}

/**
 * Do the tables hold exactly our desired chains, and each of our jumps once: would a plan leave them alone? (The
 * stats collector asks this of every read it makes; see KnownTables.)
 */
export function tablesInSync(desired: Desired, tables: Facts['tables']): boolean {
  // Our jumps as a plan wants them: with the note while one of them carries it (a plan's memory and the sysctl
  // can only add the note, which the next pass then writes).
  const jumps = notedJumps(desired, forwardingNoteIn({ tables }));
  return TABLES.every((table) => diffTable(
    table,
    desired.chains.filter((c) => c.table === table),
    jumps.filter((j) => j.table === table),
    tables[table],
  ).step === undefined);
}

const notedJumps = (desired: Desired, forwardingWasOff: boolean): readonly Jump[] =>
  (forwardingWasOff ? desired.jumps.map((j) => ({ ...j, note: FORWARDING_WAS_OFF })) : desired.jumps);

/**
 * The hashsize a set of ours is to be made again with, where its header shows it smaller than the gateway makes it
 * (see the set-update step's `remake`), or its buckets at the kernel's limit (BUCKET_LIMIT: the set can no longer
 * take members, and every pass that adds one would fail, however often it is tried). One the kernel has grown past
 * the gateway's hashsize, by rehashing, is otherwise left as it is, and made again at its own size where it must be.
 */
function setRemake(set: DesiredSet, have: SavedSet): { remake: number; full?: true } | undefined {
  const { hashsize } = set;
  const maxelem = setMaxelem(set.members.length) ?? SET_MAXELEM;
  const small = (have.hashsize !== undefined && have.hashsize < hashsize) || (have.maxelem !== undefined && have.maxelem < maxelem);
  if (small) return { remake: hashsize };
  const stuck = have.bucketsize !== undefined && have.bucketsize >= BUCKET_LIMIT;
  return stuck ? { remake: Math.max(hashsize, have.hashsize ?? 0), full: true } : undefined;
}

const memberSets = new WeakMap<DesiredSet, ReadonlySet<string>>();

/** A desired set's members as a set, made once per desired set (the planner reuses unchanged desired states). */
export function memberSetOf(set: DesiredSet): ReadonlySet<string> {
  let members = memberSets.get(set);
  if (!members) memberSets.set(set, (members = new Set(set.members.map((m) => m.member))));
  return members;
}

/** What our sets need: the set-update steps, and the names of the sets they make again. */
interface SetSteps {
  readonly steps: readonly Step[];
  readonly remade: ReadonlySet<string>;
}

const setStepsMade = new WeakMap<readonly DesiredSet[], WeakMap<ReadonlyMap<string, SavedSet>, SetSteps>>();

/**
 * The set-update steps for the sets read (pure), remembered per desired sets and sets read: a pass works them out
 * while the tables are still being read (reconcileOnce), and its plan then finds them made. At 100 VLANs a
 * `vlan-gateway apply` compares 10,000 members, which would otherwise follow the slowest read.
 */
export function setSteps(desiredSets: readonly DesiredSet[], sets: ReadonlyMap<string, SavedSet>, commandPrefix?: readonly string[]): SetSteps {
  const made = setStepsMade.get(desiredSets)?.get(sets);
  if (made) return made;
  const steps: Step[] = [];
  // A set of our name that the gateway did not make (another type, or no counters) fails every apply with the
  // kernel's words; it is said here, before anything is written, with the way out.
  const foreign = desiredSets.flatMap((set) => {
    const have = sets.get(set.name);
    if (!have || (have.type === set.type && !have.noCounters && have.family === undefined)) return [];
    return [`ipset ${set.name} exists as ${have.type}${have.family ? ` family ${have.family}` : ''}${have.noCounters ? ' without counters' : ''}, not as the gateway makes it (${set.type} with counters): `
      + `the gateway did not make it; remove it (${shownCommand(commandPrefix, `ipset destroy ${set.name}`)}) and apply again`];
  });
  if (foreign.length > 0) throw new ForeignSetError(foreign.join('\n'));
  const remade = new Set<string>();
  for (const set of desiredSets) {
    const have = sets.get(set.name);
    const remaking = have ? setRemake(set, have) : undefined;
    const remake = remaking?.remake;
    if (remake !== undefined) remade.add(remakeName(set.name));
    // Members known to be there because they are this very set's (a supervisor's KnownSets): nothing to compare. Only
    // a set of members made before can be that one: none is made here (a `vlan-gateway apply` has read every member).
    if (have && have.members === memberSets.get(set) && remake === undefined) continue;
    const add: string[] = [];
    for (const { member } of set.members) if (!have?.members.has(member)) add.push(member);
    // As many members as the wanted ones it holds: nothing else to delete, and no set built (a no-op pass at 100
    // VLANs compares 10,000 members).
    let del: string[] = [];
    if (have && have.members.size !== set.members.length - add.length) {
      const want = new Set(set.members.map((m) => m.member));
      del = [...have.members].filter((m) => !want.has(m));
    }
    if (!have || add.length > 0 || del.length > 0 || remake !== undefined) {
      const maxelem = setMaxelem(set.members.length);
      steps.push({ kind: 'set-update', set: set.name, type: set.type, role: set.role, create: !have, add, del, ...(remaking ?? {}), ...(maxelem ? { maxelem } : {}) });
    }
  }
  const result: SetSteps = { steps, remade };
  const bySets = setStepsMade.get(desiredSets) ?? setStepsMade.set(desiredSets, new WeakMap()).get(desiredSets)!;
  bySets.set(sets, result);
  return result;
}

const sysctlStep = (facts: Facts, key: string, value: string): Step =>
  ({ kind: 'sysctl', key, value, ...(facts.sysctls[key] !== undefined ? { previous: facts.sysctls[key] } : {}) });

/**
 * Does one of our jumps in the kernel carry the "forwarding was off" note? Every jump made while forwarding is
 * switched on carries it, so an `iptables -F` (the filter table) or a flush of nat alone does not erase it.
 */
export function forwardingNoteIn(facts: Pick<Facts, 'tables'>): boolean {
  const note = `vgw:hook-${FORWARDING_WAS_OFF}`;
  for (const table of TABLES) {
    for (const [chain, rules] of facts.tables[table].rules) {
      if (BUILTIN_CHAINS.has(chain) && rules.some((r) => r.body.includes(note))) return true;
    }
  }
  return false;
}

/**
 * The whole plan, in the order that keeps the router fail-closed: links, addresses and the default route (one
 * `ip -batch` when applied), the accounting sets, the filter table (our FORWARD policy), nat, and only then
 * `ip_forward`. Stale addresses go first; our chains, jumps and sets are removed with the tables.
 */
export function diff(desired: Desired, facts: Facts, memory: { forwardingWasOff?: boolean; knownTables?: KnownTables } = {}): Plan {
  const steps: Step[] = [];
  // Addresses of ours (marked by their metric) that are no longer wanted: down, a changed gateway, a VLAN
  // removed from the config while its NIC stays. Removed before anything is added: deleting a primary address
  // deletes the secondaries of its subnet, which could take a new gateway address with it.
  // By key, not by scanning: 100 VLANs' addresses against 100 NICs at each pass.
  const wanted = new Set(desired.addresses.map((w) => `${w.nic} ${w.address}/${w.prefix}`));
  for (const link of facts.links) {
    for (const a of link.addresses) {
      if (a.metric !== OUR_ADDRESS_METRIC) continue;
      if (wanted.has(`${link.name} ${a.address}/${a.prefix}`)) continue;
      const vlan = desired.vlans.find((b) => b.vlan.gateway === a.address)?.vlan.name;
      steps.push({ kind: 'address-del', nic: link.name, address: a.address, prefix: a.prefix, ...(vlan ? { vlan } : {}) });
    }
  }
  const linkByName = new Map(facts.links.map((l) => [l.name, l]));
  for (const want of desired.addresses) {
    const nic = linkByName.get(want.nic);
    if (!nic) continue;
    if (!nic.up) steps.push({ kind: 'link-up', nic: nic.name, vlan: want.vlan });
    // Ours at another prefix (the subnet widened, the gateway kept) is deleted above, so it is not the one wanted.
    if (!nic.addresses.some((a) => a.address === want.address && (a.prefix === want.prefix || a.metric !== OUR_ADDRESS_METRIC))) {
      steps.push({ kind: 'address-add', nic: nic.name, address: want.address, prefix: want.prefix, vlan: want.vlan });
    }
  }
  // A TOS route is the default route found only where there is no other: through the wanted gateway or not, ordinary
  // traffic has no route out until ours is added beside it.
  if (desired.route && (facts.defaultRoute?.gateway !== desired.route.gateway || facts.defaultRoute.tos !== undefined)) {
    steps.push({ kind: 'route', ...desired.route, ...(facts.defaultRoute ? { previous: facts.defaultRoute } : {}) });
  }
  const sets = facts.sets ?? new Map<string, SavedSet>();
  const { steps: setUpdates, remade } = setSteps(desired.sets, sets, facts.commandPrefix);
  steps.push(...setUpdates);
  // Our jumps remember that forwarding was off before us; a jump re-added after a flush takes the note from the
  // jumps still there, or from a supervisor's memory (the kernel no longer shows it once ip_forward is on).
  const switchingOn = desired.sysctls[IP_FORWARD] === '1' && facts.sysctls[IP_FORWARD] === '0';
  const forwardingWasOff = switchingOn || Boolean(memory.forwardingWasOff) || forwardingNoteIn(facts);
  const jumps = notedJumps(desired, forwardingWasOff);
  // Switching forwarding off (down) comes before our policy goes: fail closed on the way out too.
  for (const [key, value] of Object.entries(desired.sysctls)) {
    if (value === '0' && facts.sysctls[key] !== value) steps.push(sysctlStep(facts, key, value));
  }
  // Planned from the tables a supervisor remembers, not from a read of its own: their counters are not the kernel's.
  const countersRead = facts.tables !== memory.knownTables?.tables;
  for (const table of TABLES) {
    const { step } = diffTable(
      table,
      desired.chains.filter((c) => c.table === table),
      jumps.filter((j) => j.table === table),
      facts.tables[table],
      countersRead,
    );
    if (step) steps.push(step);
  }
  for (const [name, have] of sets) {
    // A set a killed remake left behind goes with the remake of its set, which destroys it first.
    if (!desired.sets.some((s) => s.name === name) && !remade.has(name)) {
      steps.push({ kind: 'set-destroy', set: name, type: have.type, members: [...have.members] });
    }
  }
  for (const [key, value] of Object.entries(desired.sysctls)) {
    if (value !== '0' && facts.sysctls[key] !== value) {
      steps.push(sysctlStep(facts, key, value));
    }
  }
  // Last, once the nat table is written: the UDP flows a changed port forward leaves going the wrong way.
  const local = [...facts.links.filter((l) => !l.loopback).flatMap((l) => l.addresses.map((a) => a.address)), ...desired.addresses.map((a) => a.address)];
  steps.push(...conntrackClears(steps, desired, local));
  const inUse = referencesToRemoved(steps, facts);
  if (inUse.length > 0) throw new InUseError(inUse.join('\n'));
  const warnings = [...warningsOf(facts), ...uplinkOverlapWarnings(desired.uplink, desired.vlans)];
  // Our policy or NAT hooked in where packets went around it, with forwarding on already: what was forwarded until
  // now met no policy or no NAT (Plan.unpoliced). At a first apply the chains are new; later, the jump was deleted,
  // or a rule above it could accept, behind our back.
  const unpoliced = facts.sysctls[IP_FORWARD] === '1' && steps.some((s) => s.kind === 'table'
    && s.jumps.some((j) => j.change === 'add' && j.uncovered && UNPOLICED_HOOKS.some(([hook, target]) => j.hook === hook && j.target === target)));
  const made = steps.some((s) => s.kind === 'table' && s.table === 'filter' && s.chains.some((c) => c.chain === FORWARD_CHAIN && c.change === 'create'));
  return {
    desired, steps, forwardingWasOff: forwardingWasOff && desired.jumps.length > 0, ...(warnings.length > 0 ? { warnings } : {}),
    backend: { name: facts.backend, ...(facts.backendWhy ? { why: facts.backendWhy } : {}) },
    ...(unpoliced ? { unpoliced: { local: [...new Set(local)].sort(), ...(made ? {} : { bypassed: true as const }) } } : {}),
  };
}

/** `--match-set NAME`, and the SET target's `--add-set` / `--del-set` / `--map-set NAME`. */
const SET_REFERENCE = /(?:^| )--(?:match|add|del|map)-set (\S+)/g;
const QUOTED = /"(?:[^"\\]|\\.)*"/g;

/**
 * The rules outside our chains that refer to a chain or set the plan removes, one problem each. Our jumps in the
 * built-in chains (and anyone's jump to a chain of ours there, which the plan removes too) are not among them.
 * Only when something is removed: a pass that removes nothing reads no rule here.
 */
function referencesToRemoved(steps: readonly Step[], facts: Facts): string[] {
  const sets = new Set(steps.flatMap((s) => (s.kind === 'set-destroy' ? [s.set] : [])));
  const problems: string[] = [];
  for (const table of TABLES) {
    const step = steps.find((s): s is TableStep => s.kind === 'table' && s.table === table);
    const chains = new Set(step?.chains.filter((c) => c.change === 'delete').map((c) => c.chain) ?? []);
    if (chains.size === 0 && sets.size === 0) continue;
    const removed = new Set(step?.jumps.filter((j) => j.change === 'remove').map((j) => `${j.hook} ${j.body}`) ?? []);
    for (const [chain, rules] of facts.tables[table].rules) {
      if (chain.startsWith(OUR_PREFIX)) continue;
      for (const rule of rules) {
        if (removed.has(`${chain} ${rule.body}`)) continue;
        const target = verdictOf(rule.body);
        const what = target !== undefined && chains.has(target) ? [`chain ${target}`] : [];
        if (sets.size > 0 && rule.body.includes('-set ')) {
          // Not in a quoted comment: a set name there refers to nothing.
          for (const m of rule.body.replace(QUOTED, '""').matchAll(SET_REFERENCE)) if (sets.has(m[1]!)) what.push(`ipset ${m[1]!}`);
        }
        for (const thing of what) {
          problems.push(`${thing} is to be removed, but a rule that is not the gateway's refers to it (${table} table, chain ${chain}), `
            + `and the kernel keeps what a rule refers to: delete that rule (${shownCommand(facts.commandPrefix, `iptables-${facts.backend} -t ${table} -D ${chain} ${rule.body}`)}) `
            + 'or point it elsewhere, and run again');
        }
      }
    }
  }
  return problems;
}
