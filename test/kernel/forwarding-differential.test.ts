/**
 * The forwarding policy, differentially: seeded random configs (test/helpers/random-policy.ts) applied one after
 * another in one lab (each apply a transition from the last), real probes between every pair of hosts (ping, TCP
 * and UDP, from and to the addresses rules name, to and from the Internet host, port forwards on the gateway's own
 * addresses), each verdict compared with an oracle written from the README alone (test/helpers/forwarding-oracle.ts):
 * passed, dropped (no answer) or rejected (refused), and for what passes, the source the server saw and where it
 * landed. At the end, the last config applied from nothing must leave the state the transitions left.
 *
 * A slice of a longer run (hundreds of configs, with the same generator and oracle); the seed is fixed, so a
 * failure here is the same failure on every run: the message prints the config and each probe it got wrong.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { inNamespace } from '../../src/exec/runner.js';
import {
  labDown, labUp, mapLimit, planLabTopology, runProbe, runProbeBatch, startAgent, type LabTopology, type RunningAgent,
} from '../../src/lab/index.js';
import { oracleToGateway, oracleVerdict, type OracleAnswer, type OracleGateway, type OracleHost, type Proto, type RawConfig } from '../helpers/forwarding-oracle.js';
import { isRoot, NEEDS_ROOT, uniqueLabName } from '../helpers/lab.js';
import { runMain } from '../helpers/main.js';
import { prng } from '../helpers/prng.js';
import { FORWARD_PORTS, generateConfig, POOL, PORTS, SNAT_TO } from '../helpers/random-policy.js';
import { tearDownAlways } from '../helpers/teardown.js';

const kernel = isRoot() ? test.serial : test.serial.skip;
const runner = new ExecaRunner();
const name = uniqueLabName('f');
let dir: string | undefined;

tearDownAlways('remove the differential lab', async () => {
  if (!isRoot()) return;
  await labDown(runner, name);
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** The configs' seed (chosen for what its configs cover: see the end of the test), and the probes' sample's. */
const CONFIG_SEED = 8;
const PROBE_SEED = 20261129;
const CONFIGS = 5;
const TIMEOUT_MS = 1000;
const INTERNET = '198.51.100.10';
const UPLINK_ADDRESS = '203.0.113.2';
const GATEWAY: OracleGateway = { uplinkAddresses: [UPLINK_ADDRESS, SNAT_TO], ownAddresses: [UPLINK_ADDRESS, SNAT_TO, ...POOL.map((v) => v.gateway)] };

interface Host extends OracleHost {
  readonly namespace: string;
}

interface Probe {
  readonly from: Host;
  readonly to: string;
  readonly proto: Proto;
  readonly port?: number;
  readonly expected: OracleAnswer;
}

interface Seen {
  readonly verdict: 'pass' | 'drop' | 'reject';
  readonly peer?: string;
  readonly local?: string;
  readonly detail: string;
}

/** Every VLAN's client with the addresses rules may name (its own first), and the router's snat address. */
async function buildLab(): Promise<{ topology: LabTopology; hosts: Host[] }> {
  const base: RawConfig = { vlans: POOL.map((v) => ({ name: v.names[0]!, id: v.id, subnet: v.subnet, gateway: v.gateway })) };
  const path = join(dir!, 'base.yaml');
  await writeFile(path, JSON.stringify(base));
  const planned = planLabTopology((await loadConfig(path)).config, name);
  const topology: LabTopology = {
    ...planned,
    vlans: planned.vlans.map((v) => ({ ...v, client: { ...v.client, extraAddresses: POOL.find((p) => p.id === v.id)!.hosts.slice(1) } })),
  };
  await labUp(runner, topology);
  await runner.run(['ip', '-n', topology.router, 'addr', 'add', `${SNAT_TO}/24`, 'dev', topology.uplink.routerInterface]);
  // Probes come in bursts: the kernel's ICMP error rate limit would make a reject look like a drop. The per-host
  // limit is the namespace's own; the global one (msgs_per_sec, burst) became per-namespace only in recent kernels,
  // and an older one has no such file in a namespace: there it stays at 1,000/s, which the retry of a silent probe covers.
  await runner.run(['ip', 'netns', 'exec', topology.router, 'sysctl', '-q', '-w', 'net.ipv4.icmp_ratelimit=0']);
  await runner.run(['ip', 'netns', 'exec', topology.router, 'sysctl', '-q', '-w', 'net.ipv4.icmp_msgs_per_sec=100000', 'net.ipv4.icmp_msgs_burst=100000'], { allowFailure: true });
  const hosts: Host[] = [{ address: INTERNET, uplinkSide: true, namespace: topology.inet }];
  for (const v of topology.vlans) {
    for (const address of POOL.find((p) => p.id === v.id)!.hosts) hosts.push({ address, uplinkSide: false, namespace: v.client.namespace });
  }
  return { topology, hosts };
}

