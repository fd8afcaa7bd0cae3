/**
 * Desired state: from the config and what observe found, the addresses, route, sysctls, and the exact rules of
 * every chain we own. Rules come from the templates in `rules/` (and the user's in `rules.dir`), fed a model
 * of zones (each ready VLAN, plus the uplink) and, for each pair of zones, the forwarding rules that apply.
 *
 * Packet path in the filter table (short on purpose): FORWARD → VGW-FORWARD, which accepts replies first, then
 * branches once on the incoming NIC to VGW-FROM-<zone>, which branches once on the outgoing NIC to
 * VGW-P-<from>-<to> holding that pair's rules. The pairs without rules go straight to their verdict: one branch
 * each, or, with ipset under `default: accept`, a few set lookups for all of them (the compact dispatch). Pure.
 */
import { forwardedRange, type Config, type PortForward } from '../config/schema.js';
import { parseCidr } from '../net/ipv4.js';
import type { BindingFacts, Facts, TableName } from '../observe/facts.js';
import { ENGINE_VERSION, guarded, renderRules, TemplateError } from '../template/render.js';
import {
  FORWARD_CHAIN, fromChain, IP_FORWARD, JUMPS, pairChain, POSTROUTING_CHAIN, PREROUTING_CHAIN, SOURCES_CHAIN, USER_HOOKS, WAITING_SET, zoneKey,
  type UserHook,
} from './chains.js';
import { digest, ruleHash, ruleLine } from './hash.js';
import { matchUplink, matchVlans, nextHopOn, uplinkRoutedSources } from './match.js';
import { UPLINK, type Desired, type DesiredChain, type DesiredRule, type DropReason, type RuleMeaning, type UplinkBinding, type VlanBinding } from './types.js';
import { checkJumpTargets } from './check.js';
import { forwardingNoteIn } from './diff.js';
import { accountingSets, nicSets, portChunker, sourceSets, zoneResolver, type ZoneModel } from './zones.js';
import { outInterfaceOf, tokenAfter, verdictOf } from './rule-text.js';

export interface TemplateSource {
  readonly file: string;
  readonly source: string;
}

export interface Templates {
  readonly forward: TemplateSource;
  readonly sources: TemplateSource;
  readonly from: TemplateSource;
  readonly pair: TemplateSource;
  readonly prerouting: TemplateSource;
  readonly postrouting: TemplateSource;
  /** The user's own templates from `rules.dir`, each filling a VGW-USER- chain. */
  readonly user: ReadonlyArray<{ readonly hook: UserHook; readonly template: TemplateSource }>;
}

const VERDICT = { accept: 'ACCEPT', drop: 'DROP', reject: 'REJECT' } as const;
type Action = keyof typeof VERDICT;
const ACTION_OF: Record<string, Action> = { ACCEPT: 'accept', DROP: 'drop', REJECT: 'reject' };
/**
 * `reject` refuses a TCP connection with a TCP reset, as firewalls do, and anything else with an ICMP port
 * unreachable: Windows retries a SYN answered by ICMP for about 20 s before it gives up, where a reset ends the
 * attempt at once. A rule for every protocol becomes two: TCP's reset first, then the ICMP for the rest.
 */
const TCP_RESET = 'REJECT --reject-with tcp-reset';
function verdictsOf(action: keyof typeof VERDICT, proto: string | null): Array<[proto: string | null, verdict: string]> {
  if (action !== 'reject') return [[proto, VERDICT[action]]];
  if (proto === 'tcp') return [[proto, TCP_RESET]];
  return proto === null ? [['tcp', TCP_RESET], [null, VERDICT.reject]] : [[proto, VERDICT.reject]];
}

/** What one of VGW-FORWARD's drops is for, by its matches (forward.hbs); the user's own rules are not there. */
function forwardDropReason(body: string): DropReason | undefined {
  if (body.includes('--ctstate INVALID')) return 'invalid';
  if (/(?:^| )-d \S+/.test(body) || body.includes(`--match-set ${WAITING_SET} dst`)) return 'waiting';
  if (/(?:^| )-o \S+/.test(body)) return 'unmanaged';
  return undefined;
}

function defaultAction(config: Config, from: ZoneModel, to: ZoneModel): Action {
  if (from.name === UPLINK) return 'drop'; // new connections from outside: only port forwards (handled above)
  if (to.name === UPLINK) return 'accept'; // the write-up's Internet access
  return config.forwarding.default;
}

