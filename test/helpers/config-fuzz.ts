/**
 * A seeded generator of config files near the edges of what validation takes: VLAN names at the length limit and
 * with dashes, ids at 1 and 4094, subnets from /1 to /32 with gateways at their edges, interfaces by odd names and
 * by MAC, every uplink and NAT form, forwarding rules of every proto with port lists at 0/1/65535, reversed and
 * repeated, port forwards with and without toPort, unicode, and YAML's own oddities (anchors, merge keys, numbers
 * as text, yes/no, 010, 0x10, floats, long strings, null values, repeated keys, CRLF). The same seed gives the
 * same text. Most files are a valid base with one to three changes, so both sides of the contract are walked:
 * what validates reaches the kernel, what does not must be refused with a path and a sentence.
 */
import type { Config } from '../../src/config/schema.js';
import { planDesired, type Templates } from '../../src/plan/desired.js';
import { diff } from '../../src/plan/diff.js';
import { syntheticFacts } from '../../src/plan/synthetic.js';
import { prng } from './prng.js';

/** A YAML node: a scalar written as-is (`raw`), a mapping, a list, or an alias of an anchor. */
type Node =
  | { kind: 'raw'; text: string; anchor?: string }
  | { kind: 'map'; entries: Array<[string, Node]>; anchor?: string }
  | { kind: 'seq'; items: Node[]; anchor?: string }
  | { kind: 'alias'; name: string };

const raw = (text: string): Node => ({ kind: 'raw', text });
const map = (entries: Array<[string, Node | undefined]>): Node => ({ kind: 'map', entries: entries.filter((e): e is [string, Node] => e[1] !== undefined) });
const seq = (items: Node[]): Node => ({ kind: 'seq', items });
/** A string as YAML text that reads back as that string (JSON's escapes are YAML's double-quoted ones). */
const str = (text: string): Node => raw(JSON.stringify(text));

/** Writes a node in block style, `indent` spaces in. */
function emit(node: Node, indent = 0): string {
  return `${emitBody(node, indent)}\n`;
}

function anchorOf(node: Node): string {
  return node.kind !== 'alias' && node.anchor ? `&${node.anchor} ` : '';
}

function inline(node: Node): string | undefined {
  if (node.kind === 'alias') return `*${node.name}`;
  if (node.kind === 'raw') return `${anchorOf(node)}${node.text}`;
  if ((node.kind === 'map' ? node.entries.length : node.items.length) === 0) return `${anchorOf(node)}${node.kind === 'map' ? '{}' : '[]'}`;
  return undefined;
}

function emitBody(node: Node, indent: number): string {
  const pad = ' '.repeat(indent);
  const one = inline(node);
  if (one !== undefined) return `${pad}${one}`;
  const lines: string[] = [];
  if (node.kind === 'map') {
    for (const [key, value] of node.entries) {
      const single = inline(value);
      if (single !== undefined) lines.push(`${pad}${key}: ${single}`);
      else lines.push(`${pad}${key}: ${anchorOf(value)}`.trimEnd(), emitBody({ ...value, anchor: undefined } as Node, indent + 2));
    }
  } else if (node.kind === 'seq') {
    for (const item of node.items) {
      const single = inline(item);
      if (single !== undefined) {
        lines.push(`${pad}- ${single}`);
        continue;
      }
      // A mapping item: its first key on the dash's line, the rest under it.
      const body = emitBody({ ...item, anchor: undefined } as Node, indent + 2).split('\n');
      lines.push(`${pad}- ${anchorOf(item)}${body[0]!.slice(indent + 2)}`, ...body.slice(1));
    }
  }
  return lines.join('\n');
}

export interface FuzzCase {
  readonly seed: number;
  readonly text: string;
  /** What the generator did to the base, for a failing case's message. */
  readonly edits: readonly string[];
}

type Rand = () => number;

/** A generator's tools over one PRNG. */
function tools(random: Rand) {
  const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  const chance = (p: number) => random() < p;
  return { int, pick, chance };
}

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const DIGITS = '0123456789';
const IFNAME_CHARS = `${LOWER}ABCDEFGHIJKLMNOPQRSTUVWXYZ${DIGITS}_.-`;

const address = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

interface Vlan { name: string; id: number; network: number; prefix: number; gateway: number }

