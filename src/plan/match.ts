/**
 * Which NIC carries which VLAN, and which is the uplink. Docker names a container's NICs in attach order
 * (eth0, eth1, …), which changes between runs, so a VLAN is found by the name or MAC the config gives, else by
 * the NIC holding an address inside its subnet. Pure.
 */
import type { Config, InterfaceRef } from '../config/schema.js';
import { contains, formatCidr, networkOf, parseAddress, parseCidr, type Cidr } from '../net/ipv4.js';
import type { Address, BindingFacts, Link } from '../observe/facts.js';
import type { UplinkBinding, VlanBinding } from './types.js';
import { OUR_ADDRESS_METRIC } from './chains.js';

/**
 * A NIC name a rule can hold as it is. Linux allows almost any character in one, but in iptables `+` ends a
 * wildcard (`-i e+` matches every eth*), a leading `!` or `-`, a quote or a space would change the rule line, and
 * `ip -batch` cuts a line at `#`.
 * Docker's names (eth0, eth1, …) always pass; a NIC whose name does not is never bound (and a note says why).
 */
const RULE_SAFE_NIC = /^[A-Za-z0-9_][A-Za-z0-9_.@-]*$/;
const ruleSafeNic = (name: string) => RULE_SAFE_NIC.test(name) && name.length <= 15;

const unsafeNote = (nic: Link) => `${nic.name}'s name cannot be used in a rule (iptables reads + as a wildcard, ! - " or a space as syntax, and ip -batch # as a comment); rename it`;

/**
 * The NIC a config's name or MAC names. A name is the NIC's own or one of its altnames (`ip` takes either, so users
 * write either); what the binding carries on is the NIC, and with it its own name, the one iptables matches on.
 */
function byRef(links: readonly Link[], ref: InterfaceRef): Link | undefined {
  return typeof ref === 'string'
    ? links.find((l) => l.name === ref) ?? links.find((l) => l.altnames?.includes(ref))
    : links.find((l) => l.mac === ref.mac.toLowerCase());
}

function describeRef(ref: InterfaceRef): string {
  return typeof ref === 'string' ? ref : `MAC ${ref.mac.toLowerCase()}`;
}

/**
 * The uplink: the NIC the config names; else the one on the same network as uplink.gateway; else the one holding
 * the default route. A NIC with an address inside a configured VLAN is never the uplink, even when Docker put the
 * default route on it (it does, when the gateway container was started on a VLAN network).
 */
export function matchUplink(config: Config, facts: BindingFacts): UplinkBinding {
  const binding = findUplink(config, facts);
  const { nic } = binding;
  if (!nic) return binding;
  const notes = [gatewayNote(config, nic), snatNote(config, nic)].filter((n) => n !== undefined);
  return notes.length > 0 ? { ...binding, note: notes.join('; ') } : binding;
}

/** Whether the NIC holds an address on the network of `address` (a next hop the kernel accepts through it). */
function onLinkOf(nic: Link, address: string): boolean {
  const target = parseAddress(address);
  return target !== undefined && nic.addresses.some((a) => {
    const own = parseAddress(a.address);
    return own !== undefined && contains({ network: own, prefix: a.prefix }, target);
  });
}

/** A next hop the default route may take through the NIC: on one of its networks, and not an address of its own. */
export function nextHopOn(nic: Link, address: string): boolean {
  return onLinkOf(nic, address) && !nic.addresses.some((a) => a.address === address);
}

const heldBy = (nic: Link) => nic.addresses.map((a) => `${a.address}/${a.prefix}`).join(', ') || 'no address';

/**
 * uplink.gateway off the uplink NIC's networks (a typo, or uplink.interface naming another NIC): the kernel would
 * refuse the route, and the whole apply with it. The route waits instead, as it does for a missing NIC, and the
 * VLANs are routed meanwhile.
 */
