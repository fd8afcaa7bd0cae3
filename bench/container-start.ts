/**
 * The supervisor's start as a container makes it (beside supervisor-bench.ts, whose namespaces start with
 * ip_forward=0, so the gateway turns it on itself): Docker starts the namespace with ip_forward=1 (`--sysctl`) and
 * its embedded DNS rule in the nat table (which has conntrack track what the namespace forwards), and after a
 * `docker restart` the VLAN hosts may still send through the gateway's MAC. The start pass that creates VGW-FORWARD
 * then, once the tables are written, lists conntrack and deletes every un-NATed flow between two hosts, one
 * `conntrack -D` per ordered pair of hosts (Plan.unpoliced, clearUnpolicedFlows).
 *
 * At the 2-VLAN shape of the ready figures, four cases interleaved in each round, each in fresh namespaces:
 *   off      ip_forward=0 at start, NICs only (as supervisor-bench.ts's 2-VLAN start);
 *   on       ip_forward=1 and Docker's DNS rule, NICs only: nothing to clear, one `conntrack -L`;
 *   on, N    the same, with hosts behind each NIC (a bridge per VLAN, in a namespace of its own) whose ARP cache
 *            holds the gateway address at the NIC's MAC, as a restart leaves it: each host sends a UDP flow from a
 *            fixed port and a ping to each host of the other VLAN, from before the start until after it; N is the
 *            ordered pairs (one delete each), with two entries each. 1 + 1 hosts: 2 pairs; 2 + 5 hosts: 20 pairs.
 * The gateway runs at --log-level info (its log read for the start pass's record and the clear's line).
 */
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump as stringify } from 'js-yaml';
import type { CommandRunner } from '../src/exec/runner.js';
import { gatewayOf, generateConfig, nicBatch, nicName, type ConfigShape } from './configs.js';
import { stats, type Stats } from './measure.js';
import type { Namespaces } from './netns.js';
import { freePort, Gateway, imageBundle } from './supervisor-bench.js';

export interface ContainerCase {
  readonly label: string;
  readonly ipForward: 0 | 1;
  /** Hosts in VLAN 1 and in VLAN 2; each sends to every host of the other VLAN. */
  readonly hosts: readonly [number, number];
}

const CASES: readonly ContainerCase[] = [
  { label: 'off', ipForward: 0, hosts: [0, 0] },
  { label: 'on', ipForward: 1, hosts: [0, 0] },
  { label: 'on-2', ipForward: 1, hosts: [1, 1] },
  { label: 'on-20', ipForward: 1, hosts: [2, 5] },
];

/** Ordered pairs of hosts with flows through the router (each is one `conntrack -D` of the clear). */
export const pairsOf = (c: ContainerCase) => 2 * c.hosts[0] * c.hosts[1];

interface ContainerStartRow {
  readonly case: ContainerCase;
  /** Entries the router's conntrack held between two hosts just before the start (median). */
  readonly tracked: number;
  /** spawn → first /readyz 200. */
  readonly ready: Stats;
  /** The start pass, as its log record says (durationMs): it ends after the clear. */
  readonly pass: Stats;
  /** /readyz seen 200 → the 'cleared N flows' line's time (ms, to the log's millisecond); none when nothing was cleared. */
  readonly clear: Stats | undefined;
  /** N of the 'cleared N flows' line (0 without one). */
  readonly cleared: Stats;
}

export interface ContainerStartResult {
  readonly vlans: number;
  readonly rows: readonly ContainerStartRow[];
}

const SHAPE: ConfigShape = { vlans: 2, partners: 1, rulesPerPair: 2, uplink: true };
const UDP_PORT = 7000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hostAddress = (vlan: number, j: number) => gatewayOf(vlan).replace(/\.1$/, `.${10 + j}`);

/** Docker's embedded DNS rule, as in every container on a user-defined network (it registers conntrack in the namespace). */
const DOCKER_DNS = [
  '*nat', ':DOCKER_OUTPUT - [0:0]', '-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT',
  '-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp --dport 53 -j DNAT --to-destination 127.0.0.11:53', 'COMMIT', '',
].join('\n');

/**
 * A UDP flow from one fixed port to each target (a connected socket each), a datagram every 200 ms, no process per
 * datagram (`read -t` on a pipe nobody writes is the sleep).
 */
function udpSender(targets: readonly string[]): string {
  const open = targets.map((t, i) => `${3 + i}>/dev/udp/${t}/${UDP_PORT}`).join(' ');
  const send = targets.map((_t, i) => `echo x >&${3 + i};`).join(' ');
  return `exec ${open}; exec 9<> <(:); while :; do ${send} read -t 0.2 -u 9; done 2>/dev/null`;
}

/** Entries of the router's conntrack whose original source and destination are both among `hosts`. */
async function trackedBetween(runner: CommandRunner, router: string, hosts: ReadonlySet<string>): Promise<number> {
  const { stdout } = await runner.run(['ip', 'netns', 'exec', router, 'conntrack', '-L'], { allowFailure: true });
  return stdout.split('\n').filter((line) => {
    const m = /\bsrc=(\S+) dst=(\S+)/.exec(line);
    return m !== null && hosts.has(m[1]!) && hosts.has(m[2]!);
  }).length;
}

/**
 * Builds one case's namespaces; resolves with the router namespace and the entries tracked between hosts once
 * every flow is (two per ordered pair). Each namespace is the run's (Namespaces): removing it stops its processes.
 */
