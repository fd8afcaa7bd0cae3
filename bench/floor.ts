/**
 * A floor for the full apply (BENCHMARKS.md, "What the figures say"): the fewest processes an apply that drives
 * the tools can use. ONE process reads everything (`sh` running `ip -json`, `iptables-nft-save -c`, `ipset save`
 * and `cat` side by side inside the namespace; the product's own parsers and planner take it from there), and ONE
 * more writes everything: the sets, then both table restores, the `ip -batch` and the accounting fill side by
 * side, then `echo 1` into ip_forward. It attributes no failure to a step and undoes nothing: a floor, not a
 * design. Timed against the product's full apply and the raw restores, interleaved, each in a fresh namespace.
 *
 *   sudo npx tsx bench/floor.ts [1k|10k] [rounds]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { addressBatchLine, isAddressStep } from '../src/apply/addresses.js';
import { setCreate } from '../src/apply/ipsets.js';
import { ExecaRunner } from '../src/exec/execa-runner.js';
import { inNamespace, type CommandRunner } from '../src/exec/runner.js';
import type { Facts } from '../src/observe/facts.js';
import { parseDefaultRoute, parseIpAddr } from '../src/observe/parse-ip.js';
import { restoreCommand } from '../src/observe/read.js';
import { parseIpsetSave } from '../src/observe/parse-ipset.js';
import { SaveParser, tableOf } from '../src/observe/parse-save.js';
import { forgetRenderedChains } from '../src/plan/desired.js';
import type { Plan } from '../src/plan/types.js';
import { planFor, reconcileOnce } from '../src/reconcile/once.js';
import { loadTemplates } from '../src/template/load.js';
import { dump as stringify } from 'js-yaml';
import { loadAsProduct, setScript, tablePayloads } from './apply-bench.js';
import { generateConfig, nicBatch, SIZES, type ConfigShape } from './configs.js';
import { stats } from './measure.js';
import { Namespaces } from './netns.js';

const size = process.argv[2] ?? '1k';
const shape = (SIZES as Record<string, ConfigShape>)[size];
if (!shape) throw new Error(`size ${size}: 1k or 10k`);
const rounds = Number(process.argv[3] ?? 9);

const READ = `d=$(mktemp -d /dev/shm/vgwbench-floor.XXXXXX)
printf 'address show\\nroute show default\\n' | ip -json -batch - >$d/ip & iptables-nft-save -c >$d/save & ipset save >$d/ipset & cat /proc/sys/net/ipv4/ip_forward >$d/proc
wait
for f in ip save ipset proc; do echo "@@$f"; cat $d/$f; done; rm -rf $d`;

const WRITE = (d: string) => `ipset restore < ${d}/sets || exit 11
iptables-nft-restore --noflush --wait=10 < ${d}/filter & f=$!
iptables-nft-restore --noflush --wait=10 < ${d}/nat & n=$!
ip -batch ${d}/ip & i=$!
ipset restore < ${d}/fill & a=$!
wait $f || exit 12; wait $n || exit 13; wait $i || exit 14
echo 1 > /proc/sys/net/ipv4/ip_forward
wait $a || exit 15`;

/** The one read's output, cut at its markers, as the facts the planner takes. */
function factsOf(out: string): Facts {
  const part = (key: string) => {
    const from = out.indexOf(`@@${key}\n`) + key.length + 3;
    const to = out.indexOf('\n@@', from);
    return out.slice(from, to === -1 ? undefined : to + 1);
  };
  const [addresses = '[]', routes = '[]'] = part('ip').split('\n').filter((l) => l.trim() !== '');
  const parser = new SaveParser();
  parser.push(part('save'));
  const tables = parser.end();
  const defaultRoute = parseDefaultRoute(routes);
  return {
    links: parseIpAddr(addresses),
    ...(defaultRoute ? { defaultRoute } : {}),
    sysctls: { 'net.ipv4.ip_forward': part('proc').trim() },
    backend: 'nft',
    tables: { filter: tableOf(tables, 'filter'), nat: tableOf(tables, 'nat') },
    sets: parseIpsetSave(part('ipset')),
  };
}