function gatewayNote(config: Config, nic: Link): string | undefined {
  const { gateway } = config.uplink;
  if (gateway === undefined) return undefined;
  // The kernel refuses a route through a NIC that is down ("Nexthop has invalid gateway"): the route waits for it
  // (the gateway does not bring the uplink up, as it does a VLAN's NIC: someone set it down, or Docker has not yet).
  if (!nic.up) return `${nic.name} is down: no default route is set until it is up`;
  // The router's own address as its next hop: the kernel takes that route, and sends the Internet's traffic nowhere.
  if (nic.addresses.some((a) => a.address === gateway)) {
    return `uplink.gateway ${gateway} is an address of ${nic.name} itself, not a next hop (the uplink network's router): no default route is set until it is`;
  }
  if (onLinkOf(nic, gateway)) return undefined;
  return `uplink.gateway ${gateway} is not on a network of ${nic.name} (it has ${heldBy(nic)}): no default route is set until it is`;
}

/**
 * With `nat: snat`, replies come back to snatTo: if the uplink NIC does not hold it, they reach the gateway only when
 * the uplink network routes that address here. Docker gives a container a new uplink address when it is created
 * again unless it is pinned, which would cut every VLAN off the Internet without an error; say so where people look.
 */
function snatNote(config: Config, nic: Link): string | undefined {
  const { nat, snatTo } = config.uplink;
  if (nat !== 'snat' || snatTo === undefined || nic.addresses.some((a) => a.address === snatTo)) return undefined;
  return `uplink.snatTo ${snatTo} is not an address of ${nic.name} (it has ${heldBy(nic)}): replies reach the gateway only if the `
    + 'uplink network routes that address here; pin the address (docker run --ip, Compose ipv4_address) or use nat: masquerade';
}

function findUplink(config: Config, facts: BindingFacts): UplinkBinding {
  const all = facts.links.filter((l) => !l.loopback);
  const links = all.filter((l) => ruleSafeNic(l.name));
  const { interface: ref, gateway } = config.uplink;
  if (ref !== undefined) {
    const nic = byRef(links, ref);
    const unsafe = nic ? undefined : byRef(all, ref);
    return nic ? { nic } : { note: unsafe ? `waiting: ${unsafeNote(unsafe)}` : `waiting for ${describeRef(ref)}` };
  }
  const subnets = config.vlans.map((v) => parseCidr(v.subnet)!);
  // A /32 is an address alone (a routed or cloud uplink's), never the network of a VLAN's NIC, whatever subnet holds it.
  const inVlan = (l: Link) => l.addresses.some((a) => {
    if (a.prefix === 32) return false;
    const address = parseAddress(a.address)!;
    return subnets.some((s) => contains(s, address));
  });
  const candidates = links.filter((l) => !inVlan(l));
  if (gateway !== undefined) {
    // Only the NIC on the gateway's network: while none is (the uplink not attached yet, or a typo), the uplink
    // waits rather than take the default route's NIC, which may be another network (NAT out of the wrong one).
    const nic = candidates.find((l) => onLinkOf(l, gateway));
    if (nic) return { nic };
    const others = candidates.map((l) => `${l.name} has ${heldBy(l)}`).join('; ');
    return { note: `waiting for a NIC on the same network as ${gateway}${others ? ` (${others})` : ''}` };
  }
  const routeDev = facts.defaultRoute?.dev;
  const viaRoute = routeDev === undefined ? undefined : candidates.find((l) => l.name === routeDev);
  if (viaRoute) return { nic: viaRoute };
  if (routeDev === undefined) return { note: NO_WAY_TO_FIND_UPLINK };
  const what = links.some((l) => l.name === routeDev) ? "a VLAN's NIC" : 'a NIC whose name cannot be used in a rule';
  return { note: `waiting: the default route is on ${routeDev}, ${what}; set uplink.interface or uplink.gateway` };
}

const NO_WAY_TO_FIND_UPLINK = 'waiting: no default route, and no uplink.interface or uplink.gateway to find the uplink by';

