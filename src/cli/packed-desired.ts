/**
 * A desired state as the plan cache's file holds it. As objects, 10,000 rule lines are 2.7 MB of JSON (each rule's
 * keys, its hash twice, its meaning spelt out), and a `vlan-gateway apply` with nothing to do parses that at every
 * run, inside a no-op's budget of one table read plus 20 ms. Packed: each chain's rule lines, targets and meanings
 * as lists (a rule's hash is read back from its line's comment; each distinct meaning is kept once, by number),
 * each set's members and their zones as lists: 1.4 MB, parsed in about two thirds of the time.
 *
 * Packing is exact or not done: a rule whose line does not carry its hash as the planner writes it, or anything
 * with a field this file does not know, is not packed (the state is then not kept, and the next run renders).
 * Unpacking gives the state as it was, or nothing for a file of any other shape. Pure.
 */
import { RULE_COMMENT } from '../plan/hash.js';
import type { DesiredChain, DesiredRule, DesiredSet, RuleMeaning } from '../plan/types.js';
import type { StoredDesired } from '../plan/desired.js';

interface PackedChain {
  readonly table: string;
  readonly name: string;
  readonly lines: readonly string[];
  /** Each rule's target, null for none. */
  readonly targets: ReadonlyArray<string | null>;
  /** Each rule's meaning by its number in PackedDesired.meanings, -1 for none. */
  readonly meanings: readonly number[];
}

interface PackedSet {
  readonly name: string;
  readonly type: string;
  readonly role: string;
  readonly hashsize: number;
  readonly members: readonly string[];
  /** Each member's zones, null where it has none. */
  readonly from: ReadonlyArray<string | null>;
  readonly to: ReadonlyArray<string | null>;
}

export interface PackedDesired {
  readonly packed: 1;
  readonly addresses: StoredDesired['addresses'];
  readonly route?: StoredDesired['route'];
  readonly sysctls: StoredDesired['sysctls'];
  readonly jumps: StoredDesired['jumps'];
  readonly meanings: readonly RuleMeaning[];
  readonly chains: readonly PackedChain[];
  readonly sets: readonly PackedSet[];
}

const DESIRED_KEYS = new Set(['addresses', 'route', 'sysctls', 'chains', 'jumps', 'sets']);
const CHAIN_KEYS = new Set(['table', 'name', 'rules']);
const RULE_KEYS = new Set(['line', 'hash', 'target', 'meaning']);
const SET_KEYS = new Set(['name', 'type', 'role', 'hashsize', 'members']);
const MEMBER_KEYS = new Set(['member', 'from', 'to']);

const onlyKeys = (value: object, keys: ReadonlySet<string>) => Object.keys(value).every((k) => keys.has(k));

/** The hash in a rule line as the planner writes it (ruleLine), or undefined. */
function hashOf(line: string): string | undefined {
  if (!line.startsWith(RULE_COMMENT)) return undefined;
  const end = line.indexOf(' ', RULE_COMMENT.length);
  return end > RULE_COMMENT.length ? line.slice(RULE_COMMENT.length, end) : undefined;
}

