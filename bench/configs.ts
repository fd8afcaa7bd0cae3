/**
 * Benchmark configs, generated as plain objects and checked by the product's own validateConfig, plus the
 * names and addresses of the NICs a namespace needs so that the planner matches every VLAN.
 *
 * VLAN i (1-based) is `v<i>`, id i, subnet 10.(64 + i/256).(i%256).0/24, gateway .1; its NIC in the router
 * namespace is `n<i>` holding the Docker-like address .2. Each VLAN has forwarding rules towards its
 * `partners` predecessors (v<i> → v<i-1>, v<i-2>, …, wrapping), so those pairs get their own VGW-P- chain:
 * in particular the LAST VLAN's pair towards the one before it, which the forwarding benchmark walks.
 */
import type { Config } from '../src/config/schema.js';
import { validateConfig } from '../src/config/validate.js';
import { formatPath } from '../src/config/problems.js';

export interface ConfigShape {
  readonly vlans: number;
  /** How many other VLANs each VLAN has forwarding rules towards. */
  readonly partners: number;
  /** Rules per (from, to) pair; none of them matches UDP to port 5201 (the forwarding benchmark's traffic). */
  readonly rulesPerPair: number;
  /** Give the config an uplink NIC (`up0`) with a gateway, so apply also sets a route and NAT. */
  readonly uplink: boolean;
}

/** The benchmark's two sizes (run.ts, floor.ts, inside.ts): about 1,000 and 10,000 rule lines. */
export const SIZES: Readonly<Record<'1k' | '10k', ConfigShape>> = {
  '1k': { vlans: 20, partners: 2, rulesPerPair: 20, uplink: true },
  '10k': { vlans: 96, partners: 2, rulesPerPair: 46, uplink: true },
};

export const UPLINK_NIC = 'up0';
export const UPLINK_ADDRESS = '198.51.100.2';
const UPLINK_GATEWAY = '198.51.100.1';

export const vlanName = (i: number) => `v${i}`;
export const nicName = (i: number) => `n${i}`;
const peerName = (i: number) => `p${i}`;
const subnetBase = (i: number) => `10.${64 + (i >> 8)}.${i & 255}`;
export const subnetOf = (i: number) => `${subnetBase(i)}.0/24`;
export const gatewayOf = (i: number) => `${subnetBase(i)}.1`;
/** The address Docker would give the router's NIC in VLAN i. */
export const nicAddressOf = (i: number) => `${subnetBase(i)}.2`;
/** A client host in VLAN i (forwarding benchmark). */
export const clientAddressOf = (i: number) => `${subnetBase(i)}.10`;

/** The partner VLANs of VLAN i: its predecessors, wrapping around. */
function partnersOf(i: number, shape: ConfigShape): number[] {
  const out: number[] = [];
  for (let k = 1; k <= shape.partners; k++) out.push(((i - 1 - k + shape.vlans) % shape.vlans) + 1);
  return out;
}

/** `variant` shifts the ports of VLAN `changed`'s rules: the same VLAN with a different policy. */
function pairRules(from: number, to: number, count: number, variant: number): Config['forwarding']['rules'] {
  const rules: Config['forwarding']['rules'] = [];
  for (let k = 0; k < count; k++) {
    const proto = k % 2 === 0 ? 'tcp' : 'udp';
    const port = 1000 + variant * 100 + k; // never 5201
    rules.push({ from: vlanName(from), to: vlanName(to), proto, ports: String(port), action: k % 3 === 2 ? 'reject' : 'drop' });
  }
  return rules;
}

function validated(raw: unknown): Config {
  const result = validateConfig(raw);
  if (!result.ok) {
    const lines = result.problems.slice(0, 10).map((p) => `  ${formatPath(p.path)}: ${p.message}`);
    throw new Error(`generated config is invalid:\n${lines.join('\n')}`);
  }
  return result.config;
}

/**
 * The config for a shape. `changed` (a VLAN number) gets a different set of ports in its outgoing rules, by
 * `variant` (1 to 40: the ports stay clear of 5201): `generateConfig(s)` and `generateConfig(s, k, v)` differ in
 * exactly one VLAN's forwarding rules, and so do `generateConfig(s, k, v)` and `generateConfig(s, k, w)`.
 */
export function generateConfig(shape: ConfigShape, changed?: number, variant = 1): Config {
  if (!Number.isInteger(variant) || variant < 1 || variant > 40) throw new Error(`variant ${variant}: 1 to 40`);
  const vlans = [];
  const rules: Config['forwarding']['rules'] = [];
  for (let i = 1; i <= shape.vlans; i++) {
    vlans.push({ name: vlanName(i), id: i, subnet: subnetOf(i), gateway: gatewayOf(i) });
    for (const to of partnersOf(i, shape)) rules.push(...pairRules(i, to, shape.rulesPerPair, i === changed ? variant : 0));
  }
  return validated({
    uplink: shape.uplink ? { interface: UPLINK_NIC, gateway: UPLINK_GATEWAY, nat: 'masquerade' } : { nat: 'none' },
    vlans,
    forwarding: { default: 'accept', rules },
  });
}

/**
 * `ip -batch` lines (run inside the namespace) that create what Docker would have attached: per VLAN a veth
 * whose end `n<i>` holds the VLAN's Docker-like address and is up. `external` maps a VLAN number to a
 * namespace that gets the peer end instead (a client host); otherwise both ends stay in this namespace.
 */
export function nicBatch(shape: ConfigShape, external: ReadonlyMap<number, string> = new Map()): string {
  const lines: string[] = [];
  if (shape.uplink) {
    lines.push(`link add ${UPLINK_NIC} type veth peer name ${UPLINK_NIC}p`);
    lines.push(`addr add ${UPLINK_ADDRESS}/24 dev ${UPLINK_NIC}`);
    lines.push(`link set ${UPLINK_NIC}p up`, `link set ${UPLINK_NIC} up`);
  }
  for (let i = 1; i <= shape.vlans; i++) {
    const peerNs = external.get(i);
    lines.push(`link add ${nicName(i)} type veth peer name ${peerNs ? 'c0' : peerName(i)}${peerNs ? ` netns ${peerNs}` : ''}`);
    lines.push(`addr add ${nicAddressOf(i)}/24 dev ${nicName(i)}`);
    if (!peerNs) lines.push(`link set ${peerName(i)} up`);
    lines.push(`link set ${nicName(i)} up`);
  }
  return `${lines.join('\n')}\n`;
}