/**
 * Whether the uplink waits with nothing in the config to find it by and no default route: a router of internal
 * networks only, or one whose way out comes later. No NIC is the uplink's meant one then.
 */
export function uplinkUnnamed(uplink: UplinkBinding): boolean {
  return !uplink.nic && uplink.note === NO_WAY_TO_FIND_UPLINK;
}

export function matchVlans(config: Config, facts: BindingFacts, uplink: UplinkBinding): VlanBinding[] {
  const all = facts.links.filter((l) => !l.loopback);
  const links = all.filter((l) => l.name !== uplink.nic?.name && ruleSafeNic(l.name));
  // The NICs by the subnets their addresses are in (prefix and network address), in link order: one lookup per
  // VLAN, not a scan of every NIC's addresses (100 VLANs × 100 NICs at each pass).
  const bySubnet = new Map<string, Link[]>();
  for (const l of links) {
    for (const a of l.addresses) {
      const address = parseAddress(a.address);
      if (address === undefined) continue;
      const key = `${a.prefix}/${networkOf({ network: address, prefix: a.prefix })}`;
      const list = bySubnet.get(key) ?? bySubnet.set(key, []).get(key)!;
      if (list.at(-1) !== l) list.push(l);
    }
  }
  // NICs the config names are theirs first: a VLAN found by subnet never takes one (two VLANs on one NIC would
  // share its connected routes, and the anti-spoofing would drop one VLAN's hosts).
  const taken = new Map<string, string>();
  const pinned = new Map<number, Link>();
  const misplaced = new Map<number, string>();
  config.vlans.forEach((vlan, i) => {
    if (vlan.interface === undefined) return;
    const nic = byRef(links, vlan.interface);
    const wrong = nic && misplacedPin(config, i, nic);
    if (wrong) misplaced.set(i, wrong); // not taken: the VLAN whose subnet it holds may find it
    else if (nic && !taken.has(nic.name)) {
      taken.set(nic.name, `${vlan.name}'s (vlans[${i}].interface)`);
      pinned.set(i, nic);
    }
  });
  const vlanSubnets = config.vlans.map((v) => parseCidr(v.subnet)!);
  /** Whether the NIC holds an address in the subnet of a VLAN other than vlans[index]. */
  const inOtherVlan = (l: Link, index: number) => l.addresses.some((a) => {
    const address = parseAddress(a.address);
    return address !== undefined && vlanSubnets.some((s, j) => j !== index && contains(s, address));
  });
  // Every NIC's addresses as numbers, parsed once for all the waiting VLANs' notes (100 VLANs waiting for their NICs
  // parsed every address of every NIC again for each: 20,000 parses a pass).
  let parsed: ParsedLink[] | undefined;
  const parsedAll = () => (parsed ??= all.map((l) => ({ link: l, addresses: l.addresses.map((a) => ({ address: a, value: parseAddress(a.address) })) })));
  const uplinkName = uplink.nic?.name;
  const owner = (name: string) => (name === uplinkName ? 'the uplink' : taken.get(name));
  const bindings = config.vlans.map((vlan, i): VlanBinding => {
    if (vlan.interface !== undefined) {
      const nic = pinned.get(i);
      if (misplaced.has(i)) return { vlan, note: `waiting: ${misplaced.get(i)!}` };
      if (nic) return { vlan, nic };
      const other = byRef(all, vlan.interface);
      if (other && !ruleSafeNic(other.name)) return { vlan, note: `waiting: ${unsafeNote(other)}` };
      if (other && owner(other.name)) return { vlan, note: `waiting: ${other.name} is ${owner(other.name)}` };
      return { vlan, note: `waiting for ${describeRef(vlan.interface)}` };
    }
    const subnet = parseCidr(vlan.subnet)!;
    const candidates = (bySubnet.get(`${subnet.prefix}/${networkOf(subnet)}`) ?? []).filter((l) => !taken.has(l.name));
    if (candidates.length === 0) return { vlan, note: waitingNote(vlan.subnet, subnet, parsedAll(), owner) };
    // Prefer the NIC that holds the gateway address as ours (a previous apply put it there); then, of those with no
    // address in another VLAN's subnet, one holding the gateway address, else the first; then the oldest. An address
    // someone added by hand on another VLAN's NIC (the write-up's `ifconfig eth1 192.168.10.1`, after Docker named
    // the NICs in another order) does not take that NIC: the other VLAN would wait, its gateway address removed,
    // and this VLAN's hosts be dropped as forged.
    const holdsGateway = (l: Link, ours: boolean) => l.addresses.some((a) => a.address === vlan.gateway && (!ours || a.metric === OUR_ADDRESS_METRIC));
    const own = candidates.length === 1 ? candidates : candidates.filter((l) => !inOtherVlan(l, i)).sort((a, b) => a.index - b.index);
    const nic = candidates.length === 1 ? candidates[0]!
      : candidates.find((l) => holdsGateway(l, true)) ?? own.find((l) => holdsGateway(l, false)) ?? own[0]
        ?? [...candidates].sort((a, b) => a.index - b.index)[0]!;
    taken.set(nic.name, `${vlan.name}'s`);
    const note = candidates.length > 1
      ? `${candidates.length} NICs have addresses in ${vlan.subnet} (${candidates.map((c) => c.name).join(', ')}); using ${nic.name}`
      : undefined;
    return { vlan, nic, ...(note ? { note } : {}) };
  });
  return withRoutedPrefixes(facts, withUnclaimedNics(bindings, all, uplinkName));
}

