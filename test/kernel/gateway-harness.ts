/**
 * Shared by the gateway-*.test.ts kernel tests: the CLI as a subprocess (what users run), configs written to a
 * scratch directory, labs built with the product's own builder, and the namespace state rendered as text so that
 * "nothing changed" is a byte comparison of what an operator would look at (iptables-save of both backends,
 * `ip -d addr`, `ip route`, `ipset save`, `sysctl net.ipv4.ip_forward`).
 */
import test from 'ava';
import { execa } from 'execa';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dump as stringify, load as parse } from 'js-yaml';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ExecaRunner } from '../../src/exec/execa-runner.js';
import type { CommandRunner } from '../../src/exec/runner.js';
import { prepareBundle, type Bundle } from '../helpers/bundle.js';
import { onInterrupt } from '../helpers/interrupt.js';
import { isRoot } from '../helpers/lab.js';
import { tearDownAlways } from '../helpers/teardown.js';
import { labUp, planLabTopology, type CheckResult, type LabTopology } from '../../src/lab/index.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = join(REPO, 'test', 'fixtures', 'kernel');

export const runner = new ExecaRunner();

// ---- the CLI, as a user runs it ----

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * The command these tests run: a private copy of the built package (helpers/bundle.ts), what users run, made once per
 * test process when first asked for. Not `node --import tsx src/main.ts`: tsx compiles the sources again in every
 * process it starts, about 2 s of CPU per command against 0.3 s for the bundle, and these files run hundreds.
 */
let bundle: Promise<Bundle> | undefined;
const cliBundle = (): Promise<Bundle> => (bundle ??= prepareBundle().then(removedAtExit));

/**
 * The copy goes when the test process ends or is interrupted (as state-dir.ts's directory does), not in an
 * after.always hook: declared here, on import, a hook would open ava's run before a file's own top-level awaits
 * have declared its tests.
 */
function removedAtExit(made: Bundle): Bundle {
  const dir = dirname(dirname(made.path)); // DIR/dist/vlan-gateway.mjs
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  onInterrupt({ once: () => made.remove(), again: () => made.remove() });
  return made;
}

/**
 * `vlan-gateway ARGS…` in a child process (node on the copy of the bundle), its plan cache and state (flows-left.ts)
 * in this process's scratch directory (not the machine's /run/vlan-gateway).
 */
export function cli(...args: string[]): Promise<CliResult> {
  return cliWithEnv({}, ...args);
}

/** The same with more environment (e.g. XTABLES_LOCKFILE, to take the xtables lock without touching the machine's). */
export function cliWithEnv(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return cliWatchingStderr(env, () => undefined, ...args);
}

/** The same, handing each piece of its stderr to `onStderr` as it comes (to wait for what it says before it ends). */
export async function cliWatchingStderr(env: Record<string, string>, onStderr: (piece: string) => void, ...args: string[]): Promise<CliResult> {
  return cliWrapped([], env, onStderr, ...args);
}

/**
 * The CLI where /proc/sys is mounted read-only, as inside a container: in a mount namespace of its own (unshare -m,
 * private), /proc/sys bound onto itself read-only. The `ip netns exec` it runs its helpers through inherits the mount.
 */
export function cliWithReadOnlyProcSys(...args: string[]): Promise<CliResult> {
  return cliWrapped(['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
    'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"', 'sh'], {}, () => undefined, ...args);
}

