/**
 * The lab's shape as plain data, computed from a Config and a lab name. Pure: build.ts turns it into `ip`
 * commands, check.ts into probes, tests into assertions.
 *
 * The write-up's network, in namespaces (all named `vgwlab-<lab>-…`, so one lab never touches another):
 *
 *   -sw (the "Docker host"):  br10 ─┬─ c10 ═veth═ eth0 in -c10 (192.168.10.100, a client on VLAN 10)
 *                                   └─ b10 ═veth═ p10 ─macvlan─► eth2 in -router (192.168.10.2)
 *                             br20 ─┬─ c20 ═veth═ eth0 in -c20 (192.168.20.100)
 *                                   └─ b20 ═veth═ p20 ─macvlan─► eth1 in -router (192.168.20.2)
 *   -router eth0 (203.0.113.2) ═veth═ eth0 in -inet (203.0.113.1; on lo 198.51.100.10, the Internet host)
 *
 * Each VLAN is its own bridge (this kernel has no 802.1Q); `p<id>` plays the write-up's `eth0.<id>`, the macvlan
 * parent. The router's VLAN NICs are macvlan children created in -sw and moved into the router, as Docker does,
 * and attached in REVERSE config order so ethN never follows the config (the product must match by subnet).
 * They get a Docker-like address and never the gateway address: taking that is the product's job. The inet
 * namespace routes the VLANs' subnets to the router's uplink address, as an upstream router would: so traffic from
 * the uplink into a VLAN reaches the router's policy (which blocks it unless a rule allows it), and a VLAN that is
 * not NATed is answered at its own address.
 *
 * Each client holds, besides its own address, every address inside its VLAN that the config names and the lab can
 * host: port-forward targets, and the addresses of forwarding rules (for a prefix holding no lab host, its first
 * free address), so that `lab check` can send from and to them.
 */