async function build(runner: CommandRunner, namespaces: Namespaces, c: ContainerCase, run: number, made: string[]): Promise<{ router: string; tracked: number }> {
  const router = await namespaces.create(`cs-${c.label}-${run}-`, c.ipForward);
  made.push(router);
  if (c.ipForward === 1) await runner.run(['ip', 'netns', 'exec', router, 'iptables-nft-restore', '--noflush'], { input: DOCKER_DNS });
  if (pairsOf(c) === 0) {
    await namespaces.batch(router, nicBatch(SHAPE));
    return { router, tracked: 0 };
  }
  const switches = new Map<number, string>();
  const hosts = new Map<number, string[]>(); // VLAN → host namespaces
  for (const vlan of [1, 2]) {
    const sw = await namespaces.create(`cs-${c.label}-${run}-sw${vlan}-`);
    made.push(sw);
    switches.set(vlan, sw);
    await namespaces.batch(sw, 'link add br0 type bridge\nlink set br0 up\n');
    const list: string[] = [];
    for (let j = 0; j < c.hosts[vlan - 1]!; j++) {
      const host = await namespaces.create(`cs-${c.label}-${run}-h${vlan}${j}-`);
      made.push(host);
      list.push(host);
      await namespaces.batch(sw, `link add h${j} type veth peer name eth0 netns ${host}\nlink set h${j} master br0\nlink set h${j} up\n`);
      await namespaces.batch(host, `addr add ${hostAddress(vlan, j)}/24 dev eth0\nlink set eth0 up\nroute add default via ${gatewayOf(vlan)}\n`);
    }
    hosts.set(vlan, list);
  }
  // What Docker attaches: the router's NICs (the uplink's peer stays in the router namespace, as elsewhere).
  await namespaces.batch(router, nicBatch(SHAPE, switches));
  for (const [vlan, sw] of switches) {
    await namespaces.batch(sw, 'link set c0 master br0\nlink set c0 up\n');
    const mac = (await runner.run(['ip', 'netns', 'exec', router, 'cat', `/sys/class/net/${nicName(vlan)}/address`])).stdout.trim();
    // The ARP cache a restart leaves the hosts: their gateway address at the NIC's MAC (the address is not there yet).
    for (const host of hosts.get(vlan)!) await namespaces.batch(host, `neigh replace ${gatewayOf(vlan)} lladdr ${mac} dev eth0 nud permanent\n`);
  }
  const all = new Set<string>();
  for (const vlan of [1, 2]) {
    const other = vlan === 1 ? 2 : 1;
    const targets = hosts.get(other)!.map((_h, j) => hostAddress(other, j));
    hosts.get(vlan)!.forEach((host, j) => {
      all.add(hostAddress(vlan, j));
      namespaces.start(host, ['bash', '-c', udpSender(targets)]);
      for (const target of targets) namespaces.start(host, ['ping', '-q', '-i', '0.2', target]);
    });
  }
  const want = 2 * pairsOf(c);
  for (const started = performance.now(); ;) {
    const tracked = await trackedBetween(runner, router, all);
    if (tracked >= want) return { router, tracked };
    if (performance.now() - started > 5000) throw new Error(`${c.label}: the router tracks ${tracked} flows between the hosts, not ${want}, 5 s after they started`);
    await sleep(100);
  }
}

export async function containerStartBench(runner: CommandRunner, namespaces: Namespaces, log: (s: string) => void, rounds = 5): Promise<ContainerStartResult> {
  const bundle = await imageBundle(runner);
  const dir = await mkdtemp(join(tmpdir(), 'vgwbench-'));
  // Also when a signal ends the run (run.ts exits from its handler, past this function's finally).
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeDir);
  const gateway = new Gateway(await freePort(), bundle, true);
  try {
    const configPath = join(dir, 'gateway.yaml');
    await writeFile(configPath, stringify(generateConfig(SHAPE)));
    const samples = new Map(CASES.map((c) => [c, { tracked: [] as number[], ready: [] as number[], pass: [] as number[], clear: [] as number[], cleared: [] as number[] }]));
    for (let run = 0; run < rounds; run++) {
      for (const c of CASES) {
        const made: string[] = [];
        try {
          const { router, tracked } = await build(runner, namespaces, c, run, made);
          const s = samples.get(c)!;
          s.tracked.push(tracked);
          s.ready.push(await gateway.start(router, configPath));
          const record = await gateway.logLine('the start pass\'s record', (l) => l.trigger === 'start' && /^reconciled/.test(l.msg));
          s.pass.push(Number(record.durationMs));
          const said = gateway.logs.find((l) => /^cleared \d+ flows? forwarded before the policy/.test(l.msg));
          s.cleared.push(said ? Number(said.cleared) : 0);
          if (said) s.clear.push(Date.parse(said.time) - gateway.readyAt);
          if (pairsOf(c) > 0 && !said) throw new Error(`${c.label}: the start pass cleared nothing, with ${tracked} flows between the hosts tracked before it`);
        } finally {
          await gateway.stop();
          for (const ns of made.reverse()) await namespaces.remove(ns);
        }
      }
    }
    const rows = CASES.map((c): ContainerStartRow => {
      const s = samples.get(c)!;
      log(`bench: container-like start, ip_forward=${c.ipForward}, ${pairsOf(c)} pairs: ready ${s.ready.map((v) => v.toFixed(0)).join(', ')} ms; `
        + `pass ${s.pass.join(', ')} ms; cleared ${s.cleared.join(', ')}; ready seen → cleared logged ${s.clear.join(', ') || '-'} ms`);
      return {
        case: c, tracked: stats(s.tracked).median, ready: stats(s.ready), pass: stats(s.pass),
        clear: s.clear.length > 0 ? stats(s.clear) : undefined, cleared: stats(s.cleared),
      };
    });
    return { vlans: SHAPE.vlans, rows };
  } finally {
    await gateway.stop();
    await rm(dir, { recursive: true, force: true });
    process.off('exit', removeDir);
  }
}
