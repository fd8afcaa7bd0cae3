/**
 * The config file's load at the benchmark's sizes, by phase: read, YAML parse, validation (the schema, zod, then the
 * checks across fields), templates, and the whole loadChecked as `vlan-gateway apply` runs it. Each sample is a new node
 * process (what a user's `apply` pays: nothing compiled or optimised yet), running a bundle of the loading code made
 * as build.mjs makes the product's (esbuild, the built-in templates precompiled); the warm figures are later
 * repetitions in one process (a supervisor's reload). With several trees (`--trees A,B`), their samples alternate
 * A B A B, so a machine shared with other work weighs on each alike, and the median of each round's ratio is said.
 * `--cpu-prof` profiles `--profiles N` new processes per tree (`--prof-reps N`: N loads in each) and sums the profile by phase and
 * by function (`--keep-prof PREFIX` keeps it); `--node-flags="--optimize-for-size"` runs every child so (the image's
 * flag). Nothing here touches a network namespace.
 *
 *   npm run bench:load -- [--size 10k|1k | --config FILE] [--fresh 15] [--warm 20] [--trees DIR,DIR] [--cpu-prof]
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import { dump } from 'js-yaml';
import { generateConfig, SIZES } from './configs.js';
import { parseYaml } from '../src/config/yaml.js';
import { stats } from './measure.js';

const run = promisify(execFile);

const USAGE = `npm run bench:load -- [options]: the config file's load by phase, in new processes (nothing touches a namespace)
  --size 10k|1k         the bench's generated config (default 10k)
  --config FILE         this file instead
  --fresh N             new processes per tree (default 15)
  --warm N              loads repeated in one process (default 20)
  --trees DIR,DIR       source trees side by side, their samples alternated (default .)
  --cpu-prof            CPU profiles, summed by phase and function (--profiles N processes, --prof-reps N loads each,
                        --keep-prof PREFIX keeps them)
  --node-flags="..."    flags for every child (the image's: --optimize-for-size)
`;

/**
 * What runs the child's bundle as the product's launcher (src/launcher.ts) runs cli.cjs: through V8's code cache,
 * which a first run (not timed) writes. Without it every sample would pay the compile of each function it runs,
 * which a user's `apply` does not.
 */
const LAUNCHER = `
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Script } from 'node:vm';
const [bundle, path, mode, reps] = process.argv.slice(2);
const cacheFile = bundle + '.cache';
const cached = existsSync(cacheFile) ? readFileSync(cacheFile) : undefined;
const script = new Script('(function (exports, require, module, __filename, __dirname) {\\n' + readFileSync(bundle, 'latin1') + '\\n})',
  { filename: bundle, lineOffset: -1, ...(cached ? { cachedData: cached } : {}) });
if (cached && script.cachedDataRejected) throw new Error('code cache rejected');
const module = { exports: {} };
script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, dirname(bundle));
const out = await module.exports.main(path, mode, Number(reps));
if (!cached) writeFileSync(cacheFile, script.createCachedData());
process.stdout.write(JSON.stringify(out));
`;

/** The child bundled from `tree`'s sources, in `tree` (the templates' loader finds rules/ above its own file). */
async function bundle(tree: string, name: string): Promise<string> {
  const { precompiledTemplatesModule } = await import(join(tree, 'scripts/precompile-templates.mjs')) as { precompiledTemplatesModule: (dir: string) => string };
  const outfile = join(tree, BUNDLE_DIR, `${name}.cjs`);
  // As build.mjs builds dist/cli.cjs.
  await build({
    stdin: { contents: await readFile(new URL('load-child.ts', import.meta.url), 'utf8'), resolveDir: join(tree, 'bench'), loader: 'ts', sourcefile: 'load-child.ts' },
    bundle: true, platform: 'node', target: 'node20', format: 'cjs', outfile, logLevel: 'warning',
    charset: 'ascii',
    define: { 'import.meta.url': '__vgwImportMetaUrl' },
    banner: { js: "var __vgwImportMetaUrl=require('node:url').pathToFileURL(__filename).href;" },
    plugins: [{
      name: 'precompiled-templates',
      setup(b) {
        b.onLoad({ filter: /[\\/]src[\\/]template[\\/]precompiled\.ts$/ }, () => ({ contents: precompiledTemplatesModule(join(tree, 'rules')), loader: 'js' }));
      },
    }],
  });
  const launcher = join(tree, BUNDLE_DIR, 'launch.mjs');
  await writeFile(launcher, LAUNCHER);
  return outfile;
}

