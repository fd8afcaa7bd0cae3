/**
 * A soak of the supervisor (issue 3's "boring to operate"): the bundled CLI runs as the image runs it (`run --netns`,
 * the image's node flags) for MINUTES against a namespace of its own, while this script scrapes /metrics 20 times a
 * second, makes the tables, the sysctl or an address drift every 15 s, and replaces the config file every 60 s (as
 * an editor does, by a rename) with one that changes one VLAN's rules. The drift schedule is every 2 s and the
 * counters are read every second, so a 30-minute soak runs about 900 scheduled passes and 1,800 readings. It prints
 * RSS over time (sampled every 30 s, with the slope after the first 2 minutes: a leak shows as a steady climb), the
 * passes and reloads by result, the repairs, the scrapes that failed, and the lines the gateway logged at warn and
 * above; then `plan --detailed-exitcode` must find the namespace in sync.
 *
 *   sudo npx tsx bench/soak.ts [MINUTES] [VLANS]     (default: 30 minutes, 16 VLANs)
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump as stringify } from 'js-yaml';
import { ExecaRunner } from '../src/exec/execa-runner.js';
import { generateConfig, gatewayOf, nicBatch, nicName, type ConfigShape } from './configs.js';
import { Namespaces } from './netns.js';
import { ensureBundle } from './startup.js';
import { IMAGE_NODE_ARGS, imageEnv, untilReady } from './supervisor-bench.js';

const minutes = Number(process.argv[2] ?? 30);
const vlans = Number(process.argv[3] ?? 16);
if (!(minutes > 0) || !(vlans >= 2)) throw new Error('usage: bench/soak.ts [MINUTES > 0] [VLANS >= 2]');
const shape: ConfigShape = { vlans, partners: 2, rulesPerPair: 4, uplink: true };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const runner = new ExecaRunner();
const namespaces = new Namespaces(runner);
const dir = await mkdtemp(join(tmpdir(), 'vgwbench-soak-'));
// The gateways' state (clears left to do) in the scratch directory, not the machine's /run/vlan-gateway/state.
process.env.VLAN_GATEWAY_STATE_DIR = join(dir, 'state');
let gateway: ReturnType<typeof spawn> | undefined;
const cleanup = async () => {
  gateway?.kill('SIGKILL');
  await namespaces.cleanup();
  await rm(dir, { recursive: true, force: true });
};
const stop = () => void cleanup().finally(() => process.exit(130));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);

try {
  const ns = await namespaces.create('soak');
  await namespaces.batch(ns, nicBatch(shape));
  const variants = [generateConfig(shape), generateConfig(shape, 1)].map((c) => stringify(c));
  const path = join(dir, 'gateway.yaml');
  await writeFile(path, variants[0]!);
  const bundle = await ensureBundle(runner);
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const url = `http://127.0.0.1:${port}`;
  gateway = spawn(process.execPath, [...IMAGE_NODE_ARGS, bundle, 'run', '--netns', ns, '--config', path, '--listen', `127.0.0.1:${port}`,
    '--schedule', '*/2 * * * * *', '--stats-interval', '1000', '--log-level', 'warn'],
  { stdio: ['ignore', 'pipe', 'inherit'], env: { ...imageEnv(), VLAN_GATEWAY_PLAN_CACHE: 'off' } });
  const complaints: string[] = [];
  gateway.stdout!.setEncoding('utf8').on('data', (chunk: string) => complaints.push(...chunk.split('\n').filter(Boolean)));
  const pid = gateway.pid!;
  await untilReady(gateway, url, 20_000);

  const inside = (...argv: string[]) => runner.run(['ip', 'netns', 'exec', ns, ...argv], { allowFailure: true });
  const drifts: Array<[string, () => Promise<unknown>]> = [
    ['our FORWARD chain flushed', () => inside('iptables', '-F', 'VGW-FORWARD')],
    ['FORWARD flushed (our jump gone)', () => inside('iptables', '-F', 'FORWARD')],
    ['ip_forward set to 0', () => inside('sysctl', '-qw', 'net.ipv4.ip_forward=0')],
    ['a gateway address deleted', () => inside('ip', 'addr', 'del', `${gatewayOf(2)}/24`, 'dev', nicName(2))],
    ['nat POSTROUTING flushed', () => inside('iptables', '-t', 'nat', '-F', 'POSTROUTING')],
  ];
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  const samples: Array<{ s: number; mb: number }> = [];
  let scrapes = 0;
  let scrapeFailures = 0;
  let drift = 0;
  let variant = 0;
  let replaced = 0;
  const t0 = Date.now();
  let nextDrift = t0 + 15_000;
  let nextReload = t0 + 60_000;
  let nextSample = t0;
  console.log(`soak: ${minutes} min, ${vlans} VLANs, namespace ${ns}; RSS (MB) every 30 s:`);
  // Nothing is injected in the last 5 s: a drift or a rename on the minute, as the run ends, would be left for the
  // plan afterwards to find (it checks that the supervisor kept the namespace as the config says).
  const end = t0 + minutes * 60_000;
  while (Date.now() < end) {
    if (gateway.exitCode !== null) throw new Error(`vlan-gateway run exited ${gateway.exitCode} during the soak`);
    const ok = await fetch(`${url}/metrics`).then(async (r) => (await r.text(), r.ok), () => false);
    if (ok) scrapes++;
    else scrapeFailures++;
    await sleep(50);
    const now = Date.now();
    if (now >= nextDrift && now < end - 5000) {
      await drifts[drift++ % drifts.length]![1]();
      nextDrift = now + 15_000;
    }
    if (now >= nextReload && now < end - 5000) {
      variant ^= 1;
      await writeFile(`${path}.new`, variants[variant]!);
      await rename(`${path}.new`, path);
      replaced++;
      nextReload = now + 60_000;
    }
    if (now >= nextSample) {
      samples.push({ s: (now - t0) / 1000, mb: rss() });
      process.stdout.write(`${samples.at(-1)!.mb.toFixed(1)} `);
      nextSample = now + 30_000;
    }
  }
  const metrics = await (await fetch(`${url}/metrics`)).text();
  gateway.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => gateway!.once('exit', r));
  const plan = await runner.run(['env', 'VLAN_GATEWAY_PLAN_CACHE=off', process.execPath, bundle, 'plan', '--netns', ns, '--config', path, '--detailed-exitcode'],
    { allowFailure: true });

  // The slope of RSS after the first 2 minutes (least squares), in MB per hour.
  const late = samples.filter((x) => x.s >= 120);
  const mean = (f: (x: { s: number; mb: number }) => number) => late.reduce((n, x) => n + f(x), 0) / late.length;
  const [ms, mm] = [mean((x) => x.s), mean((x) => x.mb)];
  const slope = late.length > 2 ? (late.reduce((n, x) => n + (x.s - ms) * (x.mb - mm), 0) / late.reduce((n, x) => n + (x.s - ms) ** 2, 0)) * 3600 : NaN;
  const series = (name: string) => [...metrics.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))].map((m) => `${m[1]} ${m[2]}`);
  const mbs = samples.map((x) => x.mb);
  console.log('\n');
  console.log(`RSS: ${mbs[0]!.toFixed(1)} MB at ready, ${mbs.at(-1)!.toFixed(1)} at the end; min ${Math.min(...mbs).toFixed(1)}, max ${Math.max(...mbs).toFixed(1)}; `
    + `slope after 2 min ${Number.isNaN(slope) ? 'n/a' : `${slope.toFixed(2)} MB/h`} (${late.length} samples)`);
  console.log(`scrapes: ${scrapes} (${scrapeFailures} failed); drift injected ${drift} times (${drifts.map(([what]) => what).join('; ')}); config replaced ${replaced} times`);
  console.log(`passes:\n  ${series('vlan_gateway_reconciles_total').join('\n  ')}`);
  console.log(`reloads: ${series('vlan_gateway_config_reloads_total').join(', ')}`);
  console.log(`repairs: ${series('vlan_gateway_drift_repairs_total').join(', ')}`);
  console.log(`lines logged at warn or above: ${complaints.length}${complaints.length ? `\n  ${complaints.slice(0, 5).join('\n  ')}` : ''}`);
  console.log(`stop: exit ${code}; plan --detailed-exitcode afterwards: ${plan.exitCode} (0: in sync)`);
  if (plan.exitCode !== 0 || code !== 0) process.exitCode = 1;
} finally {
  await cleanup();
  const left = (await runner.run(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => l.includes('vgwbench-'));
  console.log(`namespaces left behind: ${left.length === 0 ? 'none' : left.join(', ')}`);
}
