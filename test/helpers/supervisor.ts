/**
 * `vlan-gateway run` as a child process, for the kernel-tier supervisor tests: a private copy of the bundle (the
 * artifact users run), a free loopback port, polling of /readyz, the JSON log lines it prints on stdout, parsed
 * /metrics and /status, and a teardown that always kills it (and whatever it started) even when a test fails.
 *
 * Why a private copy of dist/ (the launcher vlan-gateway.mjs, the bundle cli.cjs, its code cache): several test
 * files (and other tooling, e.g. an image build) may run `npm run build` at the same time, and the build rewrites
 * dist/; a gateway started while it is half written would fail for a reason that has nothing to do with the
 * product. The builds are serialised with flock(1), and each test file runs its own copy, laid out like an
 * installed package (rules/, examples/ and package.json beside dist/) so that the product finds its files exactly
 * as it does when installed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestFn } from 'ava';
import { execa } from 'execa';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import { labDown, labUp, planLabTopology, type LabTopology } from '../../src/lab/index.js';
import { isRoot, uniqueLabName } from './lab.js';
import { tearDownAlways } from './teardown.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const runner = new ExecaRunner();

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---- the bundle: bundle.ts (no ava there: it is run, and interrupted, outside a test file too) --------------------

import { prepareBundle, type Bundle } from './bundle.js';

export { besideDist, prepareBundle, type Bundle } from './bundle.js';

// ---- ports --------------------------------------------------------------------------------------------------------

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

// ---- metrics ------------------------------------------------------------------------------------------------------

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** The Prometheus text format, samples only (comments and blank lines skipped). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!m) throw new Error(`unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const raw = m[3]!;
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    samples.push({ name: m[1]!, labels, value });
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels` (0 when there is none: a counter not yet
 *  incremented has no series). */
export function metricValue(samples: readonly Sample[], name: string, labels: Readonly<Record<string, string>> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** The samples named `name` whose labels include `labels`. */
export function series(samples: readonly Sample[], name: string, labels: Readonly<Record<string, string>> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

// ---- polling ------------------------------------------------------------------------------------------------------

/** Polls `probe` until it returns something other than undefined/false; returns it and the time it took. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs: number,
  intervalMs = 25,
): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const deadline = started + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return { value, ms: performance.now() - started };
    } catch (error) {
      lastError = error;
    }
    if (performance.now() > deadline) {
      const why = lastError ? ` (last error: ${(lastError as Error).message ?? String(lastError)})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

// ---- the gateway process ------------------------------------------------------------------------------------------

export interface LogLine {
  readonly level: number;
  readonly time: string;
  readonly msg: string;
  readonly [key: string]: unknown;
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** performance.now() when the exit was seen. */
  readonly at: number;
}

export interface GatewayOptions {
  readonly bundle: string;
  readonly netns: string;
  readonly config: string;
  readonly schedule?: string;
  readonly statsIntervalMs?: number;
  readonly logLevel?: string;
  readonly extraArgs?: readonly string[];
  readonly port?: number;
  /**
   * Run in a private mount namespace in which `config` is a bind mount of this file, as a file mounted on its
   * own into a container (`-v ./gateway.yaml:/etc/vlan-gateway/gateway.yaml`) is. The machine's mounts are not
   * touched; the namespace goes with the process.
   */
  readonly mountConfigFrom?: string;
  /** Added to the environment (the tests' own sets VLAN_GATEWAY_PLAN_CACHE=off; a test may give a directory). */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Run inside `netns` (`ip netns exec`), as a container's own process does, without --netns or --listen: the
   * endpoints listen where the config's http.listen says, in that namespace (`port` and the helpers that ask it
   * do not reach them).
   */
  readonly inside?: boolean;
}

const live = new Set<GatewayProcess>();