/** A chain as its template rendered it: the bodies, and its rules (hash, target, and the meaning of the plan that used it last). */
interface RenderedChain {
  readonly bodies: readonly string[];
  readonly rules: readonly DesiredRule[];
  /**
   * The fields of the model the render read (those the chain's own data does not hold), each with the digest of its
   * value then: the chain is served again only while every one of them holds the same value. None for a user's
   * template, whose key holds the whole model.
   */
  readonly reads?: ReadonlyMap<string, string>;
}

/**
 * Rendered chains by everything their rules depend on: table, chain, template, the chain's own data, and the fields
 * of the model its template read (a user's template: the whole model). A NIC that comes or goes changes the model's
 * lists of VLANs and zones, which only VGW-FORWARD and VGW-SOURCES read, and the data of the few chains that branch to
 * it: at 100 VLANs those are rendered again, not all 200 chains. A reload that changes one VLAN's rules likewise
 * renders only that VLAN's chains. Holds what the last plan used (plus what the current one adds), so memory stays
 * at one plan's rules. A chain whose template throws is not stored: the error comes back on every plan.
 */
class ChainCache {
  private previous = new Map<string, RenderedChain>();
  private current = new Map<string, RenderedChain>();
  /** How many chains were rendered (not served from the cache) since the process started: what the tests watch. */
  rendered = 0;

  /** The chain under `key`, if every model field it read still has the digest it had (`digestOf`). */
  get(key: string, digestOf: (field: string) => string): RenderedChain | undefined {
    const hit = this.current.get(key) ?? this.previous.get(key);
    if (!hit) return undefined;
    if (hit.reads) for (const [field, was] of hit.reads) if (digestOf(field) !== was) return undefined;
    this.current.set(key, hit);
    return hit;
  }

  set(key: string, chain: RenderedChain): RenderedChain {
    this.current.set(key, chain);
    return chain;
  }

  /** The chains of the plan just made are kept; the rest are forgotten. */
  endPlan(): void {
    this.previous = this.current;
    this.current = new Map();
  }

  clear(): void {
    this.previous = new Map();
    this.current = new Map();
  }
}

/**
 * The view a built-in template renders, its data over the model, noting each field of the model it reads (a
 * template that walks the top level itself, `{{#each this}}`, reads them all). Only the top level: a field's value
 * is read whole, by its digest.
 */
function readsNoted(model: Record<string, unknown>, data: object): { view: object; reads: Set<string> } {
  const reads = new Set<string>();
  const note = (prop: string | symbol) => {
    if (typeof prop === 'string' && !Object.prototype.hasOwnProperty.call(data, prop)) reads.add(prop);
  };
  const view = new Proxy({ ...model, ...data }, {
    get(target, prop, receiver) {
      note(prop);
      return Reflect.get(target, prop, receiver);
    },
    has(target, prop) {
      note(prop);
      return Reflect.has(target, prop);
    },
    getOwnPropertyDescriptor(target, prop) {
      note(prop);
      return Reflect.getOwnPropertyDescriptor(target, prop);
    },
    ownKeys(target) {
      for (const field of Object.keys(model)) reads.add(field);
      return Reflect.ownKeys(target);
    },
  });
  return { view, reads };
}