import { formatPath, type Problem } from '../config/problems.js';
import type { Config, InterfaceRef } from '../config/schema.js';
import { broadcastOf, contains, formatAddress, formatCidr, networkOf, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';

const LAB_NAME = /^[a-z][a-z0-9]{0,7}$/;
export const DEFAULT_LAB_NAME = 'demo';
const NAMESPACE_PREFIX = 'vgwlab-';
const INTERNET_HOST = '198.51.100.10';
const DEFAULT_UPLINK_GATEWAY = '203.0.113.1';
const SPARE_UPLINK_GATEWAY = '203.0.113.254';
const CLIENT_HOST_OFFSET = 100;
/** At most this many addresses per VLAN client for forwarding rules' addresses and prefixes (beyond: not probed). */
const RULE_HOSTS_PER_VLAN = 8;

export class LabError extends Error {
  override readonly name: string = 'LabError';
}

/**
 * The lab cannot be built for this name or config: the user's input to fix (exit 2). A config the gateway takes but
 * the lab cannot build carries its problems, each with its path into the config (`vlans[1].subnet`), as a config
 * error does: the CLI says them with the file and their lines.
 */
export class LabInputError extends LabError {
  override readonly name = 'LabInputError';
  constructor(message: string, readonly problems: readonly Problem[] = []) {
    super(message);
  }
}

/** The config's problems for the lab, one line each as `validate` says them (without the file: the CLI adds it). */
function labConfigError(problems: readonly Problem[]): LabInputError {
  return new LabInputError(problems.map((p) => `${formatPath(p.path)}: ${p.message}`).join('\n'), problems);
}

interface LabClient {
  readonly namespace: string;
  /** The client's NIC inside its namespace. */
  readonly interface: string;
  /** The client's own address (`.100`), with the VLAN's gateway as default route. */
  readonly address: string;
  /** Port-forward targets and forwarding rules' addresses inside this VLAN that are not `address`: added to the
   *  client too, so forwards land and rules naming them are probed. */
  readonly extraAddresses: readonly string[];
  /** The other end of the client's veth: a port of the VLAN bridge in the switch namespace. */
  readonly switchPort: string;
}

interface LabVlan {
  readonly name: string;
  readonly id: number;
  readonly subnet: string;
  readonly prefix: number;
  readonly gateway: string;
  /** In the switch namespace: the VLAN's bridge, the macvlan parent (the write-up's eth0.<id>) and its peer. */
  readonly bridge: string;
  readonly parent: string;
  readonly parentPeer: string;
  /** The router's NIC for this VLAN (macvlan child of `parent`), its Docker-like address and optional MAC. */
  readonly routerInterface: string;
  readonly routerAddress: string;
  readonly routerMac?: string;
  readonly client: LabClient;
}

interface LabUplink {
  readonly routerInterface: string;
  readonly routerAddress: string;
  readonly routerMac?: string;
  readonly prefix: number;
  readonly inetInterface: string;
  /** The router's next hop (the config's uplink.gateway, or 203.0.113.1). */
  readonly inetAddress: string;
  /** The "Internet host", on the inet namespace's loopback. */
  readonly internetHost: string;
  /** Whether the lab gives the router a default route, as Docker's bridge network does. Only when the config
   *  names no uplink.gateway: otherwise setting it is the product's job, and the lab leaves that to it. */
  readonly defaultRoute: boolean;
  /** Routes the inet namespace gets towards the router: an snatTo outside the uplink /24, and every VLAN's subnet
   *  (as an upstream router has them). */
  readonly inetRoutesViaRouter: readonly string[];
}

export interface LabTopology {
  readonly name: string;
  /** `vgwlab-<name>-`: every namespace of this lab starts with it, and nothing else does. */
  readonly prefix: string;
  readonly router: string;
  readonly switch: string;
  readonly inet: string;
  /** Every namespace, in creation order. */
  readonly namespaces: readonly string[];
  readonly vlans: readonly LabVlan[];
  /** VLAN ids in the order their router NICs are attached (reverse config order). */
  readonly attachOrder: readonly number[];
  readonly uplink: LabUplink;
}

export function labPrefix(name: string): string {
  return `${NAMESPACE_PREFIX}${name}-`;
}

export function assertLabName(name: string): void {
  if (!LAB_NAME.test(name)) {
    throw new LabInputError(`lab name ${JSON.stringify(name)} must be a lowercase letter, then up to 7 lowercase letters or digits`);
  }
}

export function planLabTopology(config: Config, name: string = DEFAULT_LAB_NAME): LabTopology {
  assertLabName(name);
  const prefix = labPrefix(name);
  // Every problem at once, each at its path into the config, as validate says a config's.
  const problems: Problem[] = [];
  const add = (path: Problem['path'], message: string) => problems.push({ path, message });
  const uplink = planUplink(config, add);
  const taken = new Set<string>([uplink.routerInterface, 'lo']);
  config.vlans.forEach((vlan, index) => {
    const explicit = refName(vlan.interface);
    if (explicit === undefined) return;
    // Never so for a config validate takes (it refuses a name the uplink or another VLAN names), said all the same.
    if (taken.has(explicit)) add(['vlans', index, 'interface'], `${explicit} is already the name of another NIC in the lab's router`);
    taken.add(explicit);
  });

  // Attach in reverse config order: the last VLAN becomes eth1, so numbering never matches the config.
  const reversed = [...config.vlans].reverse();
  const names = new Map<string, string>();
  let next = 1;
  for (const vlan of reversed) {
    const explicit = refName(vlan.interface);
    if (explicit !== undefined) {
      names.set(vlan.name, explicit);
      continue;
    }
    while (taken.has(`eth${next}`)) next++;
    names.set(vlan.name, `eth${next}`);
    taken.add(`eth${next}`);
  }

  const vlans = config.vlans.flatMap((vlan, index): LabVlan[] => {
    // The matrix has a column for the Internet host by that name.
    if (vlan.name === 'internet') add(['vlans', index, 'name'], '"internet" is the name the lab gives its Internet host (a column of lab check\'s matrix); give the VLAN another name');
    const subnet = parseCidr(vlan.subnet)!;
    const gateway = parseAddress(vlan.gateway)!;
    const routerAddress = dockerLikeAddress(subnet, gateway);
    const clientAddress = routerAddress === undefined ? undefined : clientHostAddress(subnet, [gateway, routerAddress]);
    if (routerAddress === undefined || clientAddress === undefined) {
      add(['vlans', index, 'subnet'], `${vlan.subnet} is too small for the lab, which puts the gateway, the router's NIC and a client in it (a /29 or larger holds them)`);
      return [];
    }
    // A port forward to the address the lab gives the router's own NIC would forward to the router itself.
    config.portForwards.forEach((f, forward) => {
      if (parseAddress(f.to) === routerAddress) {
        add(['portForwards', forward, 'to'], `${f.to} is the address the lab gives the router's NIC on ${vlan.name} (as Docker would); forward to another host address`);
      }
    });
    const mine = (n: number) => contains(subnet, n);
    const forwardTargets = [...new Set(config.portForwards.map((f) => parseAddress(f.to)!))]
      .filter((n) => mine(n) && ![gateway, routerAddress, clientAddress].includes(n));
    const extra = [...forwardTargets, ...ruleHosts(config, subnet, [gateway, routerAddress], [clientAddress, ...forwardTargets])].map(formatAddress);
    const mac = refMac(vlan.interface);
    return [{
      name: vlan.name,
      id: vlan.id,
      subnet: `${formatAddress(networkOf(subnet))}/${subnet.prefix}`,
      prefix: subnet.prefix,
      gateway: vlan.gateway,
      bridge: `br${vlan.id}`,
      parent: `p${vlan.id}`,
      parentPeer: `b${vlan.id}`,
      routerInterface: names.get(vlan.name)!,
      routerAddress: formatAddress(routerAddress),
      ...(mac === undefined ? {} : { routerMac: mac }),
      client: {
        namespace: `${prefix}c${vlan.id}`,
        interface: 'eth0',
        address: formatAddress(clientAddress),
        extraAddresses: extra,
        switchPort: `c${vlan.id}`,
      },
    }];
  });

  const internet = parseAddress(INTERNET_HOST)!;
  if (config.uplink.nat === 'snat' && config.uplink.snatTo === INTERNET_HOST) {
    add(['uplink', 'snatTo'], `${INTERNET_HOST} is the lab's Internet host; use an address of the router's uplink`);
  }
  const uplinkNet = parseCidr(`${uplink.inetAddress}/${uplink.prefix}`)!;
  const uplinkText = `${formatAddress(networkOf(uplinkNet))}/${uplink.prefix}`;
  const uplinkWhy = config.uplink.gateway === undefined ? `the lab's uplink network (with no uplink.gateway, ${uplinkText})` : `the lab's uplink network (the /24 of uplink.gateway, ${uplinkText})`;
  config.vlans.forEach((vlan, index) => {
    const subnet = parseCidr(vlan.subnet)!;
    if (contains(subnet, internet)) {
      add(['vlans', index, 'subnet'], `${vlan.subnet} holds ${INTERNET_HOST}, the lab's Internet host; give the VLAN another subnet`);
    } else if (contains(subnet, parseAddress(uplink.inetAddress)!) || contains(uplinkNet, subnet.network)) {
      add(['vlans', index, 'subnet'], `${vlan.subnet} overlaps ${uplinkWhy}; give the VLAN another subnet${config.uplink.gateway === undefined ? ', or set uplink.gateway on another network' : ''}`);
    }
  });
  if (problems.length > 0) throw labConfigError(problems);

  const router = `${prefix}router`;
  const sw = `${prefix}sw`;
  const inet = `${prefix}inet`;
  return {
    name,
    prefix,
    router,
    switch: sw,
    inet,
    namespaces: [router, sw, inet, ...vlans.map((v) => v.client.namespace)],
    vlans,
    attachOrder: reversed.map((v) => v.id),
    uplink,
  };
}

function planUplink(config: Config, add: (path: Problem['path'], message: string) => void): LabUplink {
  // Without uplink.gateway the lab picks the next hop; never the address the config SNATs to (the Internet side
  // would then see its own address as the source, and drop every packet as a martian).
  const snatText = config.uplink.nat === 'snat' ? config.uplink.snatTo : undefined;
  const gatewayText = config.uplink.gateway ?? (snatText === DEFAULT_UPLINK_GATEWAY ? SPARE_UPLINK_GATEWAY : DEFAULT_UPLINK_GATEWAY);
  const gateway = parseAddress(gatewayText)!;
  const net: Cidr = { network: networkOf({ network: gateway, prefix: 24 }), prefix: 24 };
  if (contains(net, parseAddress(INTERNET_HOST)!)) {
    add(['uplink', 'gateway'], `${gatewayText} is in ${formatCidr(net)}, the network of the lab's Internet host (${INTERNET_HOST}): the lab puts the uplink in the /24 of uplink.gateway; use another network`);
  }
  const snatTo = config.uplink.nat === 'snat' && config.uplink.snatTo !== undefined ? parseAddress(config.uplink.snatTo) : undefined;
  // With nat: snat, Docker's own address is what the user writes as snatTo: give the router exactly that.
  const router = snatTo !== undefined && contains(net, snatTo) && isHost(net, snatTo) && snatTo !== gateway
    ? snatTo
    : dockerLikeAddress(net, gateway)!; // a /24 has free host addresses
  const mac = refMac(config.uplink.interface);
  // Docker's eth0, unless a VLAN names that NIC (the gateway finds an uplink the config does not name by its route):
  // then the first ethN no VLAN names.
  const named = new Set(config.vlans.map((v) => refName(v.interface)));
  let free = 0;
  while (named.has(`eth${free}`)) free++;
  return {
    routerInterface: refName(config.uplink.interface) ?? `eth${free}`,
    routerAddress: formatAddress(router),
    ...(mac === undefined ? {} : { routerMac: mac }),
    prefix: 24,
    inetInterface: 'eth0',
    inetAddress: gatewayText,
    internetHost: INTERNET_HOST,
    defaultRoute: config.uplink.gateway === undefined,
    inetRoutesViaRouter: [
      ...(snatTo !== undefined && snatTo !== router ? [`${formatAddress(snatTo)}/32`] : []),
      ...config.vlans.map((v) => formatCidr(parseCidr(v.subnet)!)),
    ],
  };
}

/**
 * The addresses a VLAN's client takes for the forwarding rules that name addresses or prefixes inside the VLAN, in
 * rule order: a named address the lab can host (not the gateway, the router's NIC, or the subnet's network or
 * broadcast address), and for a prefix that holds no host of the lab yet its first free address. At most
 * RULE_HOSTS_PER_VLAN.
 */
function ruleHosts(config: Config, subnet: Cidr, reserved: readonly number[], hosts: readonly number[]): number[] {
  const added: number[] = [];
  const free = (n: number) => isHost(subnet, n) && !reserved.includes(n);
  for (const rule of config.forwarding.rules) {
    for (const ref of [rule.from, rule.to]) {
      if (added.length >= RULE_HOSTS_PER_VLAN) return added;
      const cidr = ref.includes('/') ? parseCidr(ref) : parseAddress(ref) === undefined ? undefined : parseCidr(`${ref}/32`);
      if (cidr === undefined || !contains(subnet, networkOf(cidr))) continue;
      const held = [...hosts, ...added];
      if (held.some((n) => contains(cidr, n))) continue;
      for (let n = networkOf(cidr); n <= broadcastOf(cidr); n++) {
        if (free(n)) {
          added.push(n);
          break;
        }
      }
    }
  }
  return added;
}

function isHost(cidr: Cidr, n: number): boolean {
  return n > networkOf(cidr) && n < broadcastOf(cidr);
}

/** Docker's habit: the subnet's .2 unless that is the gateway, else the first free host address (undefined: none). */
function dockerLikeAddress(cidr: Cidr, gateway: number): number | undefined {
  const second = networkOf(cidr) + 2;
  if (second !== gateway && isHost(cidr, second)) return second;
  for (let n = networkOf(cidr) + 1; isHost(cidr, n); n++) if (n !== gateway) return n;
  return undefined;
}

/** `.100` of the subnet when it is a free host address, else the highest free one (undefined: none). */
function clientHostAddress(cidr: Cidr, used: number[]): number | undefined {
  const preferred = networkOf(cidr) + CLIENT_HOST_OFFSET;
  if (isHost(cidr, preferred) && !used.includes(preferred)) return preferred;
  for (let n = broadcastOf(cidr) - 1; isHost(cidr, n); n--) if (!used.includes(n)) return n;
  return undefined;
}

function refName(ref: InterfaceRef | undefined): string | undefined {
  return typeof ref === 'string' ? ref : undefined;
}

function refMac(ref: InterfaceRef | undefined): string | undefined {
  return typeof ref === 'object' ? ref.mac.toLowerCase() : undefined;
}
