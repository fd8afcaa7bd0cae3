/**
 * The supervisor's figures (issue 3): start-to-ready at 2 and 100 VLANs, scrape time at 100 VLANs, RSS after
 * 1,000 scrapes, and the time from a NIC appearing to its gateway address answering a ping. The gateway runs
 * as users run it (the bundled CLI, `run --netns`), its HTTP server on loopback; every namespace is ours.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { dump as stringify } from 'js-yaml';
import type { CommandRunner } from '../src/exec/runner.js';
import { generateConfig, gatewayOf, nicBatch, type ConfigShape } from './configs.js';
import { stats, type Stats } from './measure.js';
import type { Namespaces } from './netns.js';
import { ensureBundle, ROOT } from './startup.js';

export interface SupervisorResult {
  /**
   * codeCache false: with VLAN_GATEWAY_CODE_CACHE=off, the bundle compiled at every start (for comparison).
   * planCache true: a restarted container's start, which finds what its last start parsed and rendered; false: a
   * new container's (VLAN_GATEWAY_PLAN_CACHE=off), the case the ready target is judged by.
   */
  readonly ready: Array<{ vlans: number; codeCache: boolean; planCache: boolean; stats: Stats }>;
  readonly scrape: { vlans: number; series: number; stats: Stats; p99: number };
  /** steady: the median of 10 samples 1 s apart, after two stats readings and 1,000 more scrapes (the target's). */
  readonly rssMb: { afterStart: number; after1000Scrapes: number; steady: number };
  readonly hotplug: Stats;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const IMAGE_NODE_OPTIONS = process.env.BENCH_NODE_OPTIONS ?? '--max-semi-space-size=1 --v8-pool-size=1';
/** The flags the image's `vlan-gateway` wrapper gives node (image/Dockerfile), which NODE_OPTIONS may not hold. */
export const IMAGE_NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '--optimize-for-size').split(' ').filter(Boolean);

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    }).on('error', reject);
  });
}

/** One JSON line of the gateway's log (pino: `time` is ISO, to the millisecond). */
export interface LogLine {
  readonly time: string;
  readonly msg: string;
  readonly level: number;
  readonly [field: string]: unknown;
}

export class Gateway {
  private child: ChildProcess | undefined;
  readonly url: string;
  /** With `withLogs`: the log of the last start, line by line (at --log-level info). */
  logs: LogLine[] = [];
  /** Date.now() when the last start's /readyz was first seen 200. */
  readyAt = 0;

  /** withLogs: run at --log-level info and keep the log (else warn, and stdout ignored, as the ready figures are taken). */
  constructor(private readonly port: number, private readonly bundle: string, private readonly withLogs = false) {
    this.url = `http://127.0.0.1:${port}`;
  }

  /** Starts `run` and resolves with the ms from spawn to the first /readyz 200. */
  async start(namespace: string, configPath: string, extra: string[] = [], codeCache = true, planCache?: string): Promise<number> {
    const started = performance.now();
    this.logs = [];
    // NODE_OPTIONS as the image sets it (image/Dockerfile), so RSS is what a container shows.
    this.child = spawn(process.execPath, [...IMAGE_NODE_ARGS, this.bundle, 'run', '--netns', namespace, '--config', configPath,
      '--listen', `127.0.0.1:${this.port}`, '--log-level', this.withLogs ? 'info' : 'warn', ...extra],
    { stdio: ['ignore', this.withLogs ? 'pipe' : 'ignore', 'inherit'], env: { ...imageEnv(codeCache), VLAN_GATEWAY_PLAN_CACHE: planCache ?? 'off' } });
    if (this.withLogs) {
      const logs = this.logs;
      createInterface({ input: this.child.stdout! }).on('line', (line) => {
        try {
          logs.push(JSON.parse(line) as LogLine);
        } catch {
          // not a log line
        }
      });
    }
    await untilReady(this.child, this.url, 20_000, 5);
    this.readyAt = Date.now();
    return performance.now() - started;
  }

  /** The first line of the last start's log that `match` takes, waited for up to `limitMs` (withLogs only). */
  async logLine(what: string, match: (line: LogLine) => boolean, limitMs = 20_000): Promise<LogLine> {
    for (const started = performance.now(); ;) {
      const line = this.logs.find(match);
      if (line) return line;
      if (this.child?.exitCode !== null) throw new Error(`vlan-gateway run exited ${this.child?.exitCode} before logging ${what}`);
      if (performance.now() - started > limitMs) throw new Error(`vlan-gateway run did not log ${what} within ${limitMs / 1000} s`);
      await sleep(20);
    }
  }