/** The plan's writes as the files of the one write process. */
async function writeFiles(dir: string, plan: Plan): Promise<void> {
  const sets: string[] = [];
  const fill: string[] = [];
  const ip: string[] = [];
  for (const s of plan.steps) {
    if (s.kind === 'set-update') {
      if (s.create) sets.push(setCreate(s.set, s.type, s.add));
      for (const m of s.add) (s.role === 'verdict' ? sets : fill).push(`add ${s.set} ${m} -exist`);
    } else if (isAddressStep(s)) ip.push(addressBatchLine(s));
  }
  const table = (name: string) => tablePayloads(plan).find((p) => p.table === name)?.text ?? '';
  const files: Record<string, string> = { sets: sets.join('\n'), fill: fill.join('\n'), ip: ip.join('\n'), filter: table('filter'), nat: table('nat') };
  await Promise.all(Object.entries(files).map(([name, text]) => writeFile(join(dir, name), text.endsWith('\n') || text === '' ? text : `${text}\n`)));
}

const root = new ExecaRunner();
const namespaces = new Namespaces(root);
const config = generateConfig(shape);
const templates = await loadTemplates();
// The config as a user gives it: a file that the product, and the floor, read, parse and validate in their time.
const configDir = await mkdtemp('/dev/shm/vgwbench-floor-config-');
const yaml = join(configDir, 'gateway.yaml');
await writeFile(yaml, stringify(config));
const fresh = async (label: string): Promise<{ name: string; ns: CommandRunner }> => {
  const name = await namespaces.create(label);
  await namespaces.batch(name, nicBatch(shape));
  return { name, ns: inNamespace(root, name) };
};
const times: Record<'product' | 'floor' | 'raw', number[]> = { product: [], floor: [], raw: [] };
const stop = () => void namespaces.cleanup().finally(() => rm(configDir, { recursive: true, force: true })).finally(() => process.exit(130));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
try {
  for (let round = 0; round < rounds; round++) {
    process.stderr.write(`round ${round + 1}/${rounds}\n`);
    {
      const { name, ns } = await fresh('prod');
      forgetRenderedChains();
      const start = performance.now();
      const loaded = await loadAsProduct(yaml);
      await reconcileOnce(ns, loaded.config, loaded.templates);
      times.product.push(performance.now() - start);
      await namespaces.remove(name);
    }
    {
      const { name, ns } = await fresh('floor');
      forgetRenderedChains();
      const dir = await mkdtemp('/dev/shm/vgwbench-floor-');
      let copy = config;
      try {
        const start = performance.now();
        const loaded = await loadAsProduct(yaml);
        copy = loaded.config;
        const plan = planFor(copy, factsOf((await ns.run(['sh', '-c', READ])).stdout), loaded.templates, 'up');
        await writeFiles(dir, plan);
        await ns.run(['sh', '-c', WRITE(dir)]);
        times.floor.push(performance.now() - start);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      // The floor must have done the whole apply: the product finds nothing left to do.
      const check = await reconcileOnce(ns, copy, templates, { dryRun: true });
      if (check.plan.steps.length > 0) throw new Error(`the floor left steps: ${check.plan.steps.map((s) => s.kind).join(', ')}`);
      await namespaces.remove(name);
    }
    {
      const probe = await fresh('probe');
      forgetRenderedChains();
      const { plan } = await reconcileOnce(probe.ns, structuredClone(config), templates, { dryRun: true });
      await namespaces.remove(probe.name);
      const { name, ns } = await fresh('raw');
      await ns.run(['ipset', 'restore'], { input: setScript(plan) }); // untimed, as in the benchmark's (b)
      const start = performance.now();
      for (const p of tablePayloads(plan)) await ns.run(restoreCommand('nft'), { input: p.text });
      times.raw.push(performance.now() - start);
      await namespaces.remove(name);
    }
  }
} finally {
  await namespaces.cleanup();
  await rm(configDir, { recursive: true, force: true });
}
const raw = stats(times.raw).median;
const line = (what: string, values: number[]) => {
  const median = stats(values).median;
  return `${size} ${what.padEnd(44)} ${median.toFixed(1).padStart(7)} ms  ${(median / raw).toFixed(2)}× raw   (${values.map((v) => v.toFixed(0)).join(' ')})`;
};
console.log(line('the product\'s full apply', times.product));
console.log(line('floor: one read process, one write process', times.floor));
console.log(line('raw iptables-nft-restore × 2', times.raw));