export class GatewayProcess {
  readonly logs: LogLine[] = [];
  /** stdout lines that are not JSON (there should be none). */
  readonly otherOutput: string[] = [];
  stderr = '';
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  /** Set by waitReady: how long, of the time to ready, the kernel kept the gateway's main thread runnable but off
   *  every CPU (waiting for one: the machine was busy); undefined where /proc/PID/schedstat cannot be read. */
  runQueueWaitBeforeReadyMs: number | undefined;

  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    /** performance.now() just before the spawn. */
    readonly spawnedAt: number,
  ) {
    let buffer = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.trim() === '') continue;
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          this.otherOutput.push(line);
        }
      }
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal, at: performance.now() };
        live.delete(this);
        resolve(this.exit);
      });
    });
  }

  /** Spawns `node BUNDLE run --netns … --listen 127.0.0.1:<free port> …` (or, `inside`, `ip netns exec … node BUNDLE run …`) in its own process group. */
  static async start(options: GatewayOptions): Promise<GatewayProcess> {
    const port = options.port ?? await freePort();
    const argv = [
      options.bundle, 'run', '--config', options.config,
      ...(options.inside ? [] : ['--netns', options.netns, '--listen', `127.0.0.1:${port}`]),
      ...(options.schedule ? ['--schedule', options.schedule] : []),
      ...(options.statsIntervalMs ? ['--stats-interval', String(options.statsIntervalMs)] : []),
      '--log-level', options.logLevel ?? 'debug',
      ...(options.extraArgs ?? []),
    ];
    const command = options.mountConfigFrom
      ? ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec "$@"', 'sh',
        options.mountConfigFrom, options.config, process.execPath, ...argv]
      : options.inside ? ['ip', 'netns', 'exec', options.netns, process.execPath, ...argv] : [process.execPath, ...argv];
    const spawnedAt = performance.now();
    const child = spawn(command[0]!, command.slice(1), {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: teardown kills whatever it started too
      env: { ...process.env, LC_ALL: 'C', ...options.env },
    });
    const gateway = new GatewayProcess(child, port, spawnedAt);
    live.add(gateway);
    return gateway;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async get(path: string): Promise<{ status: number; body: string }> {
    const response = await fetch(`${this.url}${path}`, { signal: AbortSignal.timeout(5000) });
    return { status: response.status, body: await response.text() };
  }

  /** Polls /readyz (every 5 ms) until 200; returns the time since the spawn (and records runQueueWaitBeforeReadyMs).
   *  Fails fast if the process exits. */
  async waitReady(timeoutMs = 15_000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.exit) throw new Error(`gateway exited (${this.exit.code ?? this.exit.signal}) before ready: ${this.stderr.trim()}`);
      // Read before each request: the one before the request that finds it ready is at most one poll past ready.
      const waited = this.runQueueWaitMs();
      try {
        const response = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
        await response.arrayBuffer();
        if (response.status === 200) {
          this.runQueueWaitBeforeReadyMs = waited;
          return performance.now() - this.spawnedAt;
        }
      } catch {
        // not listening yet
      }
      if (performance.now() > deadline) throw new Error(`gateway not ready after ${timeoutMs} ms; stderr: ${this.stderr.trim()}\n${this.describeLogs()}`);
      await sleep(5);
    }
  }

  /** The time the gateway's main thread has spent runnable but waiting for a CPU since it started (the second field
   *  of /proc/PID/schedstat, in ns); undefined where the kernel does not keep it. Its children are not counted. */
  runQueueWaitMs(): number | undefined {
    try {
      const waitedNs = Number(readFileSync(`/proc/${this.pid}/schedstat`, 'utf8').trim().split(' ')[1]);
      return Number.isFinite(waitedNs) ? waitedNs / 1e6 : undefined;
    } catch {
      return undefined;
    }
  }

  async metricsText(): Promise<string> {
    const { status, body } = await this.get('/metrics');
    if (status !== 200) throw new Error(`/metrics answered ${status}: ${body}`);
    return body;
  }

  async metrics(): Promise<Sample[]> {
    return parseMetrics(await this.metricsText());
  }

  async metric(name: string, labels: Readonly<Record<string, string>> = {}): Promise<number> {
    return metricValue(await this.metrics(), name, labels);
  }

  async status(): Promise<StatusDocument> {
    const { status, body } = await this.get('/status');
    if (status !== 200) throw new Error(`/status answered ${status}: ${body}`);
    return JSON.parse(body) as StatusDocument;
  }

  /** Waits for a log line (already printed or still to come) that `match` accepts. */
  async waitForLog(what: string, match: (line: LogLine) => boolean, timeoutMs = 10_000, from = 0): Promise<LogLine> {
    try {
      const { value } = await waitFor(what, async () => this.logs.slice(from).find(match), timeoutMs, 20);
      return value;
    } catch (error) {
      throw new Error(`${(error as Error).message}; the gateway's last log lines:\n${this.describeLogs()}`);
    }
  }

  /**
   * Waits until the reloads are idle: the last read of the config (/status's reload.reads) has logged what came of it,
   * and none began for `quietMs` (a read's second look, asked for by files that moved under it, begins within
   * milliseconds of its line). Returns the number of reads so far: a write after this is the next read's doing alone.
   */
  async reloadsIdle(quietMs = 500, timeoutMs = 10_000): Promise<number> {
    const { value } = await waitFor('the reloads idle', async () => {
      const { reads } = (await this.status()).reload;
      if (reads > 0 && !this.logs.some((l) => l.read === reads)) return undefined;
      await sleep(quietMs);
      return (await this.status()).reload.reads === reads ? reads : undefined;
    }, timeoutMs, 20);
    return value;
  }

  /**
   * The number of a read of the config (for a reload) that began after `since` (a Date.now() taken once a write ended):
   * one /status dates after it, which read what was written. Its log lines carry that number (`read`): a line of an
   * earlier read (an in-place write's second look at the files) is never taken for the write's.
   */
  async readAfter(since: number, timeoutMs = 10_000): Promise<number> {
    const { value } = await waitFor(`a read of the config begun after ${new Date(since).toISOString()}`, async () => {
      const { reads, lastReadAt } = (await this.status()).reload;
      return lastReadAt !== null && Date.parse(lastReadAt) > since ? reads : undefined;
    }, timeoutMs, 20);
    return value;
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Sends `signal` to the gateway process alone (as Docker/tini does to PID 1's child) and waits for it to exit;
   *  SIGKILLs its process group when it has not exited after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<Exit & { ms: number }> {
    if (this.exit) return { ...this.exit, ms: 0 };
    const sent = performance.now();
    this.child.kill(signal);
    const timer = setTimeout(() => this.killGroup(), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return { ...exit, ms: exit.at - sent };
  }

  /** SIGKILL to the whole process group (the gateway and anything it started). */
  killGroup(): void {
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  /** The processes the gateway started (children, grandchildren, …), by `ps`. */
  async descendants(): Promise<Array<{ pid: number; cmd: string }>> {
    const { stdout } = await execa('ps', ['-e', '-o', 'pid=,ppid=,args=']);
    const rows = stdout.split('\n').map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l)).filter((m) => m !== null)
      .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), cmd: m[3]! }));
    const out: Array<{ pid: number; cmd: string }> = [];
    const parents = [this.pid];
    while (parents.length > 0) {
      const parent = parents.pop()!;
      for (const row of rows.filter((r) => r.ppid === parent)) {
        out.push({ pid: row.pid, cmd: row.cmd });
        parents.push(row.pid);
      }
    }
    return out;
  }

  /** The last log lines, for a failing assertion's message. */
  describeLogs(last = 20): string {
    return this.logs.slice(-last).map((l) => JSON.stringify(l)).join('\n');
  }
}

