/** Parsers for `ip -json` output (iproute2). Pure. */
import type { Address, Link, Route, RoutedPrefix } from './facts.js';

interface IpAddrJson {
  ifindex: number;
  ifname: string;
  altnames?: string[];
  address?: string;
  flags?: string[];
  link_type?: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; metric?: number }>;
  stats64?: { rx?: Record<string, number>; tx?: Record<string, number> };
}

/** `ip -json [-s] addr show` → links with their IPv4 addresses (and counters with -s). */
export function parseIpAddr(json: string): Link[] {
  const entries = JSON.parse(json || '[]') as IpAddrJson[];
  return entries.map((e) => {
    const addresses: Address[] = (e.addr_info ?? [])
      .filter((a) => a.family === 'inet')
      .map((a) => ({ address: a.local, prefix: a.prefixlen, ...(a.metric !== undefined ? { metric: a.metric } : {}) }));
    const flags = e.flags ?? [];
    const rx = e.stats64?.rx;
    const tx = e.stats64?.tx;
    return {
      index: e.ifindex,
      name: e.ifname,
      ...(e.altnames && e.altnames.length > 0 ? { altnames: e.altnames } : {}),
      mac: (e.address ?? '').toLowerCase(),
      up: flags.includes('UP'),
      // LOWER_UP without NO-CARRIER: iproute2 prints both for a moment while a veth's peer comes up.
      carrier: flags.includes('LOWER_UP') && !flags.includes('NO-CARRIER'),
      loopback: e.link_type === 'loopback' || flags.includes('LOOPBACK'),
      addresses,
      ...(rx && tx ? {
        stats: {
          rxBytes: rx.bytes ?? 0, rxPackets: rx.packets ?? 0, rxDropped: rx.dropped ?? 0,
          txBytes: tx.bytes ?? 0, txPackets: tx.packets ?? 0, txDropped: tx.dropped ?? 0,
        },
      } : {}),
    };
  });
}

/** `ip -json route show` (or `route show default`) → the main table's default route, if any. */
interface RouteJson {
  dst: string;
  type?: string;
  gateway?: string;
  dev?: string;
  protocol?: string | number;
  scope?: string | number;
  prefsrc?: string;
  metric?: number;
  tos?: string;
  /** A next hop of another family (RFC 5549: an IPv4 route via an IPv6 neighbour). */
  via?: { family?: string; host?: string };
  /** Per-route settings (`mtu 1400`, `initcwnd 10`), as `ip -json` prints them: [{mtu: 1400, initcwnd: 10}]. */
  metrics?: Array<Record<string, unknown>>;
  flags?: string[];
  nexthops?: Array<{ gateway?: string; via?: { family?: string; host?: string }; dev?: string; weight?: number; flags?: string[] }>;
}

/**
 * `ip -json route show` → the default route, with what puts it back exactly: a rollback of our `route replace` must
 * not leave a multipath or on-link default as one plain next hop, nor a second default beside one of another metric.
 * The kernel lists default routes by TOS (highest first), then metric: the first without a TOS is the one ordinary
 * traffic takes and ours replaces; a TOS route (listed before it) only where there is no other.
 */
export function parseDefaultRoute(json: string): Route | undefined {
  const routes = JSON.parse(json || '[]') as RouteJson[];
  const noTos = (r: RouteJson) => !r.tos || r.tos === '0x00';
  const route = routes.find((r) => r.dst === 'default' && noTos(r)) ?? routes.find((r) => r.dst === 'default');
  if (!route) return undefined;
  return {
    ...(route.gateway ? { gateway: route.gateway } : {}),
    ...(route.dev ? { dev: route.dev } : {}),
    ...(route.metric ? { metric: route.metric } : {}),
    ...(noTos(route) ? {} : { tos: route.tos }),
    spec: routeSpec(route),
  };
}

/** A route as the arguments of `ip route replace` (a metric's "lock" is not in the JSON, so not here either). */
function routeSpec(r: RouteJson): string {
  const words = [...(r.type && r.type !== 'unicast' ? [r.type] : []), r.dst];
  if (r.tos) words.push('tos', r.tos);
  if (r.gateway) words.push('via', r.gateway);
  else if (r.via?.host) words.push('via', ...(r.via.family ? [r.via.family] : []), r.via.host);
  if (r.dev) words.push('dev', r.dev);
  if (r.protocol !== undefined) words.push('proto', String(r.protocol));
  if (r.scope !== undefined) words.push('scope', String(r.scope));
  if (r.prefsrc) words.push('src', r.prefsrc);
  if (r.metric) words.push('metric', String(r.metric));
  for (const [key, value] of Object.entries(r.metrics?.[0] ?? {})) if (typeof value === 'number') words.push(key, String(value));
  if (r.flags?.includes('onlink')) words.push('onlink');
  for (const hop of r.nexthops ?? []) {
    words.push('nexthop');
    if (hop.gateway) words.push('via', hop.gateway);
    else if (hop.via?.host) words.push('via', ...(hop.via.family ? [hop.via.family] : []), hop.via.host);
    if (hop.dev) words.push('dev', hop.dev);
    if (hop.weight !== undefined) words.push('weight', String(hop.weight));
    if (hop.flags?.includes('onlink')) words.push('onlink');
  }
  return words.join(' ');
}

/**
 * `ip -json route show` → the networks routed through a NIC besides its own (`10.99.0.0/24 via 192.168.10.5 dev
 * eth1`, or on-link without a next hop; a multipath route through each of its next hops' NICs): unicast IPv4
 * routes other than the default and the kernel's connected ones. A host route is printed without its /32.
 */
export function parseRoutedPrefixes(json: string): RoutedPrefix[] {
  type RouteJson = { dst: string; dev?: string; type?: string; protocol?: string; metric?: number; nexthops?: Array<{ dev?: string }> };
  const routes = JSON.parse(json || '[]') as RouteJson[];
  return routes.flatMap((r) => {
    if (r.dst === 'default' || (r.type !== undefined && r.type !== 'unicast') || r.protocol === 'kernel' || r.dst.includes(':')) return [];
    const prefix = r.dst.includes('/') ? r.dst : `${r.dst}/32`;
    const devs = r.dev ? [r.dev] : (r.nexthops ?? []).flatMap((n) => (n.dev ? [n.dev] : []));
    return devs.map((dev) => ({ prefix, dev, ...(r.metric ? { metric: r.metric } : {}) }));
  });
}