/** Generates one config from its seed. */
export function fuzzConfig(seed: number): FuzzCase {
  const random = prng(seed);
  const { int, pick, chance } = tools(random);
  const edits: string[] = [];
  const edit = (what: string) => edits.push(what);

  // ---- a valid base: 1 to 4 VLANs in separate 10.x blocks, each /8../30 ----
  const count = int(1, 4);
  const vlans: Vlan[] = [];
  const usedNames = new Set<string>();
  for (let i = 0; i < count; i++) {
    const prefix = pick([8, 16, 24, 24, 24, 28, 29, 30, int(9, 30)]);
    // Each VLAN in its own /8 from 10 on (20, 30, …), all of it private or documentation-free space.
    const base = (10 + i * 10) * 2 ** 24;
    const block = 2 ** (32 - prefix);
    const network = base + (prefix >= 16 ? int(0, Math.min(255, 2 ** (prefix - 8) - 1)) * block : 0);
    const gateway = chance(0.5) ? network + 1 : network + block - 2; // first or last host
    let name: string;
    do {
      const length = pick([1, 2, 5, 11, 12, int(1, 12)]);
      name = LOWER[int(0, 25)]! + Array.from({ length: length - 1 }, () => pick([...LOWER, ...DIGITS, '-'])).join('');
    } while (usedNames.has(name) || name === 'uplink');
    usedNames.add(name);
    vlans.push({ name, id: pick([1, 4094, int(2, 4093), 10 * (i + 1)]), network, prefix, gateway });
  }
  // Unique ids in the base.
  vlans.forEach((v, i) => {
    if (vlans.slice(0, i).some((w) => w.id === v.id)) v.id = 100 + i;
  });
  const host = (v: Vlan, k = 2) => {
    const block = 2 ** (32 - v.prefix);
    let h = v.network + Math.min(k, block - 2);
    if (h === v.gateway) h = h + 1 < v.network + block - 1 ? h + 1 : h - 1;
    return h;
  };

  const ifname = (): string => {
    const length = pick([1, 2, 15, 15, int(3, 14)]);
    let name = pick([...LOWER, ...'ABCDEFGHIJKLMNOPQRSTUVWXYZ', ...DIGITS, '_']);
    while (name.length < length) name += pick([...IFNAME_CHARS]);
    return name;
  };
  const mac = (): string => {
    const bytes = Array.from({ length: 6 }, () => int(0, 255));
    bytes[0] = (bytes[0]! & 0xfc) | 2; // locally administered unicast
    const text = bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
    return chance(0.3) ? text.toUpperCase() : text;
  };
  const ifaceNode = (): Node => (chance(0.6) ? str(ifname()) : map([['mac', str(mac())]]));

  const vlanNode = (v: Vlan): Node => map([
    ['name', raw(v.name)],
    ['id', raw(String(v.id))],
    ['subnet', raw(`${address(v.network)}/${v.prefix}`)],
    ['gateway', raw(address(v.gateway))],
    ['interface', chance(0.4) ? ifaceNode() : undefined],
    ['masquerade', chance(0.3) ? raw(pick(['true', 'false'])) : undefined],
  ]);

  const vlanList = vlans.map(vlanNode);

  const uplinkGateway = chance(0.6) ? '203.0.113.1' : undefined;
  const nat = pick(['masquerade', 'snat', 'none', undefined]);
  const uplink = map([
    ['interface', chance(0.4) ? ifaceNode() : undefined],
    ['gateway', uplinkGateway ? raw(uplinkGateway) : undefined],
    ['nat', nat ? raw(nat) : undefined],
    ['snatTo', nat === 'snat' ? raw('203.0.113.7') : undefined],
  ]);

  /** A reference into one VLAN (by name, a host's address, its whole subnet, or a prefix inside it), or the uplink. */
  const zoneIn = (v: Vlan | undefined): string => (v === undefined ? 'uplink' : pick([v.name, v.name, address(host(v, int(2, 5))), `${address(v.network)}/${v.prefix}`,
    v.prefix <= 28 ? `${address(v.network)}/${v.prefix + 2}` : address(host(v))]));
  const portItem = (): string => {
    const low = pick([1, 22, 80, 443, 8000, 65534, 65535, int(1, 65535)]);
    if (chance(0.6)) return String(low);
    const high = pick([low, Math.min(65535, low + 1), 65535, Math.min(65535, low + int(1, 100))]);
    return low === high ? String(low) : `${Math.min(low, high)}-${Math.max(low, high)}`;
  };
  const rules: Node[] = [];
  for (let r = int(0, 5); r > 0; r--) {
    const proto = pick(['tcp', 'udp', 'icmp', 'all', undefined]);
    // Two different zones: traffic inside one VLAN never passes the router (validation refuses such a rule).
    const a = chance(0.2) ? undefined : pick(vlans);
    const others = vlans.filter((v) => v !== a);
    const b = a === undefined || others.length === 0 || chance(0.2) ? (a === undefined ? vlans[0] : undefined) : pick(others);
    const [from, to] = chance(0.5) ? [zoneIn(a), zoneIn(b)] : [zoneIn(b), zoneIn(a)];
    const ports = proto === 'tcp' || proto === 'udp' ? (chance(0.6) ? Array.from({ length: int(1, 4) }, portItem).join(',') : undefined) : undefined;
    rules.push(map([
      ['from', raw(from)], ['to', raw(to)],
      ['proto', proto ? raw(proto) : undefined],
      ['ports', ports === undefined ? undefined : ports.includes(',') || ports.includes('-') || chance(0.5) ? str(ports) : raw(ports)],
      ['action', raw(pick(['accept', 'drop', 'reject']))],
    ]));
  }
  const forwards: Node[] = [];
  const forwarded = new Set<string>();
  for (let f = int(0, 3); f > 0; f--) {
    const proto = pick(['tcp', 'udp']);
    const low = pick([1, 2222, 8080, 65535, int(1, 65535)]);
    const ranged = chance(0.3) && low < 65535;
    const high = ranged ? Math.min(65535, low + int(1, 20)) : low;
    // 10123 is the HTTP endpoints' default port: a forward of it is refused (its own test).
    if ([...forwarded].some((k) => { const [p, l, h] = k.split(':'); return p === proto && Number(l) <= high && low <= Number(h); }) || (low <= 10123 && high >= 10123)) continue;
    forwarded.add(`${proto}:${low}:${high}`);
    forwards.push(map([
      ['proto', proto === 'udp' || chance(0.8) ? raw(proto) : undefined], // without one, a forward is tcp
      ['port', ranged ? str(`${low}-${high}`) : raw(String(low))],
      ['to', raw(address(host(pick(vlans), int(2, 9))))],
      ['toPort', !ranged && chance(0.5) ? raw(String(pick([1, 22, 65535, int(1, 65535)]))) : undefined],
    ]));
  }
  const top: Array<[string, Node | undefined]> = [
    ['uplink', uplink],
    ['vlans', seq(vlanList)],
    ['forwarding', chance(0.7) ? map([['default', chance(0.5) ? raw(pick(['accept', 'drop'])) : undefined], ['rules', rules.length > 0 ? seq(rules) : undefined]]) : undefined],
    ['portForwards', forwards.length > 0 ? seq(forwards) : undefined],
  ];
  const doc = map(top) as Extract<Node, { kind: 'map' }>;

  // ---- one to three changes toward an edge ----
  // Mostly one change: a second one often hides the first behind its own refusal.
  const mutations = pick([0, 1, 1, 1, 1, 1, 2, 3]);
  for (let m = 0; m < mutations; m++) mutate(doc, vlans, { int, pick, chance }, edit, { ifname, mac });

  let text = emit(doc);
  // Text-level oddities: CRLF, a BOM, tabs after values, comments.
  if (chance(0.05)) {
    text = text.replace(/\n/g, '\r\n');
    edit('CRLF line ends');
  }
  if (chance(0.03)) {
    text = `\ufeff${text}`;
    edit('a byte-order mark');
  }
  if (chance(0.05)) {
    text = text.replace(/\n/, ' # a comment\n');
    edit('a comment after the first line');
  }
  return { seed, text, edits };
}