const plainWaitNote = (subnet: string) => `waiting for a NIC with an address in ${subnet}`;

/**
 * Whether a binding's note says only that its NIC is not there yet (Docker has not attached it: the usual state
 * between `docker run` and `docker network connect`), rather than what the gateway found instead.
 */
export function isPlainWait(binding: VlanBinding): boolean {
  if (binding.nic || binding.note === undefined) return false;
  const { vlan } = binding;
  return binding.note === plainWaitNote(vlan.subnet) || (vlan.interface !== undefined && binding.note === `waiting for ${describeRef(vlan.interface)}`);
}

/**
 * Whether a waiting VLAN's note is only "not attached yet" plus the NICs no VLAN took (withUnclaimedNics): one of
 * them may be its network under another subnet, or another VLAN's not bound yet, or a network that is no VLAN's.
 */
export function namesUnclaimedNics(binding: VlanBinding): boolean {
  return !binding.nic && (binding.note?.startsWith(`${plainWaitNote(binding.vlan.subnet)} ${UNCLAIMED}`) ?? false);
}

const UNCLAIMED = '(not the uplink and in no VLAN: ';

/**
 * The NICs with an address that are neither the uplink nor any VLAN's (loopback aside), each with the addresses it
 * holds ("192.168.30.2/24"), in link order: a network connected to the container that no VLAN of the config is for.
 */
export function unclaimedNics(bindings: readonly VlanBinding[], links: readonly Link[], uplinkName: string | undefined): Map<string, string> {
  const bound = new Set(bindings.flatMap((b) => (b.nic ? [b.nic.name] : [])));
  return new Map(links.filter((l) => !l.loopback && l.name !== uplinkName && !bound.has(l.name) && l.addresses.length > 0)
    .map((l) => [l.name, heldBy(l)]));
}

/**
 * A VLAN that waits for a NIC in its subnet while a NIC with an address is neither the uplink nor any VLAN's names
 * that NIC, as the uplink's note names the NICs there are: a config whose subnet is not its Docker network's (a
 * typo, 192.168.11.0/24 for a network of 192.168.10.0/24) otherwise reads as a network not yet connected.
 */
function withUnclaimedNics(bindings: VlanBinding[], links: readonly Link[], uplinkName: string | undefined): VlanBinding[] {
  if (bindings.every((b) => b.nic)) return bindings;
  const unclaimed = unclaimedNics(bindings, links, uplinkName);
  if (unclaimed.size === 0) return bindings;
  const named = [...unclaimed].map(([name, held]) => `${name} has ${held}`).join('; ');
  return bindings.map((b) => (b.nic || b.note !== plainWaitNote(b.vlan.subnet) ? b
    : { ...b, note: `${b.note} ${UNCLAIMED}${named})` }));
}