/** Kills every gateway this process started that is still running (call from test.after.always). */
export async function killAllGateways(): Promise<void> {
  const all = [...live];
  for (const gateway of all) gateway.killGroup();
  await Promise.all(all.map((g) => Promise.race([g.exited, sleep(3000)])));
}

/** A test file's teardown: every gateway it started, its lab, its scratch files and its copy of the bundle. */
async function tearDown(lab: string, scratch: string | undefined, bundle: { remove(): Promise<void> } | undefined): Promise<void> {
  await killAllGateways();
  await labDown(runner, lab);
  if (scratch) await rm(scratch, { recursive: true, force: true });
  await bundle?.remove();
}

// A last resort should the test process die without its after.always hooks: no gateway outlives its test file.
process.once('exit', () => {
  for (const gateway of live) gateway.killGroup();
});

/** Whether a process is still alive (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---- /status ------------------------------------------------------------------------------------------------------

interface StatusVlan {
  readonly name: string;
  readonly id: number;
  readonly subnet: string;
  readonly gateway: string;
  readonly interface: string | null;
  readonly addresses: readonly string[];
  readonly state: 'up' | 'waiting' | 'unknown';
  /** Another device answers ARP for the VLAN's gateway address too: its MAC, and since when. */
  readonly conflict?: { readonly mac: string; readonly since: string };
}

