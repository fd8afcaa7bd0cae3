/**
 * Config validation: schema first (types, ranges, unknown keys, unsafe values), then the rules that span
 * fields. Every problem is collected; nothing stops at the first. The cross-field checks read the raw document
 * defensively, so a type error in one VLAN does not hide an overlap between two others. Pure.
 */
import cron from 'node-cron';
import { z, type ZodIssue } from 'zod';
import { broadcastOf, contains, formatCidr, networkOf, overlaps, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';
import { DEFAULT_LISTEN, isLoopbackHost, parseListenAddress } from './listen.js';
import { configSchema, IFNAME, MAC, VLAN_NAME, ZONE_REF, type Config } from './schema.js';
import type { PathSegment, Problem } from './problems.js';

export type ValidationResult = { ok: true; config: Config } | { ok: false; problems: Problem[] };

export interface ValidateOptions {
  /** `run --listen`: the HTTP address actually served, in place of http.listen (a port forward must not take it). */
  readonly listen?: string;
}

export function validateConfig(input: unknown, options: ValidateOptions = {}): ValidationResult {
  const parsed = configSchema.safeParse(input);
  // Concatenated, never pushed as spread arguments: 512 copies of one VLAN are 130,816 overlapping pairs, beyond
  // the arguments one call takes ("Maximum call stack size exceeded").
  const problems = (parsed.success ? [] : firstPerValue(parsed.error.issues).flatMap((issue) => fromZod(issue, input)))
    .concat(crossFieldProblems(input, options));
  const unique = dedupe(problems);
  if (unique.length > 0 || !parsed.success) return { ok: false, problems: unique };
  return { ok: true, config: parsed.data };
}

/**
 * A range check after another check on the same value (.inf is "not an integer", and also "not from 1 to 4094"):
 * one sentence per value is enough, the first.
 */
function firstPerValue(issues: readonly ZodIssue[]): ZodIssue[] {
  const seen = new Set<string>();
  return issues.filter((issue) => {
    const key = issue.path.join('\u0000');
    const range = issue.code === 'too_small' || issue.code === 'too_big';
    if (range && seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function fromZod(issue: ZodIssue, input: unknown): Problem[] {
  const path = issue.path;
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => ({
        path: [...path, key], at: 'key' as const, message: `is not a known key${knownKeys(path)}${portListHint(key, path, input)}${interfaceHint(key, path)}`,
      }));
    case 'invalid_type': {
      if (issue.received === 'undefined') return [{ path, message: 'is required' }];
      // js-yaml reads a numeral beyond a double's range (1e400, -1e999) as text: said as the number it looks like.
      const value = issue.received === 'string' ? valueAt(input, path) : undefined;
      if ((issue.expected === 'number' || issue.expected === 'integer') && typeof value === 'string' && NUMERAL.test(value) && !Number.isFinite(Number(value.replace(/_/g, '')))) {
        return [{ path, message: `must be a number, and ${value} is beyond the range of one (YAML reads it as text)` }];
      }
      // An enum given a number or a boolean (proto: 6): said as a wrong word is, not in zod's type syntax.
      const words = /^'[^']*'( \| '[^']*')*$/.test(issue.expected) ? issue.expected.split(' | ').map((w) => w.slice(1, -1)) : undefined;
      if (words) return [{ path, message: `must be one of ${words.join(', ')}, not ${article(issue.received)}` }];
      return [{ path, message: `must be ${article(issue.expected)}, not ${article(issue.received)}` }];
    }
    case 'invalid_enum_value':
      return [{ path, message: `must be one of ${issue.options.map((o) => String(o)).join(', ')}, not ${JSON.stringify(issue.received)}` }];
    case 'invalid_union':
      return [{ path, message: issue.message }];
    default:
      return [{ path, message: issue.message }];
  }
}

/** The keys allowed where an unknown one was found, to point at a typo. */
function knownKeys(path: readonly PathSegment[]): string {
  const keys = keysAt(path);
  return keys.length > 0 ? ` (known: ${keys.join(', ')})` : '';
}

/** The keys the schema allows at a path (none where it holds no mapping). */
function keysAt(path: readonly PathSegment[]): string[] {
  let schema: unknown = configSchema;
  for (const segment of path) {
    schema = unwrap(schema);
    if (schema instanceof z.ZodObject) schema = (schema.shape as Record<string, unknown>)[String(segment)];
    else if (schema instanceof z.ZodArray) schema = schema.element;
    else return [];
  }
  schema = unwrap(schema);
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

/**
 * `{from: a, to: b, ports: 22,80}`: in a flow mapping the comma ends the value, and 80 becomes a key of its own. A
 * key that is a port (or a range) where `ports` is a known key says how to write the list.
 */
/** `interface: {name: eth1}`: a NIC is named by the name alone; the mapping is for its MAC. */
function interfaceHint(key: string, path: readonly PathSegment[]): string {
  return key === 'name' && path[path.length - 1] === 'interface' ? '; a NIC is named as interface: eth1, and {mac: "…"} finds it by its MAC instead' : '';
}

function portListHint(key: string, path: readonly PathSegment[], input: unknown): string {
  if (!/^\d+(-\d+)?$/.test(key) || !keysAt(path).includes('ports')) return '';
  const before = valueAt(input, path);
  const ports = isObject(before) && typeof before.ports === 'number' ? before.ports : '…'; // a number only: never echo text
  return `; inside { } a port list must be quoted, as in ports: "${ports},${key}"`;
}

/** The document's value at a path (undefined where it has none). */
const valueAt = (input: unknown, path: readonly PathSegment[]): unknown =>
  path.reduce<unknown>((node, segment) => (isObject(node) || Array.isArray(node) ? (node as Record<PathSegment, unknown>)[segment] : undefined), input);

/** A YAML 1.2 decimal numeral (what js-yaml would read as a number, were it in range). */
const NUMERAL = /^[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?$/;

/** The schema under the wrappers; of a union (interface: a name or {mac}), its mapping. */
function unwrap(schema: unknown): unknown {
  let s = schema;
  while (s instanceof z.ZodDefault || s instanceof z.ZodOptional || s instanceof z.ZodEffects || s instanceof z.ZodUnion) {
    if (s instanceof z.ZodUnion) {
      s = (s.options as unknown[]).find((o) => unwrap(o) instanceof z.ZodObject);
      continue;
    }
    s = s instanceof z.ZodEffects ? s.innerType() : s._def.innerType;
  }
  return s;
}

function article(type: string): string {
  if (type === 'integer') return 'an integer';
  if (type === 'null') return 'null (an empty value)';
  if (type === 'nan') return '.nan (not a number)';
  if (type === 'array' || type === 'object') return `an ${type}`;
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.path.join('\u0000')}\u0001${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

// ---- cross-field rules, on the raw document ----

type Raw = Record<string, unknown>;
const isObject = (x: unknown): x is Raw => typeof x === 'object' && x !== null && !Array.isArray(x);
const asArray = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
const asString = (x: unknown): string | undefined => (typeof x === 'string' ? x : undefined);

interface VlanView {
  index: number;
  name?: string;
  subnet?: Cidr;
  gateway?: number;
}

/** A VLAN as messages name it: `vlans[0] (office, 192.168.10.0/24)`, or without the name when that is invalid. */
/** An address in a VLAN that is not a host's: the router's own (the VLAN's gateway), or the subnet's network or broadcast address. */
function notAHost(address: number, vlan: VlanView & { subnet: Cidr }): { kind: 'gateway' | 'network' | 'broadcast'; text: string } | undefined {
  if (address === vlan.gateway) return { kind: 'gateway', text: `is the gateway's own address on ${vlan.name ?? `vlans[${vlan.index}]`}` };
  if (address === networkOf(vlan.subnet)) return { kind: 'network', text: `is the network address of ${formatCidr(vlan.subnet)}` };
  if (address === broadcastOf(vlan.subnet)) return { kind: 'broadcast', text: `is the broadcast address of ${formatCidr(vlan.subnet)}` };
  return undefined;
}

function vlanLabel(v: VlanView & { subnet: Cidr }): string {
  return `vlans[${v.index}] (${v.name !== undefined ? `${v.name}, ` : ''}${formatCidr(v.subnet)})`;
}

/** Whether a prefix is written as iptables prints it back: no leading zero in its length, no host bits. */
function prefixProblem(text: string, cidr: Cidr): string | undefined {
  if (/\/0\d$/.test(text)) return `${text} has a leading zero in its prefix length; did you mean ${formatCidr(cidr)}?`;
  if (networkOf(cidr) !== cidr.network) return `${text} has host bits set; did you mean ${formatCidr(cidr)}?`;
  return undefined;
}

/** The address space no host is given an address in, by an address's first octet. */
function specialSpace(address: number): string | undefined {
  const first = Math.floor(address / 2 ** 24);
  if (first === 0) return '0.0.0.0/8 ("this network")';
  if (first === 127) return 'loopback (127.0.0.0/8)';
  if (first >= 224 && first < 240) return 'multicast (224.0.0.0/4)';
  if (first >= 240) return 'reserved (240.0.0.0/4)';
  return undefined;
}

/** What an address is when it cannot be a host's: a next hop or a source address must be unicast. */
function notUnicast(address: number): string | undefined {
  if (address === 0) return 'the unspecified address';
  if (address === 2 ** 32 - 1) return 'the limited broadcast address';
  const space = specialSpace(address);
  return space ? `in ${space} address space` : undefined;
}

/** The shortest prefix a VLAN may have: a VLAN's subnet is a route on its NIC, and a shorter one claims most of the Internet. */
const SHORTEST_VLAN_PREFIX = 8;

function crossFieldProblems(input: unknown, options: ValidateOptions): Problem[] {
  if (!isObject(input)) return [];
  const problems: Problem[] = [];
  const add = (path: PathSegment[], message: string) => problems.push({ path, message });
  const vlans: VlanView[] = [];
  const names = new Map<string, number>();
  const ids = new Map<number, number>();

  asArray(input.vlans).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const view: VlanView = { index };
    const name = asString(raw.name);
    if (name !== undefined && VLAN_NAME.test(name)) { // an invalid name is reported by the schema, never echoed
      const first = names.get(name);
      if (first !== undefined) add(['vlans', index, 'name'], `${JSON.stringify(name)} is already used by vlans[${first}]`);
      else names.set(name, index);
      if (name === 'uplink') add(['vlans', index, 'name'], '"uplink" is reserved for the uplink');
      view.name = name;
    }
    if (typeof raw.id === 'number') {
      const first = ids.get(raw.id);
      if (first !== undefined) add(['vlans', index, 'id'], `${raw.id} is already used by vlans[${first}]`);
      else ids.set(raw.id, index);
    }
    const subnetText = asString(raw.subnet);
    const subnet = subnetText === undefined ? undefined : parseCidr(subnetText);
    if (subnet && subnetText !== undefined) {
      const written = prefixProblem(subnetText, subnet);
      if (written) add(['vlans', index, 'subnet'], written);
      if (subnet.prefix < SHORTEST_VLAN_PREFIX) {
        add(['vlans', index, 'subnet'], `${subnetText} is too large for a VLAN (use /${SHORTEST_VLAN_PREFIX} or smaller)`);
      } else if (specialSpace(networkOf(subnet))) {
        add(['vlans', index, 'subnet'], `${subnetText} is in ${specialSpace(networkOf(subnet))!} address space, which no host's address is in`);
      }
      if (subnet.prefix > 30) add(['vlans', index, 'subnet'], `${subnetText} is too small for a gateway and hosts (use /30 or larger)`);
      view.subnet = subnet;
      const gatewayText = asString(raw.gateway);
      const gateway = gatewayText === undefined ? undefined : parseAddress(gatewayText);
      if (gateway !== undefined) {
        const shown = formatCidr(subnet);
        if (!contains(subnet, gateway)) add(['vlans', index, 'gateway'], `${gatewayText} is outside ${shown}`);
        else if (gateway === networkOf(subnet)) add(['vlans', index, 'gateway'], `${gatewayText} is the network address of ${shown}`);
        else if (gateway === broadcastOf(subnet)) add(['vlans', index, 'gateway'], `${gatewayText} is the broadcast address of ${shown}`);
        view.gateway = gateway;
      }
    }
    vlans.push(view);
  });

  // A NIC carries one VLAN, and never the uplink too.
  const refKey = (ref: unknown) => (typeof ref === 'string' && IFNAME.test(ref) ? `name ${ref}`
    : isObject(ref) && typeof ref.mac === 'string' && MAC.test(ref.mac) ? `MAC ${ref.mac.toLowerCase()}` : undefined);
  const uplinkRef = refKey(isObject(input.uplink) ? input.uplink.interface : undefined);
  const usedBy = new Map<string, number>();
  asArray(input.vlans).forEach((raw, index) => {
    const key = isObject(raw) ? refKey(raw.interface) : undefined;
    if (key === undefined) return;
    const first = usedBy.get(key);
    if (first !== undefined) add(['vlans', index, 'interface'], `${key.replace(/^\w+ /, '')} is already the interface of vlans[${first}]`);
    else usedBy.set(key, index);
    if (key === uplinkRef) add(['vlans', index, 'interface'], `${key.replace(/^\w+ /, '')} is the uplink's interface`);
  });

  for (let i = 0; i < vlans.length; i++) {
    for (let j = i + 1; j < vlans.length; j++) {
      const a = vlans[i]!;
      const b = vlans[j]!;
      if (a.subnet && b.subnet && overlaps(a.subnet, b.subnet)) {
        add(['vlans', b.index, 'subnet'], `${formatCidr(b.subnet)} overlaps vlans[${a.index}] (${formatCidr(a.subnet)})`);
      }
    }
  }

  const uplink = isObject(input.uplink) ? input.uplink : {};
  // An invalid nat is the schema's to report: nothing here is said about snatTo on a guess of what was meant.
  const nat = uplink.nat === undefined ? 'masquerade' : asString(uplink.nat);
  if (nat === 'snat' && uplink.snatTo === undefined) add(['uplink', 'snatTo'], 'is required with nat: snat');
  if ((nat === 'masquerade' || nat === 'none') && uplink.snatTo !== undefined) add(['uplink', 'snatTo'], `is only used with nat: snat (nat is ${nat})`);
  // The default route's next hop and the SNAT source are hosts on the uplink's network: never in a VLAN, never a
  // loopback, multicast, broadcast or reserved address.
  const uplinkAddresses = [
    ['gateway', "the uplink's next hop is on the uplink's network"],
    ['snatTo', "the SNAT address is one of the uplink's own"],
  ] as const;
  for (const [key, why] of uplinkAddresses) {
    const text = asString(uplink[key]);
    const address = text === undefined ? undefined : parseAddress(text);
    if (text === undefined || address === undefined) continue; // the schema reports a malformed one
    const kind = notUnicast(address);
    const vlan = vlans.find((v): v is VlanView & { subnet: Cidr } => v.subnet !== undefined && contains(v.subnet, address));
    if (kind) add(['uplink', key], `${text} is ${kind}, not a unicast host address`);
    else if (vlan) add(['uplink', key], `${text} is inside ${vlanLabel(vlan)}; ${why}`);
  }
  // The SNAT source is the gateway's own uplink address, never its next hop's.
  const snatTo = asString(uplink.snatTo);
  if (nat === 'snat' && snatTo !== undefined && parseAddress(snatTo) !== undefined && snatTo === asString(uplink.gateway)) {
    add(['uplink', 'snatTo'], `${snatTo} is uplink.gateway, the next hop; snatTo is an address of the gateway's own uplink NIC`);
  }

  /**
   * The VLAN a zone reference is in: the one it names, or the one holding its address or whole prefix. Each rule
   * asks this of its from and to several times, and 10,000 rules over 512 VLANs took seconds: the VLANs' bounds are
   * worked out once, and each reference looked up once.
   */
  const bounds = vlans.map((v) => (v.subnet ? { low: networkOf(v.subnet), high: broadcastOf(v.subnet) } : undefined));
  const zoneVlans = new Map<string, (VlanView & { subnet: Cidr }) | undefined>();
  const zoneVlan = (ref: string): (VlanView & { subnet: Cidr }) | undefined => {
    if (ref === 'uplink') return undefined;
    if (zoneVlans.has(ref)) return zoneVlans.get(ref);
    const named = names.get(ref);
    const asCidr = ref.includes('/') ? parseCidr(ref) : undefined;
    const asAddress = ref.includes('/') ? undefined : parseAddress(ref);
    const [low, high] = asCidr ? [networkOf(asCidr), broadcastOf(asCidr)] : [asAddress, asAddress];
    const found = vlans.find((v, k): v is VlanView & { subnet: Cidr } => v.subnet !== undefined && (named !== undefined ? v.index === named
      : low !== undefined && high !== undefined && low >= bounds[k]!.low && high <= bounds[k]!.high));
    zoneVlans.set(ref, found);
    return found;
  };

  const zoneProblem = (ref: string): string | undefined => {
    if (ref === 'uplink' || names.has(ref) || !ZONE_REF.test(ref)) return undefined; // the schema reports a malformed one
    const asCidr = ref.includes('/') ? parseCidr(ref) : undefined;
    const asAddress = ref.includes('/') ? undefined : parseAddress(ref);
    if (asCidr === undefined && asAddress === undefined) {
      return /^\d/.test(ref) ? `${JSON.stringify(ref)} is not an address or prefix` : `names no VLAN (${JSON.stringify(ref)}); known: ${[...names.keys(), 'uplink'].join(', ')}`;
    }
    const written = asCidr && prefixProblem(ref, asCidr);
    if (written) return written;
    if (zoneVlan(ref)) return undefined;
    // A prefix wider than a VLAN is not outside it: said so, with the VLANs it holds.
    const held = asCidr ? vlans.filter((v): v is VlanView & { subnet: Cidr } => v.subnet !== undefined && overlaps(v.subnet, asCidr)) : [];
    return held.length === 0 ? `${ref} is outside every VLAN`
      : `${ref} is wider than ${held.map(vlanLabel).join(' and ')}; a rule names one VLAN, or an address or prefix inside one`;
  };

  /** A forwarding rule's address that only the router's own traffic or a broadcast has: the rule never matches. */
  const unforwardedAddress = (ref: string): string | undefined => {
    // A /32 is its one address: 192.168.10.1/32 never matches either.
    const single = ref.endsWith('/32') ? ref.slice(0, -'/32'.length) : ref;
    const address = single.includes('/') ? undefined : parseAddress(single);
    const vlan = address === undefined ? undefined : zoneVlan(single);
    const what = vlan && notAHost(address!, vlan);
    if (!what) return undefined;
    const why = { gateway: '; traffic to or from the router itself does not pass between VLANs', network: ', not a host\'s', broadcast: '; the router does not forward broadcasts' };
    return `${ref} ${what.text}${why[what.kind]}, so the rule never matches`;
  };

  const forwarding = isObject(input.forwarding) ? input.forwarding : {};
  asArray(forwarding.rules).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const at = (key: string): PathSegment[] => ['forwarding', 'rules', index, key];
    const from = asString(raw.from);
    const to = asString(raw.to);
    for (const [key, ref] of [['from', from], ['to', to]] as const) {
      if (ref === undefined) continue;
      const problem = zoneProblem(ref) ?? unforwardedAddress(ref);
      if (problem) add(at(key), problem);
    }
    if (from !== undefined && to !== undefined && from === to) {
      add(at('to'), from === 'uplink' ? 'from and to are both the uplink' : `from and to are both ${from}; traffic inside one VLAN does not pass the router`);
    } else if (from !== undefined && to !== undefined && ZONE_REF.test(from) && ZONE_REF.test(to)) {
      const vlan = zoneVlan(from);
      if (vlan && zoneVlan(to) === vlan) {
        add(at('to'), `from (${from}) and to (${to}) are both in ${vlan.name ?? `vlans[${vlan.index}]`}; `
          + 'traffic inside one VLAN does not pass the router, so the rule never matches');
      }
    }
    // A proto the schema refuses (TCP, 6) is its problem alone: "needs proto: tcp" beside it would mislead.
    const proto = raw.proto === undefined ? undefined : asString(raw.proto);
    const protoKnown = raw.proto === undefined || ['tcp', 'udp', 'icmp', 'all'].includes(proto ?? '');
    if (raw.ports !== undefined) {
      if (protoKnown && proto !== 'tcp' && proto !== 'udp') add(at('ports'), 'needs proto: tcp or proto: udp');
      const problem = portListProblem(raw.ports);
      if (problem) add(at('ports'), problem);
    }
  });

  const reconcile = isObject(input.reconcile) ? input.reconcile : {};
  const schedule = asString(reconcile.schedule);
  // The schema's pattern keeps out what could never be one; node-cron decides the rest ("61 * * * *").
  if (schedule !== undefined && /^[0-9*/,\- A-Za-z?]+$/.test(schedule) && !cron.validate(schedule)) {
    add(['reconcile', 'schedule'], `${JSON.stringify(schedule)} is not a valid cron expression (5 fields, or 6 with seconds first, like "*/30 * * * * *")`);
  }

  const http = isObject(input.http) ? input.http : {};
  const listenText = asString(http.listen);
  if (listenText !== undefined && /^\S+$/.test(listenText) && !parseListenAddress(listenText)) add(['http', 'listen'], `${JSON.stringify(listenText)} is not HOST:PORT with a port up to 65535, like ${JSON.stringify(DEFAULT_LISTEN)}`);
  asArray(http.allowFrom).forEach((raw, index) => {
    const ref = asString(raw);
    if (ref === undefined) return;
    const problem = ref === 'uplink' ? 'the uplink side is always allowed; list VLANs, or addresses or prefixes inside them' : zoneProblem(ref);
    if (problem) add(['http', 'allowFrom', index], problem);
  });

  const forwards = new Map<string, number>();
  asArray(input.portForwards).forEach((raw, index) => {
    if (!isObject(raw)) return;
    const to = asString(raw.to);
    const address = to === undefined ? undefined : parseAddress(to);
    const vlan = address === undefined ? undefined : vlans.find((v) => v.subnet && contains(v.subnet, address));
    if (address !== undefined && !vlan) add(['portForwards', index, 'to'], `${to} is outside every VLAN`);
    // A forward goes to a host on a VLAN: not to the router itself, nor to a subnet's network or broadcast address.
    const what = address !== undefined && vlan?.subnet ? notAHost(address, { ...vlan, subnet: vlan.subnet }) : undefined;
    if (what) add(['portForwards', index, 'to'], `${to} ${what.text}${what.kind === 'gateway' ? '; a port forward goes to a host on a VLAN' : ''}`);
    if (typeof raw.port === 'number') {
      const proto = asString(raw.proto) ?? 'tcp';
      const key = `${proto}/${raw.port}`;
      const first = forwards.get(key);
      if (first !== undefined) add(['portForwards', index, 'port'], `${key} is already forwarded by portForwards[${first}]`);
      else forwards.set(key, index);
    }
  });
  return problems.concat(httpPortProblems(asArray(input.portForwards), listenText, options));
}

/**
 * A TCP port forward on the HTTP endpoints' own port: the DNAT takes that port on every address of the gateway that
 * the uplink side reaches, so Prometheus and health checks would reach the VLAN host. The port is `run --listen`'s
 * where given, else http.listen's, else the default; on loopback nothing from outside reaches it. Apart from the
 * rest of validation because it depends on the flag as well as the file: a config kept valid by its text alone
 * (the plan cache) is checked again here against the flag of the run that loads it.
 */
export function httpPortProblems(portForwards: readonly unknown[], httpListen: string | undefined, options: ValidateOptions): Problem[] {
  const served = options.listen !== undefined ? { text: `--listen ${options.listen}`, move: '--listen' }
    : httpListen !== undefined ? { text: `http.listen ${httpListen}`, move: 'http.listen' }
    : { text: `the default http.listen, ${DEFAULT_LISTEN}`, move: 'http.listen' };
  const listen = parseListenAddress(options.listen ?? httpListen ?? DEFAULT_LISTEN);
  if (!listen || isLoopbackHost(listen.host)) return [];
  const problems: Problem[] = [];
  portForwards.forEach((raw, index) => {
    if (!isObject(raw) || raw.port !== listen.port || (asString(raw.proto) ?? 'tcp') !== 'tcp') return;
    problems.push({
      path: ['portForwards', index, 'port'],
      message: `tcp/${listen.port} is the gateway's own HTTP port (${served.text}): `
        + `Prometheus and health checks from the uplink side would reach the VLAN host instead; forward another port, or move ${served.move}`,
    });
  });
  return problems;
}

/** "22,8000-8100" or 22: each port 1–65535, ranges low-high with low ≤ high. */
function portListProblem(ports: unknown): string | undefined {
  if (typeof ports === 'number') {
    if (Number.isInteger(ports) && ports >= 1 && ports <= 65535) return undefined;
    // As YAML writes it: JavaScript's text of .inf is "Infinity", and of 99999999999999999999999 "1e+23".
    if (Math.abs(ports) >= 1e21 && Number.isFinite(ports)) return `is a number far beyond ${ports < 0 ? 'the lowest port, 1' : 'the highest port, 65535'}`;
    const shown = Number.isNaN(ports) ? '.nan' : ports === Infinity ? '.inf' : ports === -Infinity ? '-.inf' : String(ports);
    return `${shown} is not a port from 1 to 65535`;
  }
  if (typeof ports !== 'string') return undefined; // the schema reports the type
  if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(ports)) return `${JSON.stringify(ports)} is not a port list like "22,8000-8100"`;
  for (const item of ports.split(',')) {
    const [low, high = low] = item.split('-').map(Number) as [number, number?];
    if (low < 1 || low > 65535 || high < 1 || high > 65535) return `${item} is not a port from 1 to 65535`;
    if (low > high) return `${item} is a range whose start is above its end`;
  }
  return undefined;
}

/** Expands a validated port list into [low, high] pairs. */
export function parsePorts(ports: string | number): Array<[number, number]> {
  if (typeof ports === 'number') return [[ports, ports]];
  return ports.split(',').map((item) => {
    const [low, high = low] = item.split('-').map(Number) as [number, number?];
    return [low, high];
  });
}
