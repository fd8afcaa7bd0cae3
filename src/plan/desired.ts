/**
 * Desired state: from the config and what observe found, the addresses, route, sysctls, and the exact rules of
 * every chain we own. Rules come from the templates in `rules/` (and the user's in `rules.dir`), fed a model
 * of zones (each ready VLAN, plus the uplink) and, for each pair of zones, the forwarding rules that apply.
 *
 * Packet path in the filter table (short on purpose): FORWARD → VGW-FORWARD, which accepts replies first, then
 * branches once on the incoming NIC to VGW-FROM-<zone>, which branches once on the outgoing NIC either straight
 * to a verdict (pairs without rules) or to VGW-P-<from>-<to> holding that pair's rules. Pure.
 */
import type { Config } from '../config/schema.js';
import { parsePorts } from '../config/validate.js';
import { contains, networkOf, broadcastOf, parseAddress, parseCidr } from '../net/ipv4.js';
import type { Facts, TableName } from '../observe/facts.js';
import { renderRules } from '../template/render.js';
import {
  ACCOUNTING_SET, ACCOUNTING_SET_TYPE, ANY_HALVES, FORWARD_CHAIN, fromChain, JUMPS, pairChain, POSTROUTING_CHAIN, PREROUTING_CHAIN, USER_HOOKS, zoneKey, type UserHook,
} from './chains.js';
import { COMMENT_PREFIX, ruleHash } from './hash.js';
import { matchUplink, matchVlans } from './match.js';
import { UPLINK, type Desired, type DesiredChain, type DesiredSet, type DesiredRule, type RuleMeaning, type Zone } from './types.js';
import { checkJumpTargets } from './check.js';
import { outInterfaceOf, tokenAfter, verdictOf } from './rule-text.js';

export interface TemplateSource {
  readonly file: string;
  readonly source: string;
}

export interface Templates {
  readonly forward: TemplateSource;
  readonly from: TemplateSource;
  readonly pair: TemplateSource;
  readonly prerouting: TemplateSource;
  readonly postrouting: TemplateSource;
  /** The user's own templates from `rules.dir`, each filling a VGW-USER- chain. */
  readonly user: ReadonlyArray<{ readonly hook: UserHook; readonly template: TemplateSource }>;
}

interface ZoneModel {
  readonly name: Zone;
  readonly key: string;
  readonly nic: string;
  readonly chain: string;
  readonly subnet: string | null;
}

const VERDICT = { accept: 'ACCEPT', drop: 'DROP', reject: 'REJECT' } as const;
type Action = keyof typeof VERDICT;
const ACTION_OF: Record<string, Action> = { ACCEPT: 'accept', DROP: 'drop', REJECT: 'reject' };

/** multiport takes at most 15 ports, a range counting as two. */
function multiportChunks(ports: string | number): string[] {
  const chunks: string[] = [];
  let current: string[] = [];
  let slots = 0;
  for (const [low, high] of parsePorts(ports)) {
    const cost = low === high ? 1 : 2;
    if (slots + cost > 15) {
      chunks.push(current.join(','));
      current = [];
      slots = 0;
    }
    current.push(low === high ? String(low) : `${low}:${high}`);
    slots += cost;
  }
  if (current.length > 0) chunks.push(current.join(','));
  return chunks;
}

/** Does a rule's from/to reference cover this zone? Returns the address match to add, or false. */
function refMatches(ref: string, zone: ZoneModel): { address: string | null } | false {
  if (ref === zone.name) return { address: null };
  if (zone.subnet === null || ref === UPLINK) return false;
  const subnet = parseCidr(zone.subnet)!;
  if (ref.includes('/')) {
    const c = parseCidr(ref);
    return c && networkOf(c) >= networkOf(subnet) && broadcastOf(c) <= broadcastOf(subnet) ? { address: ref } : false;
  }
  const a = parseAddress(ref);
  return a !== undefined && contains(subnet, a) ? { address: ref } : false;
}

function defaultAction(config: Config, from: ZoneModel, to: ZoneModel): Action {
  if (from.name === UPLINK) return 'drop'; // new connections from outside: only port forwards (handled above)
  if (to.name === UPLINK) return 'accept'; // the write-up's Internet access
  return config.forwarding.default;
}