export interface StatusDocument {
  readonly version: string;
  readonly config: { readonly path: string; readonly hash: string };
  readonly backend: 'nft' | 'legacy' | null;
  readonly ready: boolean;
  readonly healthy: boolean;
  readonly uplink: { readonly interface: string | null; readonly note?: string };
  readonly vlans: readonly StatusVlan[];
  readonly warnings: readonly string[];
  readonly waiting: readonly string[];
  readonly lastReconcile: { readonly trigger: string; readonly result: string; readonly changes: readonly string[]; readonly drift: readonly string[]; readonly tables?: 'read' | 'known' } | null;
  readonly reconciling: {
    readonly trigger: string; readonly since: string;
    /** The command the pass waits for (the oldest of those not returned yet). */
    readonly waitingFor?: { readonly command: string; readonly since: string };
  } | null;
  readonly driftRepairs: Readonly<Record<string, number>>;
  readonly reload: {
    readonly lastAt: string | null; readonly lastResult: 'success' | 'failure' | null; readonly lastErrors: readonly string[];
    /** The reads of the config for a reload so far, and when the last began (each read's log lines carry its number, `read`). */
    readonly reads: number; readonly lastReadAt: string | null;
  };
}

// ---- the lab's traffic ----------------------------------------------------------------------------------------------

/** `ping -c COUNT` inside `ns`; returns how many replies came back (never throws for lost packets). */
export async function ping(ns: string, target: string, count = 1, intervalS = 0.2, waitS = 1): Promise<{ sent: number; received: number; output: string }> {
  const result = await runner.run(
    ['ip', 'netns', 'exec', ns, 'ping', '-n', '-q', '-c', String(count), '-i', String(intervalS), '-W', String(waitS), target],
    { allowFailure: true, timeoutMs: (count * intervalS + waitS) * 1000 + 10_000 },
  );
  const m = /(\d+) packets transmitted, (\d+) received/.exec(result.stdout);
  return { sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0), output: result.stdout.trim() };
}

/** Pings until one reply comes back (the path works again), at most `timeoutMs`; returns the time it took. */
export async function pingUntilReply(ns: string, target: string, timeoutMs = 5000): Promise<number> {
  const { ms } = await waitFor(`a ping reply from ${target} in ${ns}`, async () => (await ping(ns, target, 1, 0.2, 1)).received === 1, timeoutMs, 50);
  return ms;
}

/** Runs argv inside the namespace and returns stdout. */
export async function inNs(ns: string, ...argv: string[]): Promise<string> {
  return (await runner.run(['ip', 'netns', 'exec', ns, ...argv])).stdout;
}

/**
 * Each VLAN's client keeps its gateway address at the router NIC's MAC (a permanent neighbour entry), as a host's ARP
 * cache is after a `docker restart` of the gateway (a restarted container keeps its MACs): it sends through the
 * router before the gateway has announced anything.
 */
export async function clientsKnowGatewayMac(topology: LabTopology, vlans: LabTopology['vlans']): Promise<void> {
  for (const v of vlans) {
    const mac = (await inNs(topology.router, 'cat', `/sys/class/net/${v.routerInterface}/address`)).trim();
    await inNs(v.client.namespace, 'ip', 'neigh', 'replace', v.gateway, 'lladdr', mac, 'dev', v.client.interface, 'nud', 'permanent');
  }
}

/** `iptables-save` (nft, the lab's backend) without the "# Generated … on <date>" lines. */
export async function iptablesSave(ns: string, counters = false): Promise<string> {
  const out = await inNs(ns, 'iptables-nft-save', ...(counters ? ['-c'] : []));
  return out.split('\n').filter((line) => !line.startsWith('#')).join('\n');
}