type Tools = ReturnType<typeof tools>;

/** Values that YAML reads as something else than they look (or that look like what they are not). */
const YAML_ODD = ['yes', 'no', 'on', 'off', 'true', 'false', '~', 'null', '', '010', '0o10', '0x10', '0xA', '1e3', '1.0', '1.5', '-1', '+1',
  '.inf', '-.inf', '.nan', '"10"', "'010'", '!!str 10', '[]', '{}', '[1, 2]', '0', '00', '1_000'];

/** Strings that must never reach a rule line as they are. */
const UNSAFE = ['a b', 'a\nb', 'a"b', "a'b", '-j', '--dport', 'a;b', 'a\tb', 'a\u0000b', 'a#b', 'a\\b', 'ä', 'офис', '\u202eabc', 'a\u200bb',
  'ｏｆｆｉｃｅ', 'ﬀ', 'é', '١٢', '😀', 'a`id`', '$(reboot)', '*', 'a,b', 'a/b', 'a:b', 'a@b', 'a+', '-', '.', '..', '_'];

function mutate(doc: Extract<Node, { kind: 'map' }>, vlans: Vlan[], { int, pick, chance }: Tools, edit: (what: string) => void,
  gen: { ifname: () => string; mac: () => string }): void {
  const get = (node: Node | undefined, key: string): Node | undefined => (node?.kind === 'map' ? node.entries.find(([k]) => k === key)?.[1] : undefined);
  const set = (node: Node | undefined, key: string, value: Node) => {
    if (node?.kind !== 'map') return;
    const entry = node.entries.find(([k]) => k === key);
    if (entry) entry[1] = value;
    else node.entries.push([key, value]);
  };
  // An earlier change may have made vlans something else than a list: then changes to a VLAN go nowhere.
  const listed = get(doc, 'vlans');
  const vlanList: Extract<Node, { kind: 'seq' }> = listed?.kind === 'seq' && listed.items.length > 0 ? listed : seq([map([])]) as Extract<Node, { kind: 'seq' }>;
  const vlanAt = () => {
    const i = int(0, vlanList.items.length - 1);
    return { i, node: vlanList.items[i]!, vlan: vlans[i] ?? vlans[0]! };
  };
  const oddScalar = (): Node => {
    const text = pick([...YAML_ODD, ...UNSAFE.map((u) => JSON.stringify(u))]);
    return { kind: 'raw', text };
  };
  const longString = (): Node => ({ kind: 'raw', text: JSON.stringify('x'.repeat(pick([13, 16, 64, 65, 200, 5000]))) });
  const forwarding = () => {
    let f = get(doc, 'forwarding');
    if (!f) {
      f = map([]);
      doc.entries.push(['forwarding', f]);
    }
    return f;
  };
  const ruleAt = (): Node => {
    const f = forwarding();
    let rules = get(f, 'rules');
    if (rules?.kind !== 'seq' || rules.items.length === 0) {
      rules = seq([map([['from', raw(vlans[0]!.name)], ['to', raw('uplink')], ['action', raw('accept')]])]);
      set(f, 'rules', rules);
    }
    return pick((rules as Extract<Node, { kind: 'seq' }>).items);
  };
  const forwardAt = (): Node => {
    let list = get(doc, 'portForwards');
    if (list?.kind !== 'seq' || list.items.length === 0) {
      const v = vlans[0]!;
      const to = address(v.gateway === v.network + 1 ? v.gateway + 1 : v.network + 1);
      list = seq([map([['proto', raw('tcp')], ['port', raw('2222')], ['to', raw(to)]])]);
      set(doc, 'portForwards', list);
    }
    return pick((list as Extract<Node, { kind: 'seq' }>).items);
  };

  // The values that reach a rule line (names of NICs, references, ports, protocols) are changed more often.
  const kind = chance(0.25) ? pick([6, 6, 14, 16, 29, 30, 31]) : int(0, 39);
  switch (kind) {
    case 0: { // a name at or past the length limit, with dashes
      const { i, node } = vlanAt();
      const name = pick(['a'.repeat(12), 'a'.repeat(13), 'a-b-c-d-e-f-', 'a--b', 'ab-', 'a-', 'z0-9-z0-9-z0', `v${'-'.repeat(11)}`, 'a'.repeat(11) + '-']);
      set(node, 'name', raw(name));
      edit(`vlans[${i}].name: ${name}`);
      break;
    }
    case 1: { // an odd name
      const { i, node } = vlanAt();
      const value = chance(0.5) ? oddScalar() : raw(pick(['Office', 'uplink', '1abc', 'a_b', 'a.b', 'lo', 'all', 'ALL', 'офис']));
      set(node, 'name', value);
      edit(`vlans[${i}].name: ${value.kind === 'raw' ? value.text : '?'}`);
      break;
    }
    case 2: { // an id at or past the edges, or as YAML reads numbers
      const { i, node } = vlanAt();
      const value = pick(['0', '1', '4094', '4095', '-1', '010', '0o17', '0x10', '4094.0', '1.5', '1e3', '"10"', 'yes', '~', '.inf', '99999999999999999999', '0b101', '1_0', '+5']);
      set(node, 'id', raw(value));
      edit(`vlans[${i}].id: ${value}`);
      break;
    }
    case 3: { // a subnet of any prefix, its gateway at an edge
      const { i, node } = vlanAt();
      const prefix = pick([0, 1, 7, 8, 29, 30, 31, 32, int(1, 32)]);
      const block = 2 ** (32 - prefix);
      const network = Math.floor(pick([10, 172, 192, 100, 1, 198, 203, 169]) * 2 ** 24 / block) * block;
      const gateway = pick([network, network + 1, network + block - 1, network + block - 2, network + block, network - 1]);
      set(node, 'subnet', raw(`${address(network)}/${prefix}`));
      set(node, 'gateway', raw(address(((gateway % 2 ** 32) + 2 ** 32) % 2 ** 32)));
      edit(`vlans[${i}]: ${address(network)}/${prefix} gw ${address(((gateway % 2 ** 32) + 2 ** 32) % 2 ** 32)}`);
      break;
    }
    case 4: { // a subnet written oddly
      const { i, node, vlan } = vlanAt();
      const net = address(vlan.network);
      const value = pick([`${net}/033`, `${net}/024`, `${net}/33`, net, `${net}/`, `/${vlan.prefix}`, `${net}/24 `, ` ${net}/24`, `${net.replace(/^10\./, '010.')}/${vlan.prefix}`,
        `${address(vlan.gateway)}/${vlan.prefix}`, `${net}/${vlan.prefix}/1`, `${net}/-1`, `${net}/+8`, `${net}/1e1`, `"${net}/${vlan.prefix}"`, `${net}/${vlan.prefix}\t`]);
      set(node, 'subnet', value.startsWith('"') ? raw(value) : str(value));
      edit(`vlans[${i}].subnet: ${JSON.stringify(value)}`);
      break;
    }
    case 5: { // a gateway written oddly
      const { i, node, vlan } = vlanAt();
      const g = address(vlan.gateway);
      const value = pick([`${g}/24`, g.replace(/\.(\d+)$/, '.0$1'), `${g}.`, ` ${g}`, '0.0.0.0', '255.255.255.255', g.split('.').slice(0, 3).join('.'), '1.2.3.256', '1e3', g.replace(/^(\d+)/, '0x$1')]);
      set(node, 'gateway', str(value));
      edit(`vlans[${i}].gateway: ${JSON.stringify(value)}`);
      break;
    }
    case 6: { // an interface at the name limits
      const { i, node } = vlanAt();
      const value = pick([gen.ifname(), 'a'.repeat(15), 'a'.repeat(16), 'eth0.10', 'eth1@if5', 'eth0:1', 'br-abc', '_x', '-eth', '.eth', 'eth.', 'a..b', '0', '123', 'e+', 'eth 1', 'eth/1', 'ethé', 'lo', 'all', 'default', 'LO', 'eth1\u200b', 'veth-' + 'x'.repeat(10), 'x-'.repeat(7) + 'x']);
      set(node, 'interface', str(value));
      edit(`vlans[${i}].interface: ${JSON.stringify(value)}`);
      break;
    }
    case 7: { // an interface by MAC, odd or not
      const { i, node } = vlanAt();
      const value = pick([gen.mac(), '00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '02-42-ac-11-00-02', '02:42:ac:11:00', '02:42:ac:11:00:02:03', '2:42:ac:11:0:2', '02:42:AC:11:00:0G', '0242.ac11.0002']);
      set(node, 'interface', chance(0.2) ? map([['mac', str(value)], ['name', raw('eth1')]]) : map([['mac', str(value)]]));
      edit(`vlans[${i}].interface.mac: ${value}`);
      break;
    }
    case 8: { // the same interface twice, or the uplink's
      if (vlanList.items.length < 2 && chance(0.5)) return;
      const name = gen.ifname();
      const { i, node } = vlanAt();
      set(node, 'interface', str(name));
      if (chance(0.5)) set(get(doc, 'uplink'), 'interface', str(name));
      else set(vlanList.items[(i + 1) % vlanList.items.length]!, 'interface', str(name));
      edit(`interface ${name} twice`);
      break;
    }
    case 9: { // masquerade as YAML booleans and not
      const { i, node } = vlanAt();
      const value = pick(['yes', 'no', 'True', 'FALSE', '"true"', '1', '0', '~', 'on']);
      set(node, 'masquerade', raw(value));
      edit(`vlans[${i}].masquerade: ${value}`);
      break;
    }
    case 10: { // uplink forms
      const uplink = get(doc, 'uplink');
      const nat = pick(['masquerade', 'snat', 'none', 'SNAT', 'dnat', '', 'yes', '~']);
      set(uplink, 'nat', raw(nat || '""'));
      if (chance(0.5)) set(uplink, 'snatTo', raw(pick(['203.0.113.7', '203.0.113.1', address(vlans[0]!.gateway), '127.0.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '203.0.113.07', 'eth0'])));
      edit(`uplink.nat: ${nat}`);
      break;
    }
    case 11: { // the uplink's gateway at odd addresses
      const value = pick(['203.0.113.1', '0.0.0.0', '255.255.255.255', '127.0.0.1', '224.0.0.5', '240.0.0.1', address(vlans[0]!.gateway), address(vlans[0]!.network), '203.0.113.01', '1.1.1.1', '100.64.0.1', '169.254.0.1']);
      set(get(doc, 'uplink'), 'gateway', raw(value));
      edit(`uplink.gateway: ${value}`);
      break;
    }
    case 12: { // the uplink's interface
      const value = chance(0.5) ? str(gen.ifname()) : pick([map([['mac', str(gen.mac())]]), str('lo'), str('a'.repeat(16)), raw('~'), raw('[]'), raw('1')]);
      set(get(doc, 'uplink'), 'interface', value);
      edit('uplink.interface');
      break;
    }
    case 13: { // the uplink section as something else
      const value = pick(['~', '[]', '"eth0"', '1', '{}']);
      set(doc, 'uplink', raw(value));
      edit(`uplink: ${value}`);
      break;
    }
    case 14: { // ports at the edges
      const rule = ruleAt();
      const value = pick(['0', '1', '65535', '65536', '"0"', '"1-65535"', '"65535-1"', '"22,22"', '"22,,23"', '"22-"', '"-22"', '" 22"', '"22 "', '"22, 80"', '"22;80"',
        '"22:80"', '"0-10"', '"65536"', '"1-65536"', '"22,65536"', '"65535,0"', '"22-22"', '"1-1"', '"65535-65535"', '"٢٢"', '1.5', '22.0', '0x16', '"0x16"', '010', '"010"', '-1', '[22, 80]', '~', '""', '1e3', '.nan', '"22,"', '",22"',
        `"${Array.from({ length: 20 }, (_, k) => 1000 + k).join(',')}"`, `"${Array.from({ length: 400 }, (_, k) => 1000 + k * 3).join(',')}"`, '"1-2,2-3,3-4"', '"80,22"', '"8000-8100,8050"']);
      set(rule, 'ports', raw(value));
      if (chance(0.8)) set(rule, 'proto', raw(pick(['tcp', 'udp'])));
      edit(`rule ports: ${value}`);
      break;
    }
    case 15: { // every proto, and ones that are not
      const rule = ruleAt();
      const value = pick(['tcp', 'udp', 'icmp', 'all', 'TCP', 'sctp', '6', '"tcp "', '~', 'ALL', 'icmpv6', 'any', '"-p"']);
      set(rule, 'proto', raw(value));
      edit(`rule proto: ${value}`);
      break;
    }
    case 16: { // from/to references
      const rule = ruleAt();
      const v = pick(vlans);
      const key = pick(['from', 'to']);
      const value = pick([address(v.network), address(v.gateway), address(v.network + 2 ** (32 - v.prefix) - 1), `${address(v.gateway)}/32`, `${address(v.network)}/${v.prefix}`,
        `${address(v.network)}/${Math.max(0, v.prefix - 1)}`, `${address(v.network + 1)}/${v.prefix}`, '0.0.0.0/0', '8.8.8.8', 'nosuch', 'UPLINK', v.name.toUpperCase(), `${v.name} `,
        `${address(v.network)}/32`, `${address(v.network)}/31`, `${address(v.network + 2)}/31`, '10.0.0.0/08', 'uplink', '-uplink', '1.2.3', '10.0.0.1/33']);
      set(rule, key, str(value));
      edit(`rule ${key}: ${value}`);
      break;
    }
    case 17: { // action
      const rule = ruleAt();
      const value = pick(['accept', 'drop', 'reject', 'ACCEPT', 'DROP', 'log', '~', 'yes', '"accept\\n-j DROP"']);
      set(rule, 'action', raw(value));
      edit(`rule action: ${value}`);
      break;
    }
    case 18: { // forwarding.default
      const value = pick(['accept', 'drop', 'reject', 'DROP', 'yes', '~', '0']);
      set(forwarding(), 'default', raw(value));
      edit(`forwarding.default: ${value}`);
      break;
    }
    case 19: { // a port forward at the port edges
      const fwd = forwardAt();
      const value = pick(['0', '1', '65535', '65536', '"1-65535"', '"65535-1"', '"22-22"', '"10:20"', '"22"', '"022"', '22.0', '22.5', '0x16', '"0x16"', '010', '-22', '"6000-6010"', '"65535-65536"', '"0-10"', '"6000 - 6010"', '~', '[22]', '1e400', '"1-65535,2"']);
      set(fwd, 'port', raw(value));
      edit(`portForward port: ${value}`);
      break;
    }
    case 20: { // toPort with and without a range
      const fwd = forwardAt();
      const value = pick(['0', '1', '65535', '65536', '"22"', '22.0', '~', '"22-23"', 'yes', '-1']);
      set(fwd, 'toPort', raw(value));
      edit(`portForward toPort: ${value}`);
      break;
    }
    case 21: { // a port forward's target and proto
      const fwd = forwardAt();
      const v = pick(vlans);
      const field = pick(['to', 'proto']);
      const value = field === 'to' ? pick([address(v.gateway), address(v.network), address(v.network + 2 ** (32 - v.prefix) - 1), '8.8.8.8', `${address(v.network + 2)}/32`, '10.0.0.010', 'localhost'])
        : pick(['tcp', 'udp', 'icmp', 'all', 'TCP', '~', 'sctp']);
      set(fwd, field, str(value));
      edit(`portForward ${field}: ${value}`);
      break;
    }
    case 22: { // the same port forwarded twice, or overlapping ranges
      const fwd = forwardAt();
      const list = get(doc, 'portForwards') as Extract<Node, { kind: 'seq' }>;
      list.items.push(structuredClone(fwd));
      if (chance(0.5)) set(list.items.at(-1)!, 'proto', raw(pick(['tcp', 'udp'])));
      edit('a port forward twice');
      break;
    }
    case 23: { // duplicate names or ids
      if (vlanList.items.length < 2) return;
      const key = pick(['name', 'id', 'subnet']);
      const from = vlanList.items[0]!;
      const value = get(from, key);
      if (value) set(vlanList.items[1]!, key, structuredClone(value));
      edit(`vlans[1].${key} as vlans[0]'s`);
      break;
    }
    case 24: { // a VLAN by anchor and alias, and a merge key
      const first = vlanList.items[0]!;
      if (first.kind !== 'map') return;
      first.anchor = 'base';
      if (chance(0.5)) {
        vlanList.items.push({ kind: 'alias', name: 'base' });
        edit('a VLAN repeated by alias');
      } else {
        const v = { id: 3000 + vlans.length, network: (200 - 10) * 2 ** 24 };
        vlanList.items.push(map([['<<', { kind: 'alias', name: 'base' }], ['name', raw('merged')], ['id', raw(String(v.id))],
          ...(chance(0.7) ? [['subnet', raw('172.31.250.0/24')], ['gateway', raw('172.31.250.1')]] as Array<[string, Node]> : [])]));
        edit('a VLAN by merge key');
      }
      break;
    }
    case 25: { // a key given twice
      const target = pick(['vlan', 'top', 'rule']);
      if (target === 'top') doc.entries.push(['uplink', map([['nat', raw('none')]])]);
      else if (target === 'vlan') {
        const { node } = vlanAt();
        if (node.kind === 'map') node.entries.push(['id', raw('77')]);
      } else {
        const rule = ruleAt();
        if (rule.kind === 'map') rule.entries.push(['action', raw('drop')]);
      }
      edit(`a key twice (${target})`);
      break;
    }
    case 26: { // a null value where a value is needed
      const { i, node } = vlanAt();
      const key = pick(['name', 'id', 'subnet', 'gateway', 'interface', 'masquerade']);
      set(node, key, raw(pick(['', '~', 'null'])));
      edit(`vlans[${i}].${key}: null`);
      break;
    }
    case 27: { // unknown keys, and keys as YAML reads them
      const where = pick(['top', 'vlan', 'uplink', 'rule']);
      const key = pick(['vlan', 'Name', 'subnet ', '"name "', 'ipv6', '"ñame"', '"a\\nb"', '1', 'true', '~', '"<<"', 'ports', 'port', '"\u202ekey"']);
      const target = where === 'top' ? doc : where === 'vlan' ? vlanAt().node : where === 'uplink' ? get(doc, 'uplink') : ruleAt();
      if (target?.kind === 'map') target.entries.push([key, raw('1')]);
      edit(`unknown key ${key} in ${where}`);
      break;
    }
    case 28: { // a very long string anywhere a string goes
      const { i, node } = vlanAt();
      const key = pick(['name', 'subnet', 'gateway', 'interface']);
      set(node, key, longString());
      edit(`vlans[${i}].${key}: long`);
      break;
    }
    case 29: { // unsafe text in a VLAN's string fields
      const { i, node } = vlanAt();
      const key = pick(['name', 'subnet', 'gateway', 'interface']);
      const value = pick(UNSAFE);
      set(node, key, str(key === 'name' ? `a${value}` : key === 'interface' ? `eth${value}` : value));
      edit(`vlans[${i}].${key}: unsafe ${JSON.stringify(value)}`);
      break;
    }
    case 30: { // unsafe text in a rule
      const rule = ruleAt();
      const key = pick(['from', 'to', 'ports', 'proto', 'action']);
      const value = pick(UNSAFE);
      set(rule, key, str(`${pick([vlans[0]!.name, '22', 'tcp', 'accept'])}${value}`));
      edit(`rule ${key}: unsafe ${JSON.stringify(value)}`);
      break;
    }
    case 31: { // unsafe text in a port forward or the uplink
      const value = pick(UNSAFE);
      if (chance(0.5)) set(forwardAt(), pick(['to', 'proto', 'port']), str(`22${value}`));
      else set(get(doc, 'uplink'), pick(['interface', 'gateway', 'snatTo', 'nat']), str(`eth0${value}`));
      edit(`unsafe ${JSON.stringify(value)} in a forward or the uplink`);
      break;
    }
    case 32: { // sections as the wrong type or empty
      const key = pick(['vlans', 'forwarding', 'portForwards', 'rules', 'reconcile', 'http']);
      const value = pick(['~', '[]', '{}', '1', '"x"', 'yes']);
      set(doc, key, raw(value));
      edit(`${key}: ${value}`);
      break;
    }
    case 33: { // a list item that is no mapping
      const list = pick(['vlans', 'rules', 'portForwards']);
      const target = list === 'vlans' ? vlanList : list === 'rules' ? get(forwarding(), 'rules') : get(doc, 'portForwards');
      if (target?.kind === 'seq') target.items.push(raw(pick(['~', '1', '"x"', '[]', 'yes'])));
      edit(`a ${list} item that is no mapping`);
      break;
    }
    case 34: { // many VLANs at /30 and /31, close together
      const n = int(2, 40);
      for (let k = 0; k < n; k++) {
        const network = (192 * 2 ** 24) + (168 * 2 ** 16) + 200 * 256 + k * 4;
        vlanList.items.push(map([['name', raw(`n${k}`)], ['id', raw(String(2000 + k))], ['subnet', raw(`${address(network)}/30`)], ['gateway', raw(address(network + pick([1, 2])))]]));
      }
      edit(`${n} /30 VLANs`);
      break;
    }
    case 35: { // reconcile and http
      const field = pick(['schedule', 'minIntervalMs', 'listen', 'allowFrom']);
      const value = field === 'schedule' ? pick(['"*/30 * * * * *"', '"61 * * * *"', '"* * * * *"', '"@hourly"', '"*/0 * * * *"', '"a b c d e"', '"* * * * * * *"', '""'])
        : field === 'minIntervalMs' ? pick(['0', '3600000', '3600001', '-1', '1.5', '"100"', '1e3'])
        : field === 'listen' ? pick(['"0.0.0.0:10123"', '":10123"', '"[::]:9000"', '"127.0.0.1:0"', '"1.2.3.4:65536"', '"010.0.0.1:80"', '"host"', '"localhost:80"', '"0.0.0.0:2222"'])
        : pick([`[${vlans[0]!.name}]`, '[uplink]', '["8.8.8.8"]', `["${address(vlans[0]!.gateway)}"]`, '[~]']);
      const section = field === 'schedule' || field === 'minIntervalMs' ? 'reconcile' : 'http';
      if (!get(doc, section)) doc.entries.push([section, map([])]);
      set(get(doc, section), field, raw(value));
      edit(`${section}.${field}: ${value}`);
      break;
    }
    case 36: { // a rule naming a VLAN that is not there
      const rule = ruleAt();
      set(rule, pick(['from', 'to']), raw(pick(['ghost', 'a'.repeat(12), 'office2'])));
      edit('a rule naming an unknown VLAN');
      break;
    }
    case 37: { // a tag
      const { i, node } = vlanAt();
      const value = pick(['!!str 10', '!!int "10"', '!!float 10', '!!binary aGk=', '!!timestamp 2020-01-01', '!custom x', '!!set {a}', '!!omap [{a: 1}]', '!!bool yes']);
      set(node, pick(['id', 'name']), raw(value));
      edit(`vlans[${i}]: tag ${value}`);
      break;
    }
    case 38: { // a rule from/to as a YAML number or address-like
      const rule = ruleAt();
      set(rule, pick(['from', 'to']), raw(pick(['10', '1.5', '010', '0x10', 'yes', '~', '[a]', '10.0.0.1'])));
      edit('a rule from/to as another type');
      break;
    }
    default: { // an icmp/all rule with ports
      const rule = ruleAt();
      set(rule, 'proto', raw(pick(['icmp', 'all'])));
      set(rule, 'ports', raw('22'));
      edit('ports on a rule without a port protocol');
      break;
    }
  }
}

// ---- oracles shared by the unit and kernel fuzz tests ----

/** Options a rendered rule may carry, and how many values each takes (from the golden restore files). */
const RULE_OPTIONS: Readonly<Record<string, number>> = {
  '-m': 1, '--comment': 1, '-j': 1, '-g': 1, '-o': 1, '-i': 1, '-s': 1, '-d': 1, '-p': 1, '--ctstate': 1, '--match-set': 2, '--dport': 1,
  '--dports': 1, '--to-destination': 1, '--to-source': 1, '--src-type': 1, '--dst-type': 1, '--reject-with': 1,
};
/** A value in a rule: no quote, space, control character or anything iptables-restore would read otherwise. */
const RULE_VALUE = /^[A-Za-z0-9_.:,/@]([A-Za-z0-9_.:,/@-]*)$/;

const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const ADDRESS = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const isPort = (text: string) => /^\d{1,5}$/.test(text) && Number(text) >= 1 && Number(text) <= 65535;
const isPortRange = (text: string, separator: string) => {
  const [low, high, ...more] = text.split(separator);
  return more.length === 0 && isPort(low!) && (high === undefined || (isPort(high) && Number(low) <= Number(high)));
};

/** What each option's value must be, where the config is what it comes from. */
const VALUE_SHAPES: Readonly<Record<string, (value: string) => boolean>> = {
  // A NIC's name as the kernel takes one (dev_valid_name): 1-15 bytes, no "/", ":" or whitespace, not "." or "..".
  '-i': (v) => /^[^/:\s]{1,15}$/.test(v) && v !== '.' && v !== '..',
  '-o': (v) => /^[^/:\s]{1,15}$/.test(v) && v !== '.' && v !== '..',
  '-s': (v) => ADDRESS.test(v.split('/')[0]!) && (!v.includes('/') || /^\/([0-9]|[12]\d|3[0-2])$/.test(v.slice(v.indexOf('/')))),
  '-d': (v) => ADDRESS.test(v.split('/')[0]!) && (!v.includes('/') || /^\/([0-9]|[12]\d|3[0-2])$/.test(v.slice(v.indexOf('/')))),
  '-p': (v) => ['tcp', 'udp', 'icmp'].includes(v),
  '--dport': (v) => isPortRange(v, ':'),
  // multiport takes at most 15 ports, a range counting as two.
  '--dports': (v) => v.split(',').every((item) => isPortRange(item, ':')) && v.split(',').reduce((n, item) => n + (item.includes(':') ? 2 : 1), 0) <= 15,
  '--to-destination': (v) => {
    const [address, ports, ...more] = v.split(':');
    return more.length === 0 && ADDRESS.test(address!) && (ports === undefined || isPortRange(ports, '-'));
  },
  '--to-source': (v) => ADDRESS.test(v),
};

/**
 * Why a line of a rendered payload is not one the planner means to write (undefined: it is): a table header, a
 * chain of ours, COMMIT, or a rule of ours whose words are options of known arity, each value one safe word. A
 * value from the config that broke out of its place (a newline, a quote, a leading dash) fails here.
 */
export function payloadLineProblem(line: string): string | undefined {
  if (/^\*(filter|nat)$/.test(line) || line === 'COMMIT' || /^:VGW-[A-Z0-9-]+ - \[0:0\]$/.test(line)) return undefined;
  const words = line.split(' ');
  let i: number;
  if (words[0] === '-A' && /^VGW-[A-Z0-9-]+$/.test(words[1] ?? '')) i = 2;
  else if (words[0] === '-I' && /^(FORWARD|INPUT|PREROUTING|POSTROUTING|OUTPUT)$/.test(words[1] ?? '') && /^\d+$/.test(words[2] ?? '')) i = 3;
  else return 'not a header, chain, COMMIT or rule of ours';
  while (i < words.length) {
    const option = words[i]!;
    const arity = RULE_OPTIONS[option];
    if (arity === undefined) return `${JSON.stringify(option)} is not an option the planner writes`;
    const values = words.slice(i + 1, i + 1 + arity);
    if (values.length < arity || values.some((v) => !RULE_VALUE.test(v))) return `${option} ${values.map((v) => JSON.stringify(v)).join(' ')}: not a safe value`;
    const shape = VALUE_SHAPES[option];
    if (shape && !shape(values[0]!)) return `${option} ${values[0]!}: not what ${option} takes`;
    i += 1 + arity;
  }
  return undefined;
}

/**
 * The restore text a fresh namespace gets for a valid config, every NIC attached as `validate` assumes (synthetic
 * facts); with the ipset tool (rules that match on our sets), or without.
 */
export function freshPayload(config: Config, templates: Templates, ipset: boolean): string {
  const facts = syntheticFacts(config);
  const withSets = ipset ? { ...facts, sets: new Map() } : facts;
  return diff(planDesired(config, withSets, templates), withSets).steps.flatMap((s) => (s.kind === 'table' ? [s.payload] : [])).join('');
}