export function planDesired(config: Config, facts: Facts, templates: Templates): Desired {
  const uplink = matchUplink(config, facts);
  const vlans = matchVlans(config, facts, uplink);
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
  const add = (table: TableName, name: string, bodies: string[], meaningOf: (body: string) => RuleMeaning | undefined = () => undefined) => {
    const rules: DesiredRule[] = bodies.map((body) => {
      const hash = ruleHash(table, name, body);
      const meaning = meaningOf(body);
      return { line: `-m comment --comment ${COMMENT_PREFIX}${hash} ${body}`, hash, ...(meaning ? { meaning } : {}) };
    });
    chains.push({ table, name, rules });
  };
  const render = (t: TemplateSource, data: object) => renderRules(t.source, t.file, { ...model, ...data });

  // filter: the dispatcher, then one chain per source zone, then one per pair that has rules.
  // Established traffic is accepted first and counted per pair of zones by one set lookup (if ipset is here).
  const sets: DesiredSet[] = facts.sets === undefined ? [] : [{
    name: ACCOUNTING_SET,
    type: ACCOUNTING_SET_TYPE,
    members: zones.flatMap((from) => zones.filter((to) => to !== from).flatMap((to) =>
      (from.subnet === null ? ANY_HALVES : [from.subnet]).map((net) => ({ member: `${net},${to.nic}`, from: from.name, to: to.name })))),
  }];
  add('filter', FORWARD_CHAIN, render(templates.forward, {
    userChain: userChains.get('forward') ?? null,
    accountingSet: sets.length > 0 ? ACCOUNTING_SET : null,
  }));
  const nicZone = new Map(zones.map((z) => [z.nic, z.name]));
  for (const from of zones) {
    const branches: Array<{ nic: string; target: string }> = [];
    for (const to of zones) {
      if (to === from) continue;
      const entries: Array<{ source: string | null; destination: string | null; proto: string | null; ports: string | null; verdict: string }> = [];
      for (const rule of config.forwarding.rules) {
        const src = refMatches(rule.from, from);
        const dst = src && refMatches(rule.to, to);
        if (!src || !dst) continue;
        const proto = rule.proto && rule.proto !== 'all' ? rule.proto : null;
        const chunks = rule.ports === undefined ? [null] : multiportChunks(rule.ports);
        for (const ports of chunks) {
          entries.push({ source: src.address, destination: dst.address, proto, ports, verdict: VERDICT[rule.action] });
        }
      }
      const fallback = defaultAction(config, from, to);
      if (entries.length === 0) {
        branches.push({ nic: to.nic, target: VERDICT[fallback] });
        continue;
      }
      const name = pairChain(from.key, to.key);
      add('filter', name, render(templates.pair, { rules: entries, defaultVerdict: VERDICT[fallback] }), (body) => {
        const action = ACTION_OF[verdictOf(body) ?? ''];
        return action ? { kind: 'forward', from: from.name, to: to.name, action } : undefined;
      });
      branches.push({ nic: to.nic, target: name });
    }
    const forwards = from.name === UPLINK
      ? config.portForwards.flatMap((pf) => {
        const target = vlanZones.find((z) => refMatches(pf.to, z));
        return target ? [{ nic: target.nic, to: pf.to, proto: pf.proto, port: pf.port, toPort: pf.toPort ?? pf.port }] : [];
      })
      : [];
    add('filter', from.chain, render(templates.from, { branches, portForwards: forwards }), (body) => {
      const action = ACTION_OF[verdictOf(body) ?? ''];
      const to = nicZone.get(outInterfaceOf(body) ?? '');
      return action && to ? { kind: 'forward', from: from.name, to, action } : undefined;
    });
  }

  // nat: source NAT towards the uplink, DNAT for port forwards; nothing to do while the uplink is missing.
  const natOn = uplinkZone !== undefined && config.uplink.nat !== 'none';
  const vlanOfAddress = (address: string | undefined) => vlanZones.find((z) => address !== undefined && refMatches(address, z))?.name;
  add('nat', PREROUTING_CHAIN, render(templates.prerouting, {
    userChain: userChains.get('prerouting') ?? null,
    portForwards: uplinkZone ? config.portForwards
      .filter((pf) => vlanZones.some((z) => refMatches(pf.to, z)))
      .map((pf) => ({ ...pf, toPort: pf.toPort ?? pf.port })) : [],
  }), (body) => {
    const vlan = verdictOf(body) === 'DNAT' ? vlanOfAddress(tokenAfter(body, ['--to-destination'])?.split(':')[0]) : undefined;
    return vlan ? { kind: 'nat', vlan, type: 'dnat' } : undefined;
  });
  add('nat', POSTROUTING_CHAIN, render(templates.postrouting, {
    userChain: userChains.get('postrouting') ?? null,
    masquerade: natOn ? ready.filter((b) => b.vlan.masquerade).map((b) => ({ name: b.vlan.name, subnet: b.vlan.subnet })) : [],
  }), (body) => {
    const target = verdictOf(body);
    const vlan = vlanZones.find((z) => z.subnet === tokenAfter(body, ['-s', '--source']))?.name;
    return vlan && (target === 'MASQUERADE' || target === 'SNAT') ? { kind: 'nat', vlan, type: target === 'SNAT' ? 'snat' : 'masquerade' } : undefined;
  });

  for (const { hook, template } of templates.user) {
    const { table, chain } = USER_HOOKS[hook];
    add(table, chain, render(template, {}));
  }

  checkJumpTargets(chains, new Map(templates.user.map((u) => [USER_HOOKS[u.hook].chain, u.template.file])));

  return {
    vlans,
    uplink,
    addresses: ready.map(({ vlan, nic }) => ({
      vlan: vlan.name, nic: nic!.name, address: vlan.gateway, prefix: parseCidr(vlan.subnet)!.prefix,
    })),
    // The route waits for the uplink NIC like a VLAN waits for its own: the kernel refuses an unreachable next hop.
    ...(config.uplink.gateway && uplink.nic ? { route: { gateway: config.uplink.gateway, dev: uplink.nic.name } } : {}),
    sysctls: { 'net.ipv4.ip_forward': '1' },
    chains,
    jumps: JUMPS,
    sets,
  };
}

/** The state `down` converges to: nothing of ours. The VLAN matching is kept so addresses can be removed. */
export function planEmpty(config: Config, facts: Facts): Desired {
  const uplink = matchUplink(config, facts);
  return { vlans: matchVlans(config, facts, uplink), uplink, addresses: [], sysctls: {}, chains: [], jumps: [], sets: [] };
}