/** Each pair of hosts in different zones: a sample of ping and of PORTS over TCP and UDP (between the zones' own
 *  hosts: ping, every TCP port and half the UDP ones); every forward port (and some no forward takes) from the
 *  Internet host to the gateway's uplink address, and some to its snat address; and from each VLAN's own host, a
 *  forward port of the uplink address (no NAT reflection). */
function planProbes(config: RawConfig, hosts: readonly Host[], random: () => number): Probe[] {
  const probes: Probe[] = [];
  const own = new Set(POOL.map((v) => v.hosts[0]));
  for (const from of hosts) {
    for (const to of hosts) {
      if (from.namespace === to.namespace) continue;
      const owned = (from.uplinkSide || own.has(from.address)) && (to.uplinkSide || own.has(to.address));
      const share = { tcp: owned ? 1 : 0.15, udp: owned ? 0.5 : 0.1 };
      const sample = (proto: 'tcp' | 'udp') => PORTS.filter(() => random() < share[proto]).map((port) => ({ proto, port }));
      const ping = owned || random() < 0.4 ? [{ proto: 'icmp' as const }] : [];
      for (const w of [...ping, ...sample('tcp'), ...sample('udp')]) {
        const port = 'port' in w ? w.port : undefined;
        probes.push({ from, to: to.address, proto: w.proto, ...(port === undefined ? {} : { port }), expected: oracleVerdict(config, GATEWAY, from, to, w.proto, port) });
      }
    }
  }
  const internet = hosts[0]!;
  for (const target of [UPLINK_ADDRESS, SNAT_TO]) {
    for (const proto of ['tcp', 'udp'] as const) {
      for (const port of [...FORWARD_PORTS, 6004, 6009, 6013]) {
        if (target === SNAT_TO && random() < 0.7) continue;
        probes.push({ from: internet, to: target, proto, port, expected: oracleToGateway(config, GATEWAY, internet, target, proto, port) });
      }
    }
  }
  const forward = config.portForwards?.[0];
  if (forward !== undefined) {
    const port = Number(String(forward.port).split('-')[0]);
    const proto = forward.proto ?? 'tcp';
    for (const from of hosts.filter((h) => !h.uplinkSide && own.has(h.address))) {
      probes.push({ from, to: UPLINK_ADDRESS, proto, port, expected: oracleToGateway(config, GATEWAY, from, UPLINK_ADDRESS, proto, port) });
    }
  }
  return probes;
}

async function send(probes: readonly Probe[], timeoutMs: number): Promise<Seen[]> {
  const seen = new Array<Seen>(probes.length);
  const verdict = (passed: boolean, detail: string) => (passed ? 'pass' : /no answer/.test(detail) ? 'drop' : 'reject') as Seen['verdict'];
  const bySource = new Map<string, number[]>();
  probes.forEach((p, i) => {
    if (p.proto !== 'icmp') bySource.set(p.from.namespace, [...(bySource.get(p.from.namespace) ?? []), i]);
  });
  await Promise.all([
    mapLimit(probes.flatMap((p, i) => (p.proto === 'icmp' ? [i] : [])), 32, async (i) => {
      const p = probes[i]!;
      const outcome = await runProbe(runner, { namespace: p.from.namespace, kind: 'ping', target: p.to, localAddress: p.from.address, timeoutMs });
      seen[i] = { verdict: verdict(outcome.actual === 'pass', outcome.detail), detail: outcome.detail };
    }),
    ...[...bySource].map(async ([namespace, indexes]) => {
      const batch = indexes.map((i) => ({ kind: probes[i]!.proto as 'tcp' | 'udp', target: probes[i]!.to, port: probes[i]!.port!, localAddress: probes[i]!.from.address }));
      const outcomes = await runProbeBatch(runner, namespace, batch, { timeoutMs, limit: 64 });
      indexes.forEach((i, k) => {
        const o = outcomes[k]!;
        seen[i] = { verdict: verdict(o.actual === 'pass', o.detail), ...(o.reply ? { peer: o.reply.peer, local: o.reply.local } : {}), detail: o.detail };
      });
    }),
  ]);
  return seen;
}

