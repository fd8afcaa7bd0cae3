/**
 * Random configs for the differential check of the forwarding policy (forwarding-oracle.ts), from a seeded PRNG,
 * over one lab of four VLANs that every config reuses: each config names three or four of them (the one left out
 * is a NIC the gateway does not manage), renames some, and has 0–8 rules (VLAN names, "uplink", addresses and
 * prefixes; tcp, udp, icmp, all; port lists and ranges; accept, drop, reject), either default, each uplink.nat, a
 * VLAN without masquerade now and then, and up to three port forwards (ports and ranges, tcp and udp). Rules'
 * ports are made of PORTS, so that probing PORTS tries each rule's edges. Pure.
 */
import type { RawConfig, RawForward, RawRule } from './forwarding-oracle.js';

export interface PoolVlan {
  readonly id: number;
  readonly names: readonly string[];
  readonly subnet: string;
  readonly gateway: string;
  /** The lab client's own address first, then the others it holds. */
  readonly hosts: readonly string[];
  /** Addresses and prefixes a rule may name (some hold no host of the lab). */
  readonly refs: readonly string[];
}

export const POOL: readonly PoolVlan[] = [
  {
    id: 10, names: ['office', 'ten', 'staff'], subnet: '192.168.10.0/24', gateway: '192.168.10.1',
    hosts: ['192.168.10.100', '192.168.10.20', '192.168.10.200'],
    refs: ['192.168.10.20', '192.168.10.100', '192.168.10.200', '192.168.10.50', '192.168.10.0/25', '192.168.10.128/25', '192.168.10.0/27', '192.168.10.96/28', '192.168.10.200/29', '192.168.10.0/24'],
  },
  {
    id: 20, names: ['lab', 'twenty'], subnet: '192.168.20.0/24', gateway: '192.168.20.1',
    hosts: ['192.168.20.100', '192.168.20.20', '192.168.20.200'],
    refs: ['192.168.20.20', '192.168.20.100', '192.168.20.200', '192.168.20.50', '192.168.20.0/25', '192.168.20.128/25', '192.168.20.0/27', '192.168.20.96/28', '192.168.20.200/29'],
  },
  {
    id: 30, names: ['iot', 'thirty'], subnet: '10.30.0.0/16', gateway: '10.30.0.1',
    hosts: ['10.30.0.100', '10.30.0.20', '10.30.7.200'],
    refs: ['10.30.0.20', '10.30.0.100', '10.30.7.200', '10.30.0.50', '10.30.0.0/24', '10.30.7.0/24', '10.30.0.96/27', '10.30.0.0/16', '10.30.0.0/17'],
  },
  {
    id: 40, names: ['guest', 'forty'], subnet: '172.16.40.0/25', gateway: '172.16.40.126',
    hosts: ['172.16.40.100', '172.16.40.20', '172.16.40.120'],
    refs: ['172.16.40.20', '172.16.40.100', '172.16.40.120', '172.16.40.50', '172.16.40.0/26', '172.16.40.64/26', '172.16.40.96/29', '172.16.40.0/25'],
  },
];

/** The tcp/udp ports probed and served: rules' ports are made of these, so each rule's edges are probed. */
export const PORTS = [22, 53, 80, 443, 999, 1000, 1005, 1006] as const;
const PORT_ITEMS = ['22', '53', '80', '443', '1000', '1005', '1000-1005', '22-80', '53-443', '443-1000', '999-1006', '80-80', '22,80', '1005-1006'];
/** Ports port forwards take on the uplink (and the hosts serve, for ranges forwarded to the same ports). */
export const FORWARD_PORTS = [2222, 2223, 7000, 6000, 6001, 6002, 6003, 6010, 6011, 6012] as const;
const FORWARD_PORT_CHOICES: ReadonlyArray<number | string> = [2222, 2223, 7000, '6000-6003', '6010-6012', '6001-6002'];

/** nat: snat's address: a second address the test gives the router's uplink NIC (the lab's own is .2, which
 *  masquerade uses), so that the Internet host tells SNAT from masquerade. */