/** The state packed, or undefined when it holds anything packing would not give back exactly. */
export function packDesired(desired: StoredDesired): PackedDesired | undefined {
  if (!onlyKeys(desired, DESIRED_KEYS)) return undefined;
  const meanings: RuleMeaning[] = [];
  const numbers = new Map<string, number>();
  const numberOf = (meaning: RuleMeaning | undefined): number => {
    if (meaning === undefined) return -1;
    const key = JSON.stringify(meaning);
    let n = numbers.get(key);
    if (n === undefined) {
      n = meanings.push(meaning) - 1;
      numbers.set(key, n);
    }
    return n;
  };
  const chains: PackedChain[] = [];
  for (const chain of desired.chains) {
    if (!onlyKeys(chain, CHAIN_KEYS)) return undefined;
    const lines: string[] = [];
    const targets: Array<string | null> = [];
    const ruleMeanings: number[] = [];
    for (const rule of chain.rules) {
      if (!onlyKeys(rule, RULE_KEYS) || hashOf(rule.line) !== rule.hash) return undefined;
      lines.push(rule.line);
      targets.push(rule.target ?? null);
      ruleMeanings.push(numberOf(rule.meaning));
    }
    chains.push({ table: chain.table, name: chain.name, lines, targets, meanings: ruleMeanings });
  }
  const sets: PackedSet[] = [];
  for (const set of desired.sets) {
    if (!onlyKeys(set, SET_KEYS) || !set.members.every((m) => onlyKeys(m, MEMBER_KEYS) && (m.from === undefined) === (m.to === undefined))) return undefined;
    sets.push({
      name: set.name, type: set.type, role: set.role, hashsize: set.hashsize,
      members: set.members.map((m) => m.member), from: set.members.map((m) => m.from ?? null), to: set.members.map((m) => m.to ?? null),
    });
  }
  return {
    packed: 1, addresses: desired.addresses, ...(desired.route ? { route: desired.route } : {}), sysctls: desired.sysctls, jumps: desired.jumps,
    meanings, chains, sets,
  };
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;
const isArray = (value: unknown): value is unknown[] => Array.isArray(value);
const isString = (value: unknown): value is string => typeof value === 'string';
const stringsOf = (value: unknown, length?: number): value is string[] =>
  isArray(value) && (length === undefined || value.length === length) && value.every(isString);
const zonesOf = (value: unknown, length: number): value is Array<string | null> =>
  isArray(value) && value.length === length && value.every((z) => z === null || isString(z));

function unpackChain(value: unknown, meanings: readonly RuleMeaning[]): DesiredChain | undefined {
  if (!isObject(value) || !isString(value.table) || !isString(value.name) || !stringsOf(value.lines)) return undefined;
  const { lines, targets, meanings: numbers } = value;
  if (!zonesOf(targets, lines.length) || !isArray(numbers) || numbers.length !== lines.length) return undefined;
  const rules: DesiredRule[] = new Array<DesiredRule>(lines.length);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const hash = hashOf(line);
    if (hash === undefined) return undefined;
    const target = targets[i];
    const n = numbers[i];
    if (typeof n !== 'number' || !(n === -1 || (Number.isInteger(n) && n >= 0 && n < meanings.length))) return undefined;
    const meaning = n === -1 ? undefined : meanings[n]!;
    rules[i] = target === null
      ? (meaning ? { line, hash, meaning } : { line, hash })
      : (meaning ? { line, hash, target: target!, meaning } : { line, hash, target: target! });
  }
  return { table: value.table as DesiredChain['table'], name: value.name, rules };
}

function unpackSet(value: unknown): DesiredSet | undefined {
  if (!isObject(value) || !isString(value.name) || !isString(value.type) || !isString(value.role) || typeof value.hashsize !== 'number') return undefined;
  const { members, from, to } = value;
  if (!stringsOf(members) || !zonesOf(from, members.length) || !zonesOf(to, members.length)) return undefined;
  const unpacked: Array<DesiredSet['members'][number]> = new Array(members.length);
  for (let i = 0; i < members.length; i++) {
    const f = from[i];
    const t = to[i];
    if ((f === null) !== (t === null)) return undefined;
    unpacked[i] = f === null ? { member: members[i]! } : { member: members[i]!, from: f!, to: t! };
  }
  return { name: value.name, type: value.type, role: value.role as DesiredSet['role'], members: unpacked, hashsize: value.hashsize };
}

/** The state a file holds, or undefined when it is not one packDesired made (cut short, edited, another format). */
export function unpackDesired(value: unknown): StoredDesired | undefined {
  if (!isObject(value) || value.packed !== 1 || !isArray(value.addresses) || !isObject(value.sysctls) || !isArray(value.jumps)
    || !isArray(value.meanings) || !value.meanings.every(isObject) || !isArray(value.chains) || !isArray(value.sets)) return undefined;
  const meanings = value.meanings as RuleMeaning[];
  const chains: DesiredChain[] = [];
  for (const c of value.chains) {
    const chain = unpackChain(c, meanings);
    if (!chain) return undefined;
    chains.push(chain);
  }
  const sets: DesiredSet[] = [];
  for (const s of value.sets) {
    const set = unpackSet(s);
    if (!set) return undefined;
    sets.push(set);
  }
  return {
    addresses: value.addresses as StoredDesired['addresses'], ...(isObject(value.route) ? { route: value.route as NonNullable<StoredDesired['route']> } : {}),
    sysctls: value.sysctls as StoredDesired['sysctls'], chains, jumps: value.jumps as StoredDesired['jumps'], sets,
  };
}
