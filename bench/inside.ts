/**
 * The full apply as the container runs it: this process inside the namespace, each command a bare spawn. The main
 * benchmark drives the product through `ip netns exec NS` per command (the `--netns` runner), which adds a few
 * milliseconds to every process; that weighs more on the raw restores (two in a row) than on the apply, whose
 * reads and writes run side by side, so it flatters the ratio (BENCHMARKS.md, "In the namespace").
 *
 * One namespace with the VLAN NICs; rounds alternate: reset → full apply (timed from the config file's load, as
 * `vlan-gateway apply` reads it), reset → raw `iptables-nft-restore --noflush --wait` of the same payloads (timed;
 * the sets created before it, untimed). A reset is
 * the product's `down` and the sets destroyed, so the apply finds the filter and nat tables empty, not absent as in
 * a new namespace. The first round warms the code and is not counted.
 *
 *   sudo npx tsx bench/inside.ts [1k|10k] [rounds]
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dump as stringify } from 'js-yaml';
import { ExecaRunner } from '../src/exec/execa-runner.js';
import { forgetRenderedChains } from '../src/plan/desired.js';
import { restoreCommand } from '../src/observe/read.js';
import { reconcileOnce } from '../src/reconcile/once.js';
import { loadTemplates } from '../src/template/load.js';
import { loadAsProduct, setScript, tablePayloads } from './apply-bench.js';
import { generateConfig, nicBatch, SIZES, type ConfigShape } from './configs.js';
import { stats } from './measure.js';
import { Namespaces } from './netns.js';

const size = process.argv[2] ?? '1k';
const shape = (SIZES as Record<string, ConfigShape>)[size];
if (!shape) throw new Error(`size ${size}: 1k or 10k`);
const rounds = Number(process.argv[3] ?? 9);
const runner = new ExecaRunner();

if (process.env.VGWBENCH_INSIDE !== '1') {
  // Outside: make the namespace, run this script again inside it, and delete the namespace whatever happens.
  const namespaces = new Namespaces(runner);
  const stop = () => void namespaces.cleanup().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const ns = await namespaces.create('inside');
    await namespaces.batch(ns, nicBatch(shape));
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
        stdio: 'inherit', env: { ...process.env, VGWBENCH_INSIDE: '1' },
      });
      child.on('close', resolve);
    });
    process.exitCode = code ?? 1;
  } finally {
    await namespaces.cleanup();
  }
} else {
  const config = generateConfig(shape);
  const templates = await loadTemplates();
  // The config as a user gives it: a file the product reads, parses and validates in its time.
  const configDir = await mkdtemp(join(tmpdir(), 'vgwbench-inside-'));
  const yaml = join(configDir, 'gateway.yaml');
  await writeFile(yaml, stringify(config));
  process.once('exit', () => rmSync(configDir, { recursive: true, force: true }));
  const { plan } = await reconcileOnce(runner, structuredClone(config), templates, { dryRun: true });
  const reset = async () => {
    forgetRenderedChains();
    await reconcileOnce(runner, structuredClone(config), templates, { mode: 'down' });
    // The tables' references to a set are dropped a moment after the restore that removed them.
    for (let attempt = 0; ; attempt++) {
      const result = await runner.run(['ipset', 'destroy'], { allowFailure: true });
      if (result.exitCode === 0) break;
      if (attempt === 50) throw new Error(`ipset destroy: ${result.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => setTimeout(resolve, 200)); // let the kernel finish freeing the rules
  };
  const apply: number[] = [];
  const raw: number[] = [];
  for (let round = 0; round <= rounds; round++) {
    process.stderr.write(`round ${round}/${rounds}${round === 0 ? ' (warm-up)' : ''}\n`);
    await reset();
    forgetRenderedChains(); // nothing rendered before is reused, as in a new process
    let start = performance.now();
    const loaded = await loadAsProduct(yaml);
    const result = await reconcileOnce(runner, loaded.config, loaded.templates);
    const applied = performance.now() - start;
    if (!result.plan.steps.some((s) => s.kind === 'table')) throw new Error('the apply wrote no table: not a full apply');
    await reset();
    await runner.run(['ipset', 'restore'], { input: setScript(plan) });
    start = performance.now();
    for (const p of tablePayloads(plan)) await runner.run(restoreCommand('nft'), { input: p.text });
    const restored = performance.now() - start;
    if (round > 0) {
      apply.push(applied);
      raw.push(restored);
    }
  }
  const median = (values: number[]) => stats(values).median;
  const list = (values: number[]) => values.map((v) => v.toFixed(0)).join(' ');
  console.log(`${size} in the namespace: full apply ${median(apply).toFixed(1)} ms, raw iptables-nft-restore × 2 ${median(raw).toFixed(1)} ms: `
    + `${(median(apply) / median(raw)).toFixed(2)}× (apply: ${list(apply)}; raw: ${list(raw)})`);
}