/** The lines of an iptables-save that mention our chains (declarations, rules, jumps). */
export const vgwLines = (save: string): string[] => save.split('\n').filter((line) => line.includes('VGW-'));

/** Lines of our chain `chain` in an iptables-save (its declaration and its rules, counters included if saved so). */
export const chainLines = (save: string, chain: string): string[] =>
  save.split('\n').filter((line) => line.startsWith(`:${chain} `) || new RegExp(`-A ${chain} `).test(line));

/** The IPv4 addresses (CIDR) on `dev` inside `ns`; [] when the link does not exist. */
export async function addressesOf(ns: string, dev: string): Promise<string[]> {
  const result = await runner.run(['ip', '-n', ns, '-json', '-4', 'addr', 'show', 'dev', dev], { allowFailure: true });
  if (result.exitCode !== 0) return [];
  const links = JSON.parse(result.stdout || '[]') as Array<{ addr_info?: Array<{ local: string; prefixlen: number }> }>;
  return links.flatMap((l) => (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
}

/** The example lab's (examples/lab.yaml) gateway addresses, on office's NIC and on lab's. */
export const EXAMPLE_GATEWAYS = { office: '192.168.10.1/24', lab: '192.168.20.1/24' } as const;

interface ExampleDataplane {
  readonly vgw: string[];
  readonly office: string[];
  readonly lab: string[];
  readonly forward: string;
}

/** What the gateway maintains in the example lab, as text: our chains and jumps, office's and lab's addresses, ip_forward. */
async function exampleDataplane(topology: LabTopology): Promise<ExampleDataplane> {
  const nic = (vlan: string) => topology.vlans.find((v) => v.name === vlan)!.routerInterface;
  const [save, office, lab, forward] = await Promise.all([
    iptablesSave(topology.router),
    addressesOf(topology.router, nic('office')),
    addressesOf(topology.router, nic('lab')),
    runner.run(['ip', 'netns', 'exec', topology.router, 'sysctl', '-n', 'net.ipv4.ip_forward']).then((r) => r.stdout.trim()),
  ]);
  return { vgw: vgwLines(save), office: office.sort(), lab: lab.sort(), forward };
}

/** The example lab back to "just built": `vlan-gateway down` (the bundle at `bundlePath`) and ip_forward=0; throws where it is not. */
async function resetExampleRouter(topology: LabTopology, bundlePath: string, configPath: string): Promise<void> {
  await execa(process.execPath, [bundlePath, 'down', '--netns', topology.router, '--config', configPath]);
  await runner.run(['ip', 'netns', 'exec', topology.router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
  const state = await exampleDataplane(topology);
  if (state.vgw.length > 0 || state.office.includes(EXAMPLE_GATEWAYS.office) || state.forward !== '0') {
    throw new Error(`reset failed: ${JSON.stringify(state)}`);
  }
}

/** `ip netns pids NS`: the processes living in the namespace. */
export async function namespacePids(ns: string): Promise<number[]> {
  const result = await runner.run(['ip', 'netns', 'pids', ns], { allowFailure: true });
  return result.stdout.split(/\s+/).filter((p) => /^\d+$/.test(p)).map(Number);
}

// ---- labs -----------------------------------------------------------------------------------------------------------

/** Builds the lab for `config` with the product's builder (namespaces only: the gateway is NOT applied) and waits
 *  until IPv6 duplicate-address detection has settled, so later `ip addr` comparisons see only real changes. */
async function buildLab(config: Config, name: string): Promise<LabTopology> {
  const topology = planLabTopology(config, name);
  await labUp(runner, topology);
  await waitFor(`settled addresses in ${topology.router}`, async () => !/tentative/.test((await runner.run(['ip', '-n', topology.router, 'addr'])).stdout), 10_000, 100);
  return topology;
}

/** A scratch directory for configs and the like; remove it with `rm`. */
export const scratchDir = (prefix: string) => mkdtemp(join(tmpdir(), prefix));

/** The example lab of a test file (exampleLab): read once its before hook has run. */
export interface ExampleLab {
  readonly bundle: Bundle;
  readonly topology: LabTopology;
  /** A scratch directory of the file's, removed after its tests. */
  readonly scratch: string;
  /** gateway.yaml in `scratch`, a copy of examples/lab.yaml the tests may rewrite. */
  readonly configPath: string;
  readonly router: () => string;
  readonly office: () => LabTopology['vlans'][number];
  readonly lab: () => LabTopology['vlans'][number];
  /** What the gateway maintains there (exampleDataplane). */
  readonly dataplane: () => Promise<ExampleDataplane>;
  /** Back to "just built" (resetExampleRouter). */
  readonly reset: () => Promise<void>;
}

/** Kills the process group of each pid (processes a test started in groups of their own); one already gone is no error. */
export async function killProcessGroups(pids: Iterable<number>): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // ended already
    }
  }
}

export interface ExampleLabOptions {
  /** What the file started beside its gateways (a server writing in the scratch directory, agents in the lab's
   *  namespaces), stopped at the teardown before the gateways are killed and the lab and scratch files removed. */
  readonly stopFirst?: () => Promise<void>;
}

/**
 * The example lab (examples/lab.yaml) and the bundled CLI, for a file of supervisor tests: built before its tests,
 * with the config copied to a scratch gateway.yaml; after them (also on a Ctrl-C or ava's timeout) every gateway is
 * stopped and all of it removed. The file's own before hooks run after this one (it is serial), the lab built.
 */
export function exampleLab(test: TestFn, tag: string, scratchPrefix: string, options: ExampleLabOptions = {}): ExampleLab {
  const name = uniqueLabName(tag);
  let parts: { bundle: Bundle; topology: LabTopology; scratch: string; configPath: string } | undefined;
  let bundle: Bundle | undefined;
  let scratch: string | undefined;
  test.serial.before(async (t) => {
    if (!isRoot()) return;
    bundle = await prepareBundle();
    t.log(`bundle: ${bundle.built ? 'built' : 'up to date'}, ${Math.round(bundle.buildMs)} ms`);
    scratch = await scratchDir(scratchPrefix);
    const configPath = join(scratch, 'gateway.yaml');
    await copyFile(join(REPO, 'examples', 'lab.yaml'), configPath);
    const topology = await buildLab((await loadConfig(configPath)).config, name);
    parts = { bundle, topology, scratch, configPath };
  });
  tearDownAlways('kill every gateway, remove the lab and the scratch files', async () => {
    if (!isRoot()) return;
    try {
      await options.stopFirst?.();
    } finally {
      await tearDown(name, scratch, bundle);
    }
  });
  const built = () => {
    if (!parts) throw new Error(`the example lab ${name} is not built (its before hook has not run, or failed)`);
    return parts;
  };
  const vlan = (which: string) => built().topology.vlans.find((v) => v.name === which)!;
  return {
    get bundle() { return built().bundle; },
    get topology() { return built().topology; },
    get scratch() { return built().scratch; },
    get configPath() { return built().configPath; },
    router: () => built().topology.router,
    office: () => vlan('office'),
    lab: () => vlan('lab'),
    dataplane: () => exampleDataplane(built().topology),
    reset: () => resetExampleRouter(built().topology, built().bundle.path, built().configPath),
  };
}

/**
 * A bare namespace (no NIC: a config's VLANs wait there) and the bundled CLI, for a file of supervisor tests that
 * need nothing else: made before its tests; after them every gateway is stopped and both are removed.
 */
export function bareNamespace(test: TestFn, tag: string): { readonly namespace: string; readonly bundle: () => Bundle } {
  const namespace = `vgwk-${uniqueLabName(tag)}`;
  let bundle: Bundle | undefined;
  test.before(async () => {
    if (!isRoot()) return;
    bundle = await prepareBundle();
    await runner.run(['ip', 'netns', 'add', namespace]);
  });
  // Also on a Ctrl-C or ava's timeout: the namespace and a gateway in its own process group would outlive the file.
  tearDownAlways('stop the gateways, delete the namespace', async () => {
    if (!isRoot()) return;
    await killAllGateways();
    await runner.run(['ip', 'netns', 'del', namespace], { allowFailure: true });
    await bundle?.remove();
  });
  return { namespace, bundle: () => bundle! };
}