export const SNAT_TO = '203.0.113.3';
/** The lab's next hop (topology.ts), named as uplink.gateway by some configs. */
const UPLINK_GATEWAY = '203.0.113.1';

export function generateConfig(random: () => number, previousNames?: ReadonlyMap<number, string>): RawConfig {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const chance = (p: number) => random() < p;

  const dropped = chance(0.3) ? pick(POOL).id : undefined;
  const pool = POOL.filter((v) => v.id !== dropped);
  const vlans = pool.map((v) => {
    const kept = previousNames?.get(v.id);
    const name = kept !== undefined && !chance(0.15) ? kept : pick(v.names);
    const masquerade = chance(0.2) ? false : chance(0.3) ? true : undefined;
    return { name, id: v.id, subnet: v.subnet, gateway: v.gateway, ...(masquerade === undefined ? {} : { masquerade }) };
  });
  const nameOf = (v: PoolVlan) => vlans.find((x) => x.id === v.id)!.name;

  const nat = pick(['masquerade', 'masquerade', 'snat', 'none', undefined] as const);
  const uplink: RawConfig['uplink'] = {
    ...(chance(0.3) ? { interface: 'eth0' } : {}),
    ...(chance(0.3) ? { gateway: UPLINK_GATEWAY } : {}),
    ...(nat === undefined ? {} : { nat }),
    ...(nat === 'snat' ? { snatTo: SNAT_TO } : {}),
  };

  const zoneRef = (): { ref: string; vlan?: number } => {
    const r = random();
    if (r < 0.2) return { ref: 'uplink' };
    const v = pick(pool);
    if (r < 0.6) return { ref: nameOf(v), vlan: v.id };
    return { ref: pick(v.refs), vlan: v.id };
  };
  const rules: RawRule[] = [];
  const count = Math.floor(random() * 9);
  while (rules.length < count) {
    const from = zoneRef();
    const to = zoneRef();
    if (from.ref === 'uplink' && to.ref === 'uplink') continue;
    if (from.vlan !== undefined && from.vlan === to.vlan) continue;
    const proto = pick([undefined, 'all', 'tcp', 'tcp', 'tcp', 'udp', 'udp', 'icmp'] as const);
    const ports = (proto === 'tcp' || proto === 'udp') && chance(0.65)
      ? [...new Set(Array.from({ length: 1 + Math.floor(random() * 2) }, () => pick(PORT_ITEMS)))].join(',')
      : undefined;
    const action = pick(['accept', 'accept', 'drop', 'drop', 'reject'] as const);
    rules.push({ from: from.ref, to: to.ref, ...(proto === undefined ? {} : { proto }), ...(ports === undefined ? {} : { ports: /^\d+$/.test(ports) && chance(0.5) ? Number(ports) : ports }), action });
  }
  const fallback = pick(['accept', 'drop', undefined] as const);

  const portForwards: RawForward[] = [];
  const taken: Record<string, Array<[number, number]>> = { tcp: [], udp: [] };
  const forwards = Math.floor(random() * 4);
  for (let i = 0; i < forwards; i++) {
    const proto = pick(['tcp', 'tcp', 'udp', undefined] as const);
    const port = pick(FORWARD_PORT_CHOICES);
    const [low, high] = String(port).split('-').map(Number) as [number, number?];
    const range: [number, number] = [low, high ?? low];
    const list = taken[proto ?? 'tcp']!;
    if (list.some(([a, b]) => range[0] <= b && a <= range[1])) continue;
    list.push(range);
    const target = pick(pool);
    const to = pick(target.hosts);
    const toPort = typeof port === 'number' && chance(0.6) ? pick(PORTS) : undefined;
    portForwards.push({ ...(proto === undefined ? {} : { proto }), port, to, ...(toPort === undefined ? {} : { toPort }) });
  }

  return {
    uplink,
    vlans,
    forwarding: { ...(fallback === undefined ? {} : { default: fallback }), rules },
    portForwards,
  };
}
