/**
 * Builds and removes a lab (see topology.ts) with plain `ip` commands through a CommandRunner.
 *
 * Everything is created inside the lab's own namespaces (`ip -n NS link add …`, veth peers placed straight into
 * their namespace), never in the root namespace and never on the machine's interfaces. `labUpCommands` is the
 * whole build as data, in order; `labUp` runs it and, on any failure, deletes the namespaces it had created
 * before rethrowing. Deleting a namespace deletes its interfaces (and the far end of every veth), so `labDown`
 * is just "delete every `vgwlab-<name>-*` namespace", after stopping whatever still runs inside them.
 */
import type { CommandRunner } from '../exec/runner.js';
import { removeLabRecord } from './record.js';
import { assertLabName, LabError, LabInputError, labPrefix, type LabTopology } from './topology.js';

type Argv = readonly string[];

/** The build, in order: namespaces, the router's sysctls (fail-closed forwarding, ICMP errors unlimited), switch,
 *  clients, uplink, router NICs. */
export function labUpCommands(t: LabTopology): Argv[] {
  const out: Argv[] = [];
  const ip = (ns: string, ...args: string[]) => out.push(['ip', '-n', ns, ...args]);
  for (const ns of t.namespaces) out.push(['ip', 'netns', 'add', ns]);
  for (const ns of t.namespaces) ip(ns, 'link', 'set', 'lo', 'up');
  // A new namespace may inherit ip_forward=1; the product must switch it on itself, after its FORWARD policy.
  out.push(['ip', 'netns', 'exec', t.router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
  // `lab check` tells a reject (an ICMP error) from a drop (nothing), and sends its probes in bursts: the kernel's
  // per-host limit on ICMP errors (six, then one a second) would make the rest of a burst of rejects look dropped.
  out.push(['ip', 'netns', 'exec', t.router, 'sysctl', '-q', '-w', 'net.ipv4.icmp_ratelimit=0']);

  for (const v of t.vlans) {
    ip(t.switch, 'link', 'add', v.bridge, 'type', 'bridge');
    ip(t.switch, 'link', 'set', v.bridge, 'up');
    ip(t.switch, 'link', 'add', v.parent, 'type', 'veth', 'peer', 'name', v.parentPeer);
    ip(t.switch, 'link', 'set', v.parentPeer, 'master', v.bridge);
    ip(t.switch, 'link', 'set', v.parentPeer, 'up');
    ip(t.switch, 'link', 'set', v.parent, 'up');
  }

  for (const v of t.vlans) {
    const c = v.client;
    ip(c.namespace, 'link', 'add', c.interface, 'type', 'veth', 'peer', 'name', c.switchPort, 'netns', t.switch);
    ip(t.switch, 'link', 'set', c.switchPort, 'master', v.bridge);
    ip(t.switch, 'link', 'set', c.switchPort, 'up');
    for (const address of [c.address, ...c.extraAddresses]) ip(c.namespace, 'addr', 'add', `${address}/${v.prefix}`, 'dev', c.interface);
    ip(c.namespace, 'link', 'set', c.interface, 'up');
    ip(c.namespace, 'route', 'add', 'default', 'via', v.gateway);
  }

  // Docker's own network comes first (the container's eth0), then `docker network connect` adds the VLANs.
  const u = t.uplink;
  const mac = (m: string | undefined) => (m === undefined ? [] : ['address', m]);
  ip(t.router, 'link', 'add', u.routerInterface, ...mac(u.routerMac), 'type', 'veth', 'peer', 'name', u.inetInterface, 'netns', t.inet);
  ip(t.router, 'addr', 'add', `${u.routerAddress}/${u.prefix}`, 'dev', u.routerInterface);
  ip(t.router, 'link', 'set', u.routerInterface, 'up');
  ip(t.inet, 'addr', 'add', `${u.inetAddress}/${u.prefix}`, 'dev', u.inetInterface);
  ip(t.inet, 'link', 'set', u.inetInterface, 'up');
  ip(t.inet, 'addr', 'add', `${u.internetHost}/32`, 'dev', 'lo');
  for (const route of u.inetRoutesViaRouter) ip(t.inet, 'route', 'add', route, 'via', u.routerAddress);
  if (u.defaultRoute) ip(t.router, 'route', 'add', 'default', 'via', u.inetAddress);

  // As `docker network connect` does: a macvlan child of the VLAN's parent, made on the host, moved in, renamed.
  for (const id of t.attachOrder) {
    const v = t.vlans.find((x) => x.id === id)!;
    const temp = `m${v.id}`;
    ip(t.switch, 'link', 'add', 'link', v.parent, 'name', temp, ...mac(v.routerMac), 'type', 'macvlan', 'mode', 'bridge');
    ip(t.switch, 'link', 'set', temp, 'netns', t.router, 'name', v.routerInterface);
    ip(t.router, 'addr', 'add', `${v.routerAddress}/${v.prefix}`, 'dev', v.routerInterface);
    ip(t.router, 'link', 'set', v.routerInterface, 'up');
  }
  return out;
}

/** Builds the lab. Fails, changing nothing, when any namespace of this lab exists; on any other failure removes
 *  the namespaces it created, then rethrows. */
export async function labUp(runner: CommandRunner, topology: LabTopology): Promise<void> {
  const existing = await listLabNamespaces(runner, topology.name);
  if (existing.length > 0) {
    throw new LabInputError(`lab ${topology.name} already exists (${existing.join(', ')}); run \`vlan-gateway lab down --name ${topology.name}\` first`);
  }
  const created: string[] = [];
  try {
    for (const argv of labUpCommands(topology)) {
      await runner.run(argv);
      if (argv[1] === 'netns' && argv[2] === 'add') created.push(argv[3]!);
    }
  } catch (error) {
    for (const ns of created.reverse()) await deleteNamespace(runner, ns).catch(() => undefined);
    throw error;
  }
}

/** Removes every namespace of lab `name` (and so every interface in it), and its record (record.ts). Already
 *  gone is success. Returns the namespaces it deleted. */
export async function labDown(runner: CommandRunner, name: string): Promise<string[]> {
  const namespaces = await listLabNamespaces(runner, name);
  const failures: string[] = [];
  for (const ns of namespaces) {
    try {
      await deleteNamespace(runner, ns);
    } catch (error) {
      failures.push(`${ns}: ${(error as Error).message}`);
    }
  }
  if (failures.length > 0) throw new LabError(`lab down ${name}: could not delete\n  ${failures.join('\n  ')}`);
  await removeLabRecord(name);
  return namespaces;
}

/**
 * The addresses the build of `topology` gives its namespaces (each `ip -n NS addr add` of labUpCommands) that they do
 * not hold now, as `192.168.20.50/24 in vgwlab-demo-c20`. A lab built from another config lacks the hosts this one
 * names (`lab check --config`), and its probes failed to bind half-way through the check (EADDRNOTAVAIL).
 */
export async function missingLabAddresses(runner: CommandRunner, topology: LabTopology): Promise<string[]> {
  const held = new Map<string, Set<string>>();
  const missing: string[] = [];
  for (const argv of labUpCommands(topology)) {
    if (argv[1] !== '-n' || argv[3] !== 'addr' || argv[4] !== 'add') continue;
    const [ns, address] = [argv[2]!, argv[5]!];
    let addresses = held.get(ns);
    if (addresses === undefined) {
      const { stdout } = await runner.run(['ip', '-n', ns, '-o', '-4', 'addr', 'show']);
      addresses = new Set([...stdout.matchAll(/\binet (\S+)/g)].map((m) => m[1]!));
      held.set(ns, addresses);
    }
    if (!addresses.has(address)) missing.push(`${address} in ${ns}`);
  }
  return missing;
}

/** The namespaces of lab `name`, from `ip netns list`. */
export async function listLabNamespaces(runner: CommandRunner, name: string): Promise<string[]> {
  assertLabName(name);
  const prefix = labPrefix(name);
  return (await listNamespaces(runner)).filter((ns) => ns.startsWith(prefix));
}

async function listNamespaces(runner: CommandRunner): Promise<string[]> {
  const { stdout } = await runner.run(['ip', 'netns', 'list']);
  // Lines look like "vgwlab-demo-router (id: 3)" or just "vgwlab-demo-router".
  return stdout.split('\n').map((line) => line.trim().split(/\s+/)[0] ?? '').filter((ns) => ns !== '');
}

/** Stops what still runs inside (a namespace with a live process keeps its interfaces), then deletes it. */
async function deleteNamespace(runner: CommandRunner, ns: string): Promise<void> {
  const pids = await runner.run(['ip', 'netns', 'pids', ns], { allowFailure: true });
  const list = pids.exitCode === 0 ? pids.stdout.split(/\s+/).filter((p) => /^\d+$/.test(p)) : [];
  if (list.length > 0) await runner.run(['kill', '-TERM', ...list], { allowFailure: true });
  const result = await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
  if (result.exitCode !== 0 && !/No such file/i.test(result.stderr)) {
    throw new LabError(`ip netns del ${ns} exited ${result.exitCode}: ${result.stderr.trim()}`);
  }
}