/** Two meanings the same (each is one level of strings). */
function sameMeaning(a: RuleMeaning | undefined, b: RuleMeaning | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  const keys = Object.keys(a) as Array<keyof RuleMeaning>;
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

const renderedChains = new ChainCache();
const templateKeys = new WeakMap<TemplateSource, string>();
const templateKey = (t: TemplateSource) => templateKeys.get(t) ?? templateKeys.set(t, digest(`${t.file}\u0000${t.source}`)).get(t)!;

/** Forgets every rendered chain: the next plan renders everything, as a freshly started process would. */
export const forgetRenderedChains = () => renderedChains.clear();

/** How many chains this process has rendered from their templates (a chain served from the cache is not counted). */
export const chainsRendered = () => renderedChains.rendered;

/**
 * The desired state depends on the facts only through which NIC carries which zone and whether ipset is here,
 * so it is remembered per (config, templates) for that binding: a supervisor's no-op pass at 10,000 rules then
 * costs a comparison of hashes, not a re-render. (Memoisation of a pure function; the result is immutable.)
 */
const memo = new WeakMap<Config, WeakMap<Templates, { key: string; desired: Desired }>>();

/** A desired state without its bindings (which NIC carries which zone): what a DesiredStore keeps. */
export type StoredDesired = Omit<Desired, 'vlans' | 'uplink'>;

/**
 * The same memo, kept between processes (the CLI's, which start with nothing rendered): a desired state by a
 * digest of everything it is a function of. The store adds the identity of the code that rendered it.
 */
export interface DesiredStore {
  load(key: string): StoredDesired | undefined;
  /** A state just rendered for `key`; the store decides when to write it (not on the way to the kernel). */
  remember(key: string, desired: StoredDesired): void;
}

let store: DesiredStore | undefined;

/** The CLI's `apply` and `plan` use a store on disk; everything else plans with the in-process memo alone. */
export function useDesiredStore(next: DesiredStore | undefined): void {
  store = next;
}

/** Everything buildDesired reads besides the bindings' NICs, which `binding` holds. */
const inputsKey = (config: Config, templates: Templates, binding: string) => digest(JSON.stringify([
  config,
  [templates.forward, templates.sources, templates.from, templates.pair, templates.prerouting, templates.postrouting].map(templateKey),
  templates.user.map((u) => [u.hook, templateKey(u.template)]),
  binding,
  ENGINE_VERSION,
]));

/** What each state planDesired returned was made from: what rememberDesired keeps it under. */
const madeFrom = new WeakMap<Desired, { config: Config; templates: Templates; binding: string }>();

const withoutBindings = ({ vlans: _v, uplink: _u, ...rest }: Desired): StoredDesired => rest;

/** Which NIC carries which zone, and the key of that binding (whether ipset is here aside). */
interface Bindings {
  readonly uplink: UplinkBinding;
  readonly vlans: VlanBinding[];
  readonly key: string;
}

/**
 * The bindings last matched for a config, with the interface facts they were matched from. A pass plans twice from
 * the same interface facts (the same objects: once they are read, and again with the tables), and at 100 VLANs
 * matching them again would follow the slowest read by a few milliseconds.
 */
const lastBindings = new WeakMap<Config, { readonly from: readonly unknown[]; readonly bindings: Bindings }>();

function bindingsOf(config: Config, facts: BindingFacts): Bindings {
  const from = [facts.links, facts.defaultRoute, facts.routed];
  const last = lastBindings.get(config);
  if (last && last.from.every((fact, i) => fact === from[i])) return last.bindings;
  const uplink = matchUplink(config, facts);
  const vlans = matchVlans(config, facts, uplink);
  const key = JSON.stringify([uplink.nic?.name, uplink.note, vlans.map((b) => [b.nic?.name, b.note, b.routed, b.routedInUse]),
    uplinkRoutedSources(facts, uplink, vlans)]);
  const bindings = { uplink, vlans, key };
  lastBindings.set(config, { from, bindings });
  return bindings;
}

export function planDesired(config: Config, facts: BindingFacts, templates: Templates): Desired {
  const bindings = bindingsOf(config, facts);
  const { uplink, vlans } = bindings;
  const key = `${bindings.key} ${facts.sets !== undefined}`;
  const byTemplates = memo.get(config) ?? memo.set(config, new WeakMap()).get(config)!;
  const hit = byTemplates.get(templates);
  let desired: Desired;
  if (hit?.key === key) {
    desired = { ...hit.desired, vlans, uplink };
  } else {
    const storeKey = store ? inputsKey(config, templates, key) : undefined;
    const stored = storeKey === undefined ? undefined : store!.load(storeKey);
    desired = stored ? { ...stored, vlans, uplink } : buildDesired(config, facts, templates, uplink, vlans);
    if (storeKey !== undefined && !stored) store!.remember(storeKey, withoutBindings(desired));
    byTemplates.set(templates, { key, desired });
  }
  madeFrom.set(desired, { config, templates, binding: key });
  return desired;
}

/**
 * Keeps a state that planDesired returned in `target`, under the key of exactly the inputs it was made from (the
 * supervisor's last state, at its stop: what its restart will plan). A state planDesired did not make is not kept.
 */
export function rememberDesired(target: DesiredStore, desired: Desired): void {
  const from = madeFrom.get(desired);
  if (from) target.remember(inputsKey(from.config, from.templates, from.binding), withoutBindings(desired));
}

/**
 * A port forward as its rules match it: the port, or a range as iptables writes one (6000:6010), it takes on the
 * uplink (`dport`); the port its DNAT rewrites to (none for a range, whose ports are kept); the port or range it
 * reaches at the host (`ports`).
 */
function forwardedTo(pf: PortForward): { dport: string; toPort: number | null; ports: string } {
  const [low, high] = forwardedRange(pf.port);
  if (low !== high) return { dport: `${low}:${high}`, toPort: null, ports: `${low}:${high}` };
  const toPort = pf.toPort ?? low;
  return { dport: String(low), toPort, ports: String(toPort) };
}

function buildDesired(config: Config, facts: BindingFacts, templates: Templates, uplink: UplinkBinding, vlans: VlanBinding[]): Desired {
  const ready = vlans.filter((b) => b.nic !== undefined);

  const vlanZones: ZoneModel[] = ready.map(({ vlan, nic }) => ({
    name: vlan.name, key: zoneKey(vlan.id), nic: nic!.name, chain: fromChain(zoneKey(vlan.id)), subnet: vlan.subnet,
  }));
  const uplinkZone: ZoneModel | undefined = uplink.nic
    ? { name: UPLINK, key: zoneKey('uplink'), nic: uplink.nic.name, chain: fromChain(zoneKey('uplink')), subnet: null }
    : undefined;
  const zones = uplinkZone ? [...vlanZones, uplinkZone] : vlanZones;

  const userChains = new Map(templates.user.map((u) => [u.hook, USER_HOOKS[u.hook].chain]));
  const model = {
    vlans: ready.map(({ vlan, nic }) => ({ ...vlan, interface: vlan.interface ?? null, nic: nic!.name, chain: fromChain(zoneKey(vlan.id)) })),
    waiting: vlans.filter((b) => !b.nic).map((b) => b.vlan.name),
    uplink: {
      nic: uplink.nic?.name ?? null,
      gateway: config.uplink.gateway ?? null,
      nat: config.uplink.nat,
      snatTo: config.uplink.nat === 'snat' ? config.uplink.snatTo ?? null : null,
    },
    zones: zones.map((z) => ({ name: z.name, nic: z.nic, chain: z.chain })),
  };

  const chains: DesiredChain[] = [];
  // Digests of the model's fields, and of the whole model (a user's template's key), each made once per plan.
  const fieldDigests = new Map<string, string>();
  const digestOf = (field: string) => {
    let d = fieldDigests.get(field);
    if (d === undefined) {
      const value: unknown = Object.prototype.hasOwnProperty.call(model, field) ? model[field as keyof typeof model] : undefined;
      fieldDigests.set(field, d = value === undefined ? '-' : digest(JSON.stringify(value)));
    }
    return d;
  };
  let modelKey: string | undefined;
  /**
   * Renders one chain from its template, or finds it rendered by an earlier plan from the same inputs. Its rules'
   * meanings (by zone names, which neither the data nor the bodies hold) are this plan's: a chain whose meanings
   * are as before is the very same array of rules.
   */
  const add = (table: TableName, name: string, template: TemplateSource, data: object | 'user',
    meaningOf: (body: string, target: string | undefined) => RuleMeaning | undefined = () => undefined) => {
    const user = data === 'user';
    // A user's template may read anything in the model, and sees it whole, guarded: a name it does not have is an
    // error, not nothing. It is keyed by the whole model.
    const key = user
      ? `${table} ${name} ${templateKey(template)} user ${modelKey ??= digest(JSON.stringify(model))}`
      : `${table} ${name} ${templateKey(template)} ${digest(JSON.stringify(data))}`;
    const ruleOf = (body: string, hash: string, target: string | undefined, meaning: RuleMeaning | undefined): DesiredRule => {
      const line = ruleLine(hash, body);
      return meaning ? { line, hash, target, meaning } : { line, hash, target };
    };
    const hit = renderedChains.get(key, digestOf);
    let rules: readonly DesiredRule[];
    if (!hit) {
      const { view, reads } = user ? { view: guarded(model), reads: undefined } : readsNoted(model, data);
      const bodies = renderRules(template.source, template.file, view, user);
      renderedChains.rendered++;
      rules = bodies.map((body) => {
        const target = verdictOf(body);
        return ruleOf(body, ruleHash(table, name, body), target, meaningOf(body, target));
      });
      renderedChains.set(key, { bodies, rules, ...(reads ? { reads: new Map([...reads].map((f) => [f, digestOf(f)])) } : {}) });
    } else {
      rules = hit.rules;
      const meanings = hit.bodies.map((body, i) => meaningOf(body, hit.rules[i]!.target));
      if (meanings.some((m, i) => !sameMeaning(m, hit.rules[i]!.meaning))) {
        rules = hit.bodies.map((body, i) => ruleOf(body, hit.rules[i]!.hash, hit.rules[i]!.target, meanings[i]));
        renderedChains.set(key, { ...hit, rules });
      }
    }
    chains.push({ table, name, rules });
  };

  // Each forwarding rule, in order, filed under the one pair of zones it can match.
  const resolve = zoneResolver(zones);
  const chunks = portChunker();
  type Entry = { source: string | null; destination: string | null; proto: string | null; ports: string | null; verdict: string };
  const pairEntries = new Map<string, Entry[]>();
  for (const rule of config.forwarding.rules) {
    const src = resolve(rule.from);
    const dst = resolve(rule.to);
    if (!src || !dst || src.zone === dst.zone) continue; // a zone that is waiting, or traffic that stays in one VLAN
    const proto = rule.proto && rule.proto !== 'all' ? rule.proto : null;
    const key = `${src.zone.key}>${dst.zone.key}`;
    const list = pairEntries.get(key) ?? pairEntries.set(key, []).get(key)!;
    for (const ports of rule.ports === undefined ? [null] : chunks(rule.ports)) {
      for (const [p, verdict] of verdictsOf(rule.action, proto)) list.push({ source: src.address, destination: dst.address, proto: p, ports, verdict });
    }
  }

  // Established traffic is accepted first and counted per pair of zones by set lookups (if ipset is here).
  const pairSets = facts.sets === undefined ? [] : accountingSets(zones);
  // With ipset and `default: accept`, a VLAN's chain branches only to the pairs that have rules of their own; new
  // connections of every other pair are accepted (and counted) by the same lookups, and a NIC-set lookup accepts
  // the few whose source is outside the VLAN's subnet. 100 VLANs: 8 rules per VLAN's chain instead of 102.
  const compact = pairSets.length > 0 && config.forwarding.default === 'accept';
  const zoneNicSets = compact ? nicSets(zones) : [];
  // Anti-spoofing, before anything is accepted: a VLAN's NIC forwards from its subnet and the networks routed
  // through it, the uplink from anywhere but a VLAN's subnet. With ipset, two or three lookups; without, rules per
  // VLAN and routed network.
  const source = facts.sets === undefined ? undefined : sourceSets(vlans);
  const sourceList = source ? [source.subnets, source.subnetNics, source.routed, source.waiting].filter((set) => set !== undefined) : [];
  const sets = [...pairSets, ...zoneNicSets, ...sourceList];
  add('filter', SOURCES_CHAIN, templates.sources, {
    sets: source ? { subnets: source.subnets.name, nics: source.subnetNics.name, routed: source.routed?.name ?? null } : null,
    sources: source ? [] : ready.map((b) => ({ nic: b.nic!.name, subnet: b.vlan.subnet })),
    subnets: source ? [] : vlans.map((b) => b.vlan.subnet),
    routed: source ? [] : ready.flatMap((b) => (b.routed ?? []).map((prefix) => ({ nic: b.nic!.name, prefix }))),
    uplinkRouted: uplinkRoutedSources(facts, uplink, vlans),
  }, (_body, target) => (target === 'DROP' ? { kind: 'drop', reason: 'spoofed' } : undefined));
  add('filter', FORWARD_CHAIN, templates.forward, {
    sourcesChain: SOURCES_CHAIN,
    waitingSet: source?.waiting?.name ?? null,
    waitingSubnets: source ? [] : vlans.filter((b) => !b.nic).map((b) => b.vlan.subnet),
    userChain: userChains.get('forward') ?? null,
    accountingSets: pairSets.map((set) => set.name),
    // A network routed behind one host of a VLAN, reached by another host of it through the gateway (see the template).
    hairpin: ready.flatMap((b) => (b.routed ?? []).map((prefix) => ({ nic: b.nic!.name, prefix }))),
  }, (body, target) => {
    const reason = target === 'DROP' ? forwardDropReason(body) : undefined;
    return reason ? { kind: 'drop', reason } : undefined;
  });
  // filter: one chain per source zone, branching on the outgoing NIC; one per pair that has rules.
  const nicZone = new Map(zones.map((z) => [z.nic, z.name]));
  for (const from of zones) {
    const branches: Array<{ nic: string; target: string }> = [];
    const compactFrom = compact && from.name !== UPLINK;
    for (const to of zones) {
      if (to === from) continue;
      const entries = pairEntries.get(`${from.key}>${to.key}`);
      const fallback = defaultAction(config, from, to);
      if (!entries) {
        if (!compactFrom) branches.push({ nic: to.nic, target: VERDICT[fallback] });
        continue;
      }
      const name = pairChain(from.key, to.key);
      // After a rule that matches everything of the pair, the pair's default can match nothing: not written (it
      // would also be a second rule of the same body as such a rule, under the same hash).
      const catchAll = entries.some((e) => e.source === null && e.destination === null && e.proto === null && e.ports === null);
      add('filter', name, templates.pair, { rules: entries, defaultVerdict: catchAll ? null : VERDICT[fallback] }, (_body, target) => {
        const action = ACTION_OF[target ?? ''];
        return action ? { kind: 'forward', from: from.name, to: to.name, action } : undefined;
      });
      branches.push({ nic: to.nic, target: name });
    }
    const forwards = from.name === UPLINK
      ? config.portForwards.flatMap((pf) => {
        const target = resolve(pf.to);
        return target && target.zone.subnet !== null ? [{ nic: target.zone.nic, to: pf.to, proto: pf.proto, ports: forwardedTo(pf).ports }] : [];
      })
      : [];
    add('filter', from.chain, templates.from, {
      branches,
      portForwards: forwards,
      ownNic: from.nic,
      acceptSets: compactFrom ? pairSets.map((set) => set.name) : [],
      nicSets: compactFrom ? zoneNicSets.map((set) => set.name) : [],
    }, (body, target) => {
      const action = ACTION_OF[target ?? ''];
      const out = outInterfaceOf(body);
      const to = nicZone.get(out ?? '');
      if (target === 'DROP' && !body.includes('--match-set')) {
        // The drops that are no pair's: back out of the NIC it came in on, or out of one that is no zone's.
        if (out === from.nic) return { kind: 'drop', reason: 'hairpin' };
        if (out === undefined) return { kind: 'drop', reason: 'unmanaged' };
      }
      // Set lookups carry no -o: their packets are counted by the sets' members, not by the rule.
      return action && to && to !== from.name ? { kind: 'forward', from: from.name, to, action } : undefined;
    });
  }

  // nat: source NAT towards the uplink, DNAT for port forwards; nothing to do while the uplink is missing.
  const natOn = uplinkZone !== undefined && config.uplink.nat !== 'none';
  const vlanOfAddress = (address: string | undefined) => {
    const hit = address === undefined ? undefined : resolve(address);
    return hit && hit.zone.subnet !== null ? hit.zone.name : undefined;
  };
  add('nat', PREROUTING_CHAIN, templates.prerouting, {
    userChain: userChains.get('prerouting') ?? null,
    portForwards: uplinkZone ? config.portForwards
      .filter((pf) => vlanOfAddress(pf.to) !== undefined)
      .map((pf) => ({ proto: pf.proto, port: forwardedTo(pf).dport, to: pf.to, toPort: forwardedTo(pf).toPort })) : [],
  }, (body, target) => {
    const vlan = target === 'DNAT' ? vlanOfAddress(tokenAfter(body, ['--to-destination'])?.split(':')[0]) : undefined;
    return vlan ? { kind: 'nat', vlan, type: 'dnat' } : undefined;
  });
  // Source NAT per VLAN subnet. A network routed behind a VLAN host leaves NATed as its VLAN does (as a router's
  // automatic outbound NAT takes in its static routes' networks): the VLAN whose route to it is in use (a backup
  // route through another VLAN does not decide). Each source is decided by its own VLAN, in this order: the VLANs'
  // subnets, each NATed or returned as its VLAN says, so that a summary route (10.0.0.0/8 via a site router) cannot
  // NAT a VLAN that is not; the gateway's own traffic, returned (a summary may cover the uplink's address); the
  // routed networks, most specific first. One in use through VLANs of both kinds (multipath) is not NATed: a VLAN
  // that is not NATed never is.
  const subnetNat = natOn ? ready.map((b) => ({ name: b.vlan.name, subnet: b.vlan.subnet, exempt: !b.vlan.masquerade })) : [];
  const routedByPrefix = new Map<string, { name: string; subnet: string; exempt: boolean }>();
  const vlanSubnets = new Set(ready.map((b) => b.vlan.subnet));
  for (const b of natOn ? ready : []) {
    // A route to a VLAN's own subnet through another VLAN's host: that VLAN's subnet rule decides it already.
    for (const prefix of (b.routedInUse ?? []).filter((p) => !vlanSubnets.has(p))) {
      const other = routedByPrefix.get(prefix);
      routedByPrefix.set(prefix, other ? { ...other, exempt: other.exempt || !b.vlan.masquerade } : { name: b.vlan.name, subnet: prefix, exempt: !b.vlan.masquerade });
    }
  }
  const routedNat = [...routedByPrefix.values()].sort((a, b) => parseCidr(b.subnet)!.prefix - parseCidr(a.subnet)!.prefix);
  const anyRoutedNat = routedNat.some((r) => !r.exempt);
  // Without a routed network to NAT, the chain is the subnets of the VLANs NATed, as it always was.
  const nat = anyRoutedNat ? [...subnetNat, { local: true }, ...routedNat] : subnetNat.filter((n) => !n.exempt);
  const natVlanOf = new Map(nat.flatMap((n) => ('subnet' in n && !n.exempt ? [[n.subnet, n.name]] : [])));
  add('nat', POSTROUTING_CHAIN, templates.postrouting, {
    userChain: userChains.get('postrouting') ?? null,
    nat,
  }, (body, target) => {
    const vlan = natVlanOf.get(tokenAfter(body, ['-s', '--source']) ?? '');
    return vlan && (target === 'MASQUERADE' || target === 'SNAT') ? { kind: 'nat', vlan, type: target === 'SNAT' ? 'snat' : 'masquerade' } : undefined;
  });

  // Every template of rules.dir is rendered, and what is wrong with each said in one error.
  const refused: TemplateError[] = [];
  for (const { hook, template } of templates.user) {
    const { table, chain } = USER_HOOKS[hook];
    try {
      add(table, chain, template, 'user');
    } catch (error) {
      if (!(error instanceof TemplateError)) throw error;
      refused.push(error);
    }
  }
  if (refused.length > 0) throw TemplateError.of(refused);

  checkJumpTargets(chains, new Map(templates.user.map((u) => [USER_HOOKS[u.hook].chain, u.template])));
  renderedChains.endPlan();

  return {
    vlans,
    uplink,
    addresses: ready.map(({ vlan, nic }) => ({
      vlan: vlan.name, nic: nic!.name, address: vlan.gateway, prefix: parseCidr(vlan.subnet)!.prefix,
    })),
    // The route waits for the uplink NIC like a VLAN waits for its own, and for an address on the gateway's network
    // (the kernel refuses an unreachable next hop; matchUplink notes why).
    ...(config.uplink.gateway && uplink.nic?.up && nextHopOn(uplink.nic, config.uplink.gateway)
      ? { route: { gateway: config.uplink.gateway, dev: uplink.nic.name } } : {}),
    sysctls: { 'net.ipv4.ip_forward': '1' },
    chains,
    jumps: JUMPS,
    sets,
  };
}

/** The state `down` converges to: nothing of ours. The VLAN matching is kept so addresses can be removed. */
export function planEmpty(config: Config, facts: Facts, memory: { forwardingWasOff?: boolean } = {}): Desired {
  const uplink = matchUplink(config, facts);
  // Forwarding goes back off only if it was off before we switched it on (our jumps remember).
  const wasOff = forwardingNoteIn(facts) || Boolean(memory.forwardingWasOff);
  return {
    vlans: matchVlans(config, facts, uplink), uplink, addresses: [], sysctls: wasOff ? { [IP_FORWARD]: '0' } : {}, chains: [], jumps: [], sets: [],
  };
}