/**
 * A NIC a VLAN is pinned to that holds an address in another VLAN's subnet and none in its own: the NICs came in
 * another order (Docker attaches them by network, and names them by attach order), and taking it would move the
 * gateway addresses onto the wrong VLANs and drop both VLANs' traffic as forged. The VLAN waits, saying why.
 */
function misplacedPin(config: Config, index: number, nic: Link): string | undefined {
  // Docker's addresses only: a gateway address of ours (by its metric) there would vouch for a binding it made.
  const held = nic.addresses.filter((a) => a.metric !== OUR_ADDRESS_METRIC).map((a) => ({ text: `${a.address}/${a.prefix}`, address: parseAddress(a.address) }));
  const own = parseCidr(config.vlans[index]!.subnet)!;
  if (held.some((a) => a.address !== undefined && contains(own, a.address))) return undefined;
  for (const other of config.vlans) {
    const subnet = parseCidr(other.subnet)!;
    const found = held.find((a) => a.address !== undefined && contains(subnet, a.address));
    if (found) {
      return `${nic.name} holds ${found.text}, in ${other.name}'s subnet ${other.subnet}, and no address in ${config.vlans[index]!.subnet}; `
        + `check vlans[${index}].interface (the NICs may have been attached in another order)`;
    }
  }
  return undefined;
}

/**
 * What the uplink may forward from among the networks routed behind VLAN hosts, most specific first (the kernel's
 * longest match): each network whose route in use goes through a VLAN's NIC is forged there (`forged`), and so is
 * refused on the uplink as a VLAN's subnet is; inside one, the uplink's own networks and the routes in use through
 * it are not (a summary 10.0.0.0/8 via a site router on a VLAN, with the uplink on 10.1.0.0/16). A network in use
 * through the uplink too (multipath, an equal metric) is not forged, nor is one of the uplink's own networks (a backup
 * route to it through a VLAN's host: its connected route is in use). Empty without such networks or an uplink NIC.
 */
export function uplinkRoutedSources(facts: BindingFacts, uplink: UplinkBinding, vlans: readonly VlanBinding[]): Array<{ prefix: string; forged: boolean }> {
  const nic = uplink.nic;
  if (!nic || !facts.routed) return [];
  const subnets = new Set(vlans.map((b) => b.vlan.subnet));
  const all = facts.routed.flatMap((r) => {
    const c = parseCidr(r.prefix);
    return c && c.prefix > 0 ? [{ cidr: c, prefix: formatCidr(c), dev: r.dev, metric: r.metric ?? 0 }] : [];
  });
  const best = new Map<string, number>();
  for (const r of all) best.set(r.prefix, Math.min(best.get(r.prefix) ?? Infinity, r.metric));
  const viaUplink = all.filter((r) => r.dev === nic.name && r.metric === best.get(r.prefix));
  const inUseViaUplink = new Set(viaUplink.map((r) => r.prefix));
  const connected = nic.addresses.flatMap((a) => { const c = parseCidr(`${a.address}/${a.prefix}`); return c ? [{ network: networkOf(c), prefix: c.prefix }] : []; });
  // The uplink's own networks are on its link: the kernel's connected route (never among `routed`) is in use for them.
  const onLink = new Set(connected.map(formatCidr));
  const forged = [...new Set(vlans.flatMap((b) => (b.nic ? b.routedInUse ?? [] : [])))]
    .filter((p) => !subnets.has(p) && !inUseViaUplink.has(p) && !onLink.has(p))
    .map((p) => parseCidr(p)!);
  if (forged.length === 0) return [];
  const own = [...connected, ...viaUplink.map((r) => r.cidr)];
  const inside = (a: Cidr, b: Cidr) => a.prefix > b.prefix && contains(b, networkOf(a));
  const allowed = own.filter((c) => forged.some((f) => inside(c, f)));
  const unique = new Map<string, { cidr: Cidr; forged: boolean }>();
  for (const c of allowed) unique.set(formatCidr(c), { cidr: c, forged: false });
  for (const c of forged) if (!unique.has(formatCidr(c))) unique.set(formatCidr(c), { cidr: c, forged: true });
  return [...unique.values()]
    .sort((a, b) => b.cidr.prefix - a.cidr.prefix || Number(a.forged) - Number(b.forged) || a.cidr.network - b.cidr.network)
    .map(({ cidr, forged: f }) => ({ prefix: formatCidr(cidr), forged: f }));
}