const BUNDLE_DIR = 'dist/load-bench';

type Sample = Record<string, number>;

/** `--node-flags "--a --b"`: V8 or node flags for every child (what a flag such as --max-semi-space-size would change). */
let nodeFlags: string[] = [];

async function child(script: string, file: string, mode: string, reps: number, extra: string[] = []): Promise<Sample[]> {
  const flags = [...nodeFlags, ...extra];
  try {
    const { stdout } = await run(process.execPath, [...flags, join(dirname(script), 'launch.mjs'), script, file, mode, String(reps)], { cwd: tmpdir(), maxBuffer: 2 ** 24 });
    return JSON.parse(stdout) as Sample[];
  } catch (error) {
    // Not the whole error: its message holds the bundle's source line.
    throw new Error(`${script} ${mode}: ${String((error as { stderr?: string }).stderr ?? error).split('\n').filter((l) => /Error|at /.test(l)).slice(0, 8).join('\n')}`);
  }
}

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

/** The functions a load's time is read by, each with what it holds (inclusive time). */
const PHASES = ['loadChecked', 'loadConfig', 'readBounded', 'parseYaml', 'parseEvents', 'constructFromEvents', 'validateConfig', 'safeParse',
  'crossFieldProblems', 'vlanProblems', 'overlapProblems', 'forwardingProblems', 'templatesOf'];

/** Inclusive time of PHASES, and the top `n` functions by self time, the mean of several .cpuprofile files. */
function summary(profiles: readonly CpuProfile[], n: number): string[] {
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const profile of profiles) add(profile, self, inclusive, 1 / profiles.length);
  const line = (ms: number, what: string) => `${ms.toFixed(1).padStart(7)} ms  ${what}`;
  return [...PHASES.map((name) => line(inclusive.get(name) ?? 0, `${name} (inclusive)`)), '  self:',
    ...[...self].sort((a, b) => b[1] - a[1]).slice(0, n).map(([key, ms]) => line(ms, key))];
}

function add(profile: CpuProfile, self: Map<string, number>, inclusive: Map<string, number>, weight: number): void {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
  profile.samples.forEach((id, i) => {
    const ms = (weight * (profile.timeDeltas[i] ?? 0)) / 1000;
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const key = `${functionName || '(anonymous)'} ${url ? `${basename(url)}:${lineNumber + 1}` : ''}`;
    self.set(key, (self.get(key) ?? 0) + ms);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const name = byId.get(at)!.callFrame.functionName;
      if (PHASES.includes(name) && !seen.has(name)) inclusive.set(name, (inclusive.get(name) ?? 0) + ms);
      seen.add(name);
    }
  });
}