  get pid(): number {
    return this.child!.pid!;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([gone, sleep(5000).then(() => child.kill('SIGKILL'))]);
  }
}

export function imageEnv(codeCache = true): NodeJS.ProcessEnv {
  return { ...process.env, NODE_OPTIONS: IMAGE_NODE_OPTIONS, ...(codeCache ? {} : { VLAN_GATEWAY_CODE_CACHE: 'off' }) };
}

async function rssMb(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

let imaged: Promise<string> | undefined;

/** The bundle (ensureBundle) with the code cache the image build makes for these NODE_OPTIONS; once a run. */
export function imageBundle(runner: CommandRunner): Promise<string> {
  imaged ??= (async () => {
    const bundle = await ensureBundle(runner);
    // As the image build does: a code cache for these NODE_OPTIONS, made by `validate` (the first start upgrades it).
    await new Promise<void>((resolve, reject) => {
      spawn(process.execPath, [...IMAGE_NODE_ARGS, bundle, 'validate', '--config', join(ROOT, 'examples', 'lab.yaml')], { stdio: 'ignore', env: imageEnv() })
        .on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`validate exited ${code}`))));
    });
    return bundle;
  })();
  return imaged;
}

export async function supervisorBench(runner: CommandRunner, namespaces: Namespaces, log: (s: string) => void): Promise<SupervisorResult> {
  const bundle = await imageBundle(runner);
  const dir = await mkdtemp(join(tmpdir(), 'vgwbench-'));
  const gateway = new Gateway(await freePort(), bundle);
  try {
    const ready: SupervisorResult['ready'] = [];
    let scrape: SupervisorResult['scrape'] | undefined;
    let rss: SupervisorResult['rssMb'] | undefined;
    for (const vlans of [2, 100]) {
      const shape: ConfigShape = { vlans, partners: 1, rulesPerPair: 2, uplink: true };
      const configPath = join(dir, `gateway-${vlans}.yaml`);
      await writeFile(configPath, stringify(generateConfig(shape)));
      // At 2 VLANs each start is followed by one without the code cache, for the ratio between them; at 100, by
      // one that finds the plan cache its previous start left (a restarted container's), for the same reason.
      const variants = vlans === 2
        ? [{ codeCache: true, planCache: false }, { codeCache: false, planCache: false }]
        : [{ codeCache: true, planCache: false }, { codeCache: true, planCache: true }];
      const samples = new Map(variants.map((v) => [v, [] as number[]]));
      const planCacheDir = join(dir, `plan-cache-${vlans}`);
      if (variants.some((v) => v.planCache)) {
        // The start before the first timed one: the plan cache is then as a restart finds it.
        const ns = await namespaces.create(`sup${vlans}-fill`);
        await namespaces.batch(ns, nicBatch(shape));
        await gateway.start(ns, configPath, [], true, planCacheDir);
        await gateway.stop();
        await namespaces.remove(ns);
      }
      for (let run = 0; run < 5; run++) {
        for (const variant of variants) {
          const { codeCache, planCache } = variant;
          // A fresh namespace each time: the container-restart case, nothing applied yet.
          const ns = await namespaces.create(`sup${vlans}-${run}${codeCache ? '' : '-cold'}${planCache ? '-pc' : ''}`);
          await namespaces.batch(ns, nicBatch(shape));
          samples.get(variant)!.push(await gateway.start(ns, configPath, [], codeCache, planCache ? planCacheDir : undefined));
          if (vlans === 100 && run === 4 && !planCache) {
            const afterStart = await rssMb(gateway.pid);
            const times: number[] = [];
            let text = '';
            for (let i = 0; i < 1000; i++) {
              const t = performance.now();
              text = await (await fetch(`${gateway.url}/metrics`)).text();
              times.push(performance.now() - t);
            }
            const series = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;
            const sorted = [...times].sort((a, b) => a - b);
            scrape = { vlans, series, stats: stats(times), p99: sorted[Math.floor(sorted.length * 0.99)]! };
            const after1000Scrapes = await rssMb(gateway.pid);
            // The 1,000 scrapes take about a second; the stats collector reads every 5 s (its first reading right
            // after the start pass). What a container shows for as long as it runs is after its readings: until
            // run y this figure was taken before the first one, and left out what the readings keep.
            await sleep(11_000);
            for (let i = 0; i < 1000; i++) await (await fetch(`${gateway.url}/metrics`)).text();
            const samples: number[] = [];
            for (let i = 0; i < 10; i++) {
              samples.push(await rssMb(gateway.pid));
              await sleep(1000);
            }
            rss = { afterStart, after1000Scrapes, steady: stats(samples).median };
          }
          await gateway.stop();
          await namespaces.remove(ns);
        }
      }
      for (const [{ codeCache, planCache }, values] of samples) {
        ready.push({ vlans, codeCache, planCache, stats: stats(values) });
        log(`bench: supervisor ready at ${vlans} VLANs${codeCache ? '' : ' (no code cache)'}${planCache ? ' (plan cache)' : ''}: ${values.map((v) => v.toFixed(0)).join(', ')} ms`);
      }
    }

    // Hot-plug: a VLAN configured but not attached; a client namespace pings its gateway address from the moment
    // the NIC (with a Docker-like address) is moved into the router namespace.
    const shape: ConfigShape = { vlans: 3, partners: 1, rulesPerPair: 1, uplink: true };
    const configPath = join(dir, 'hotplug.yaml');
    await writeFile(configPath, stringify(generateConfig(shape)));
    const hot: number[] = [];
    for (let run = 0; run < 5; run++) {
      const router = await namespaces.create(`hp-${run}`);
      const client = await namespaces.create(`hpc-${run}`);
      const attached = nicBatch(shape).split('\n').filter((l) => !/\bn3\b|\bp3\b/.test(l)).join('\n');
      await namespaces.batch(router, `${attached}\n`);
      await runner.run(['ip', '-n', client, 'link', 'add', 'name', 'c0', 'type', 'veth', 'peer', 'name', 'n3']);
      await runner.run(['ip', '-n', client, 'addr', 'add', `${gatewayOf(3).replace(/\.1$/, '.100')}/24`, 'dev', 'c0']);
      await runner.run(['ip', '-n', client, 'link', 'set', 'dev', 'c0', 'up']);
      await gateway.start(router, configPath, ['--schedule', '0 0 * * * *']);
      // Docker creates the NIC elsewhere, moves it in, then gives it its address: we time from the move.
      const t0 = performance.now();
      await runner.run(['ip', '-n', client, 'link', 'set', 'dev', 'n3', 'netns', router]);
      await runner.run(['ip', '-n', router, 'addr', 'add', `${gatewayOf(3).replace(/\.1$/, '.2')}/24`, 'dev', 'n3']);
      await runner.run(['ip', '-n', router, 'link', 'set', 'dev', 'n3', 'up']);
      for (;;) {
        const ping = await runner.run(['ip', 'netns', 'exec', client, 'ping', '-c', '1', '-W', '0.2', gatewayOf(3)], { allowFailure: true });
        if (ping.exitCode === 0) break;
        if (performance.now() - t0 > 10_000) throw new Error('hot-plugged gateway did not answer within 10 s');
      }
      hot.push(performance.now() - t0);
      await gateway.stop();
      await namespaces.remove(client);
      await namespaces.remove(router);
    }
    log(`bench: hot-plug: ${hot.map((s) => s.toFixed(0)).join(', ')} ms`);
    // The gateway announces its new address with arping (the image has it): without it the client, whose first
    // ping asked for the address before it existed, finds it only at its own ARP retry, about a second later.
    if ((await runner.run(['sh', '-c', 'command -v arping'], { allowFailure: true })).exitCode !== 0) {
      log('bench: hot-plug: arping is not installed here, so the gateway could not announce its address (scripts/install-deps.sh installs it)');
    }
    return { ready, scrape: scrape!, rssMb: rss!, hotplug: stats(hot) };
  } finally {
    await gateway.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Waits for a `vlan-gateway run` child's first /readyz 200, polling every `everyMs`; throws if it exits or takes `limitMs`. */
export async function untilReady(child: ChildProcess, url: string, limitMs: number, everyMs = 20): Promise<void> {
  for (const started = performance.now(); ;) {
    if (child.exitCode !== null) throw new Error(`vlan-gateway run exited ${child.exitCode}`);
    if (await fetch(`${url}/readyz`).then((r) => r.ok, () => false)) return;
    if (performance.now() - started > limitMs) throw new Error(`not ready within ${limitMs / 1000} s`);
    await sleep(everyMs);
  }
}