/**
 * Each bound VLAN's routed networks (see VlanBinding.routed): the routes through its NIC. One that covers a VLAN's
 * subnet (10.0.0.0/8 via a site router) is kept: VGW-SOURCES checks the VLANs' subnets first.
 */
function withRoutedPrefixes(facts: BindingFacts, bindings: VlanBinding[]): VlanBinding[] {
  if (!facts.routed || facts.routed.length === 0) return bindings;
  const vlanNics = new Set(bindings.flatMap((b) => (b.nic ? [b.nic.name] : [])));
  const all = facts.routed.flatMap((r) => {
    const c = parseCidr(r.prefix);
    return c && c.prefix > 0 ? [{ prefix: formatCidr(c), dev: r.dev, metric: r.metric ?? 0 }] : [];
  });
  // The lowest metric of each prefix's routes, through any NIC (the uplink's too): the route in use.
  const best = new Map<string, number>();
  for (const r of all) best.set(r.prefix, Math.min(best.get(r.prefix) ?? Infinity, r.metric));
  const routes = all.filter((r) => vlanNics.has(r.dev));
  return bindings.map((b) => {
    if (!b.nic) return b;
    const mine = routes.filter((r) => r.dev === b.nic!.name);
    const routed = [...new Set(mine.map((r) => r.prefix))].sort();
    const routedInUse = [...new Set(mine.filter((r) => r.metric === best.get(r.prefix)).map((r) => r.prefix))].sort();
    return routed.length > 0 ? { ...b, routed, routedInUse } : b;
  });
}

/**
 * Why a VLAN found no NIC. A NIC whose address is inside the subnet but on a network of another size is not taken
 * (the gateway address would sit on a network its hosts do not share), but it is named: the Docker network's
 * subnet and the VLAN's differ, which "waiting for a NIC" alone would hide. A /32 is no network: a NIC holding one
 * alone is named with the NICs no VLAN took (withUnclaimedNics), if at all.
 */
type ParsedLink = { readonly link: Link; readonly addresses: ReadonlyArray<{ readonly address: Address; readonly value: number | undefined }> };

function waitingNote(text: string, subnet: Cidr, links: readonly ParsedLink[], owner: (name: string) => string | undefined): string {
  for (const { link: l, addresses } of links) {
    const near = addresses.find(({ address: a, value }) => {
      // A /32 is an address alone (a routed uplink's, a floating address), never a VLAN's network on that NIC: the
      // VLAN is not kept from a NIC by it, and its NIC not yet attached is a plain wait.
      if (a.prefix === 32) return false;
      return value !== undefined && contains(subnet, value);
    })?.address;
    if (!near) continue;
    const held = `${l.name} has ${near.address}/${near.prefix}`;
    if (owner(l.name)) return `waiting: ${held}, inside ${text}, but it is ${owner(l.name)}`;
    if (!ruleSafeNic(l.name)) return `waiting: ${held}, inside ${text}, but ${unsafeNote(l)}`;
    if (near.prefix !== subnet.prefix) {
      return `waiting: ${held}, inside ${text} but on a /${near.prefix} network; `
        + `the VLAN's Docker network and its subnet here must be the same (${text})`;
    }
  }
  return plainWaitNote(text);
}