async function cliWrapped(wrapper: readonly string[], env: Record<string, string>, onStderr: (piece: string) => void, ...args: string[]): Promise<CliResult> {
  const argv = [...wrapper, process.execPath, (await cliBundle()).path, ...args];
  const child = execa(argv[0]!, argv.slice(1), {
    cwd: REPO,
    reject: false,
    timeout: 60_000,
    env: { LC_ALL: 'C', VLAN_GATEWAY_PLAN_CACHE: await planCache(), VLAN_GATEWAY_STATE_DIR: join(await scratchDir(), 'state'), ...env },
  });
  child.stderr.on('data', (chunk: Buffer) => onStderr(chunk.toString()));
  const result = await child;
  return { code: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
}

// ---- configs ----

/** examples/lab.yaml as plain data, to derive variants from. */
export async function exampleDocument(): Promise<Record<string, unknown>> {
  return parse(await readFile(join(REPO, 'examples', 'lab.yaml'), 'utf8')) as Record<string, unknown>;
}

/** This test process's scratch directory, made once (concurrent callers share the one being made). */
let scratch: Promise<string> | undefined;
export const scratchDir = () => (scratch ??= mkdtemp(join(tmpdir(), 'vgw-kernel-')));

/** Where the CLI runs of this test process keep their plan cache (see src/cli/plan-cache.ts). */
export async function planCache(): Promise<string> {
  return join(await scratchDir(), 'plan-cache');
}

/** Writes `document` as YAML into this process's scratch directory; returns its path. */
export async function writeYaml(name: string, document: unknown): Promise<string> {
  const path = join(await scratchDir(), `${name}.yaml`);
  await writeFile(path, stringify(document));
  return path;
}

/** Writes a valid config and loads it back through the product (defaults filled in). */
export async function writeConfig(name: string, document: unknown): Promise<{ path: string; config: Config }> {
  const path = await writeYaml(name, document);
  return { path, config: (await loadConfig(path)).config };
}

export async function removeScratch(): Promise<void> {
  if (scratch) await rm(await scratch, { recursive: true, force: true });
}

// ---- namespaces ----

/** Runs argv inside `ns` and returns stdout. */
export async function inNs(ns: string, ...argv: string[]): Promise<string> {
  return (await runner.run(['ip', 'netns', 'exec', ns, ...argv])).stdout;
}

/** Builds the lab for `config` (namespaces only; nothing applied) and waits until the router's addresses settle. */
export async function buildLab(config: Config, name: string): Promise<LabTopology> {
  const topology = planLabTopology(config, name);
  await labUp(runner, topology);
  await waitForSettledAddresses(topology.router);
  return topology;
}

/** IPv6 duplicate address detection marks new link-local addresses "tentative" for a moment; `ip addr` snapshots
 *  taken across that moment would differ for reasons that have nothing to do with the product. */
export async function waitForSettledAddresses(ns: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (/tentative/.test((await runner.run(['ip', '-n', ns, 'addr'])).stdout)) {
    if (Date.now() > deadline) throw new Error(`addresses in ${ns} still tentative after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Docker's embedded-DNS rules, as found in a container's nat table. */
export async function addDockerDnsChains(ns: string, backend: 'nft' | 'legacy' = 'nft'): Promise<void> {
  const input = await readFile(join(FIXTURES, 'docker-dns.rules'), 'utf8');
  await runner.run(['ip', 'netns', 'exec', ns, `iptables-${backend}-restore`, '--noflush'], { input });
}

/** The lines of an iptables-save that belong to Docker: its chains, their rules, and its jumps. */
export const dockerLines = (save: string): string[] => save.split('\n').filter((line) => line.includes('DOCKER_'));

/** `iptables-save` without its "# Generated … on <date>" comment lines (they carry a timestamp). */
export async function save(ns: string, backend: 'nft' | 'legacy', ...options: string[]): Promise<string> {
  const out = await inNs(ns, `iptables-${backend}-save`, ...options);
  return out.split('\n').filter((line) => !line.startsWith('#')).join('\n');
}

/** Everything an apply could touch, as an operator would print it. */
export interface NamespaceState {
  readonly nft: string;
  readonly legacy: string;
  readonly addresses: string;
  readonly routes: string;
  readonly ipsets: string;
  readonly forwarding: string;
}

export async function readState(ns: string, counters = false): Promise<NamespaceState> {
  const c = counters ? ['-c'] : [];
  const [nft, legacy, addresses, routes, ipsets, forwarding] = await Promise.all([
    save(ns, 'nft', ...c),
    save(ns, 'legacy', ...c),
    runner.run(['ip', '-n', ns, '-d', 'addr']).then((r) => r.stdout),
    runner.run(['ip', '-n', ns, 'route']).then((r) => r.stdout),
    inNs(ns, 'ipset', 'save'),
    inNs(ns, 'sysctl', 'net.ipv4.ip_forward'),
  ]);
  return { nft, legacy, addresses, routes, ipsets, forwarding };
}

/** Reads the state (with counters) until two reads 250 ms apart agree: the last packets of the probes (FINs,
 *  ACKs) have passed, so a later comparison sees only what the product did. */
export async function settledState(ns: string, timeoutMs = 5000): Promise<NamespaceState> {
  const deadline = Date.now() + timeoutMs;
  let last = await readState(ns, true);
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    const next = await readState(ns, true);
    if (JSON.stringify(next) === JSON.stringify(last) || Date.now() > deadline) return next;
    last = next;
  }
}

/** What `iptables-nft-save` prints for a filter table that iptables-nft created and that holds nothing. */
export const EMPTY_NFT_FILTER = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', 'COMMIT'].join('\n');

// ---- traffic ----

/** A lab check as a table a person can read: "from → to probe" → "pass as <source the server saw>" / "blocked". */
export function outcomes(result: CheckResult): Record<string, string> {
  return Object.fromEntries(result.rows.map((r) => [
    `${r.from} → ${r.to} ${r.probe}`,
    r.actual === 'pass' ? (r.peer ? `pass as ${r.peer}` : 'pass') : 'blocked',
  ]));
}

/** A runner that records every argv it is asked to run (after the namespace wrapper) and passes it on. */
export function recording(inner: CommandRunner): { runner: CommandRunner; commands: string[][] } {
  const commands: string[][] = [];
  return {
    commands,
    runner: {
      run: (argv, options) => {
        commands.push([...argv]);
        return inner.run(argv, options);
      },
      start: (argv, options) => inner.start(argv, options),
    },
  };
}

/**
 * A bare namespace (`vgwk-TAG-PID`) for a test file that needs nothing else: made before its tests; it and the
 * file's scratch files removed after them, interrupted or not.
 */
export function fileNamespace(tag: string): string {
  const ns = `vgwk-${tag}-${process.pid}`;
  test.before(async () => {
    if (isRoot()) await runner.run(['ip', 'netns', 'add', ns]);
  });
  tearDownAlways('remove the namespace and the scratch files', async () => {
    if (!isRoot()) return;
    await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
    await removeScratch();
  });
  return ns;
}