function agrees(expected: OracleAnswer, seen: Seen): boolean {
  if (expected.verdict === 'blocked') return seen.verdict !== 'pass';
  if (expected.verdict !== seen.verdict) return false;
  return seen.verdict !== 'pass' || expected.peer === undefined || (seen.peer === expected.peer && seen.local === expected.local);
}

/** Our chains and sets, the router's addresses, routes and ip_forward, without counters: what an apply leaves. */
async function routerState(router: string): Promise<string> {
  const ns = inNamespace(runner, router);
  // Per table and chain, in rule order (iptables-save lists chains in an order of its own).
  const chains = new Map<string, string[]>();
  let table = '';
  for (const line of (await ns.run(['iptables-save'])).stdout.split('\n')) {
    if (line.startsWith('*')) table = line;
    const declared = /^:(VGW-\S+)/.exec(line)?.[1];
    if (declared !== undefined && !chains.has(`${table} ${declared}`)) chains.set(`${table} ${declared}`, []);
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (rule && (rule[1]!.startsWith('VGW-') || rule[2]!.includes('vgw:'))) {
      const key = `${table} ${rule[1]}`;
      chains.set(key, [...(chains.get(key) ?? []), rule[2]!.replace(/\[\d+:\d+\]/g, '')]);
    }
  }
  const rules = [...chains].sort(([a], [b]) => a.localeCompare(b)).flatMap(([chain, lines]) => [chain, ...lines.map((l) => `  ${l}`)]);
  const sets = (await ns.run(['ipset', 'save'])).stdout.split('\n')
    .filter((l) => l.includes('VGW-')).map((l) => l.replace(/ packets \d+ bytes \d+/, '').replace(/ initval 0x[0-9a-f]+/, '')).sort();
  const addresses = (await ns.run(['ip', '-o', '-4', 'addr'])).stdout.split('\n').map((l) => l.replace(/^\d+: /, '').replace(/\s+valid_lft.*$/, '')).filter(Boolean).sort();
  const routes = (await ns.run(['ip', 'route'])).stdout.trim();
  const forwarding = (await ns.run(['sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim();
  return [...rules, ...sets, ...addresses, routes, `ip_forward=${forwarding}`].join('\n');
}

kernel(`seeded random policies: real packets through the gateway agree with the README's semantics, config after config${NEEDS_ROOT}`, async (t) => {
  t.timeout(180_000);
  dir = await mkdtemp(join(tmpdir(), 'vgw-differential-'));
  const { topology, hosts } = await buildLab();
  const random = prng(CONFIG_SEED);
  const sampling = prng(PROBE_SEED);
  let names: ReadonlyMap<number, string> | undefined;
  const covered = new Set<string>();
  let path = '';
  for (let n = 0; n < CONFIGS; n++) {
    const began = Date.now();
    const config = generateConfig(random, names);
    names = new Map(config.vlans.map((v) => [v.id, v.name]));
    path = join(dir, `${n}.yaml`);
    await writeFile(path, `${JSON.stringify(config, null, 1)}\n`);
    const applied = await runMain('apply', '--netns', topology.router, '--config', path);
    if (applied.code !== 0) return t.fail(`config ${n} did not apply (exit ${applied.code}): ${applied.stderr}\n${JSON.stringify(config)}`);
    // Each config's probes are new connections, whatever the last config let through.
    await runner.run(['ip', 'netns', 'exec', topology.router, 'conntrack', '-F'], { allowFailure: true });

    const probes = planProbes(config, hosts, sampling);
    const agents: RunningAgent[] = [];
    let seen: Seen[];
    try {
      const ports = [...PORTS, ...FORWARD_PORTS];
      const sockets = (addresses: readonly string[], list: readonly number[]) => [
        ...list.map((port) => ({ proto: 'tcp' as const, address: '0.0.0.0', port })),
        ...addresses.flatMap((address) => list.map((port) => ({ proto: 'udp' as const, address, port }))),
      ];
      const started = await Promise.allSettled([
        startAgent(runner, topology.inet, sockets([INTERNET], PORTS), 120),
        ...topology.vlans.map((v) => startAgent(runner, v.client.namespace, sockets(POOL.find((p) => p.id === v.id)!.hosts, ports), 120)),
      ]);
      for (const s of started) if (s.status === 'fulfilled') agents.push(s.value);
      const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
      seen = await send(probes, TIMEOUT_MS);
      // An answer expected and none came: tried again alone, with time to spare. A lost first SYN (TCP tries again
      // after 1 s, the probe's own timeout) or an agent starved on a busy machine is not the policy's verdict.
      const retry = probes.flatMap((p, i) => (!agrees(p.expected, seen[i]!) && seen[i]!.verdict === 'drop' && p.expected.verdict !== 'drop' ? [i] : []));
      const again = await send(retry.map((i) => probes[i]!), 3000);
      retry.forEach((i, k) => { seen[i] = again[k]!; });
    } finally {
      await Promise.allSettled(agents.map((a) => a.stop()));
    }

    const wrong = probes.flatMap((p, i) => {
      const s = seen[i]!;
      if (agrees(p.expected, s)) return [];
      const what = `${p.from.address} → ${p.to} ${p.proto === 'icmp' ? 'ping' : `${p.proto}/${p.port}`}`;
      const expected = `${p.expected.verdict}${p.expected.peer ? ` as ${p.expected.peer} at ${p.expected.local}` : ''} (${p.expected.why})`;
      return [`${what}: expected ${expected}, got ${s.verdict}${s.peer ? ` as ${s.peer} at ${s.local}` : ''} (${s.detail})`];
    });
    t.deepEqual(wrong, [], `config ${n}:\n${JSON.stringify(config)}`);
    t.log(`config ${n}: ${config.vlans.length} VLANs, ${config.forwarding?.rules?.length ?? 0} rules, ${config.portForwards?.length ?? 0} forwards: ${probes.length} probes (${Date.now() - began} ms)`);

    for (const p of probes) covered.add(p.expected.verdict);
    for (const rule of config.forwarding?.rules ?? []) {
      covered.add(`rule ${rule.action}`);
      covered.add(`proto ${rule.proto ?? 'omitted'}`);
      if (rule.ports !== undefined) covered.add('ports');
      if (/[./]/.test(rule.from) || /[./]/.test(rule.to)) covered.add('address');
    }
    covered.add(`default ${config.forwarding?.default ?? 'accept'}`);
    covered.add(`nat ${config.uplink?.nat ?? 'masquerade'}`);
    if (config.vlans.length < POOL.length) covered.add('a VLAN left out');
    if (config.vlans.some((v) => v.masquerade === false)) covered.add('no masquerade');
    if ((config.portForwards ?? []).length > 0) covered.add('port forward');
  }
  // What the seed's configs try (pass, drop, reject and blocked are the oracle's verdicts), so that a change of the
  // generator that loses some of it is seen.
  t.deepEqual([...covered].sort(), [
    'a VLAN left out', 'address', 'blocked', 'default accept', 'default drop', 'drop', 'nat masquerade', 'nat none', 'nat snat', 'no masquerade',
    'pass', 'port forward', 'ports', 'proto all', 'proto icmp', 'proto omitted', 'proto tcp', 'proto udp', 'reject', 'rule accept', 'rule drop',
    'rule reject',
  ]);

  // The last config, applied from nothing, leaves what the transitions left.
  const transitioned = await routerState(topology.router);
  t.is((await runMain('down', '--netns', topology.router, '--config', path)).code, 0);
  t.is((await runMain('apply', '--netns', topology.router, '--config', path)).code, 0);
  t.is(await routerState(topology.router), transitioned);
});