const fmt = (samples: number[]) => {
  const s = stats(samples);
  return `${s.median.toFixed(1)} (${s.min.toFixed(1)}–${s.max.toFixed(1)})`;
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '10k' }, config: { type: 'string' }, fresh: { type: 'string', default: '15' }, warm: { type: 'string', default: '20' },
      trees: { type: 'string', default: '.' }, 'cpu-prof': { type: 'boolean', default: false }, 'keep-prof': { type: 'string' }, 'node-flags': { type: 'string', default: '' }, 'prof-reps': { type: 'string', default: '1' }, profiles: { type: 'string', default: '5' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    // BENCHMARKS.md's list of commands points here for the options.
    process.stdout.write(USAGE);
    return;
  }
  nodeFlags = values['node-flags'].split(' ').filter((f) => f !== '');
  const size = values.size as keyof typeof SIZES;
  if (!SIZES[size]) throw new Error(`--size: one of ${Object.keys(SIZES).join(', ')}`);
  const trees = values.trees.split(',').map((t) => resolve(t));
  const dir = await mkdtemp(join(tmpdir(), 'vgwbench-load-'));
  try {
    // As apply-bench.ts writes it: the generated (validated) config, dumped by js-yaml.
    // Or the file --config names (a small one: what a start of the lab pays).
    const file = values.config !== undefined ? resolve(values.config) : join(dir, 'gateway.yaml');
    if (values.config === undefined) await writeFile(file, dump(generateConfig(SIZES[size])));
    const text = await readFile(file, 'utf8');
    const { vlans, forwarding } = (parseYaml(text).value ?? {}) as { vlans?: unknown[]; forwarding?: { rules?: unknown[] } };
    process.stdout.write(`${values.config ?? size}: ${vlans?.length ?? 0} VLANs, ${forwarding?.rules?.length ?? 0} forwarding rules, ${text.length} bytes, ${text.split('\n').length} lines\n`);
    const scripts = await Promise.all(trees.map((tree) => bundle(tree, 'child')));
    for (const script of scripts) await child(script, file, 'phases', 1); // writes the code cache
    const fresh = Number(values.fresh);
    const cold = trees.map(() => ({ phases: [] as Sample[], total: [] as Sample[] }));
    for (let i = 0; i < fresh; i++) {
      for (const [k, script] of scripts.entries()) {
        cold[k]!.total.push(...await child(script, file, 'total', 1));
        cold[k]!.phases.push(...await child(script, file, 'phases', 1));
      }
    }
    const warm = Number(values.warm);
    for (const [k, script] of fresh > 0 ? scripts.entries() : []) {
      const w = warm > 0 ? await child(script, file, 'total', warm + 5) : [];
      const c = cold[k]!;
      const col = (samples: Sample[], key: string) => `${fmt(samples.map((s) => s[key]!))} [cpu ${stats(samples.map((s) => s[`${key}_cpu`]!)).median.toFixed(1)}]`;
      process.stdout.write(`\n${trees[k]} (wall ms: median (min–max) [cpu ms: median]; ${fresh} new processes each)\n`
        + `  loadChecked, new process: ${col(c.total, 'total')}\n`
        + `  phases, new process: read ${col(c.phases, 'read')}, yaml ${col(c.phases, 'yaml')}, zod ${col(c.phases, 'zod')}, `
        + `cross-field ${col(c.phases, 'cross')}, templates ${col(c.phases, 'templates')}\n`
        + (w.length > 0 ? `  loadChecked, warm (repetitions 6–${warm + 5} of one process): ${col(w.slice(5), 'total')}\n` : ''));
    }
    // Each round's samples were taken side by side: the median of their ratios is what the noise moves least.
    for (let k = 1; k < (fresh > 0 ? trees.length : 0); k++) {
      const ratio = (key: string, of: 'total' | 'phases') => stats(cold[k]![of].map((s, i) => s[key]! / cold[0]![of][i]![key]!)).median.toFixed(2);
      process.stdout.write(`\n${trees[k]} / ${trees[0]}, median of the rounds' ratios: loadChecked ${ratio('total', 'total')} (cpu ${ratio('total_cpu', 'total')}), `
        + `yaml ${ratio('yaml_cpu', 'phases')}, zod ${ratio('zod_cpu', 'phases')}, cross-field ${ratio('cross_cpu', 'phases')} (cpu)\n`);
    }
    if (values['cpu-prof']) {
      const processes = Number(values.profiles);
      for (const [k, script] of scripts.entries()) {
        // Several processes, their profiles summed and divided: one alone moves by tens of ms on a busy machine.
        const profDir = join(dir, `prof${k}`);
        for (let i = 0; i < processes; i++) {
          await child(script, file, 'total', Number(values['prof-reps']), ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', profDir]);
        }
        if (values['keep-prof']) await copyFile(script, `${values['keep-prof']}.${k}.cjs`); // what the profiles' lines are of
        const profiles: CpuProfile[] = [];
        for (const name of await readdir(profDir)) {
          const text = await readFile(join(profDir, name), 'utf8');
          if (values['keep-prof']) await writeFile(`${values['keep-prof']}.${k}.${profiles.length}.cpuprofile`, text);
          profiles.push(JSON.parse(text) as CpuProfile);
        }
        process.stdout.write(`\n${trees[k]}: mean of ${processes} new processes, ${values['prof-reps']} load(s) each (the garbage collector's time is in no phase)\n`
          + `${summary(profiles, 25).join('\n')}\n`);
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
    await Promise.all(trees.map((tree) => rm(join(tree, BUNDLE_DIR), { recursive: true, force: true })));
  }
}

await main();
