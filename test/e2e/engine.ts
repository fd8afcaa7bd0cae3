/**
 * The end-to-end tier's handle on its private Docker engine (test/e2e/docker-env.sh) and on the few things it
 * creates in the machine's own namespace (veth pairs named vgwt*, no addresses, IPv6 off). Every name the tests
 * use starts with `vgwt`, so cleanup removes exactly what the tests made.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { execa, type Options, type Result } from 'execa';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
const ENV_SH = fileURLToPath(new URL('./docker-env.sh', import.meta.url));
const RUN_DIR = process.env.VGW_DOCKER_RUN_DIR ?? '/run/vlan-gateway-test';
const DOCKER_HOST = `unix://${RUN_DIR}/docker.sock`;
export const BASE_IMAGE = process.env.VGW_BASE_IMAGE ?? 'vlan-gateway-base:bookworm-node20';
const PREFIX = 'vgwt';

const SBIN_PATH = `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/local/sbin:/usr/sbin:/sbin`;
/**
 * docker.io's own client when it is there: it speaks the engine's API version (1.41), so flags like
 * `--mac-address` work; a newer client elsewhere on PATH may refuse them against a 20.10 engine.
 */
export const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const engineEnv: Record<string, string> = { DOCKER_HOST, PATH: SBIN_PATH };

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
export const now = () => performance.now();
export const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

export interface Run {
  ok: boolean;
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  ms: number;
}

function summarize(result: Result, ms: number): Run {
  return {
    ok: result.exitCode === 0 && !result.timedOut,
    exitCode: result.exitCode,
    stdout: String(result.stdout ?? ''),
    // `docker run` with macvlan-only networks in an engine started with --ip-forward=false always says this.
    stderr: String(result.stderr ?? '').split('\n').filter((l) => !l.startsWith('WARNING: IPv4 forwarding is disabled')).join('\n'),
    ms,
  };
}

/** Runs a command (never a shell line from the tests: argv only); never throws for a non-zero exit. */
export async function run(file: string, args: readonly string[], options: Options = {}): Promise<Run> {
  const t0 = now();
  const result = await execa(file, args, {
    reject: false,
    timeout: 180_000,
    stdin: 'ignore',
    ...options,
    env: { ...engineEnv, ...(options.env ?? {}) },
  });
  return summarize(result as Result, now() - t0);
}

/** Like run, but throws with the command's output when it fails. */
export async function must(file: string, args: readonly string[], options: Options = {}): Promise<Run> {
  const r = await run(file, args, options);
  if (!r.ok) {
    throw new Error(`${file} ${args.join(' ')} exited ${r.exitCode}:\n${(r.stderr || r.stdout).trim().split('\n').slice(-30).join('\n')}`);
  }
  return r;
}

export const docker = (args: readonly string[], options: Options = {}) => run(DOCKER, args, options);
export const mustDocker = (args: readonly string[], options: Options = {}) => must(DOCKER, args, options);
export const dockerEnvSh = (args: readonly string[], options: Options = {}) => run('bash', [ENV_SH, ...args], { timeout: 1_200_000, ...options });

/** Wall-clock seconds (the containers share the machine's clock) of a Docker RFC 3339 timestamp. */
export function epochSeconds(rfc3339: string): number {
  // Date keeps milliseconds only; the nanoseconds Docker prints are not needed for these bounds.
  return Date.parse(rfc3339.trim()) / 1000;
}

export async function inspect(container: string, format: string): Promise<string> {
  return (await mustDocker(['inspect', '--format', format, container])).stdout.trim();
}

/** The timing lines docker-env.sh prints on stderr ("[docker-env] timing: start 0.7 s"), as name → seconds. */
export function envTimings(stderr: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of stderr.matchAll(/\[docker-env\] timing: (\S+) ([0-9.]+) s/g)) out[m[1]!] = Number(m[2]);
  return out;
}

/** Why this machine cannot run the tier at all, or undefined. Cheap: no install is attempted here. */
export function whyNotRunnable(): string | undefined {
  if (process.platform !== 'linux') return 'the container tier needs Linux';
  if (process.getuid?.() !== 0) return 'the container tier needs root (it starts its own dockerd and creates veth interfaces): run `sudo npm test`';
  const onPath = (cmd: string) => SBIN_PATH.split(':').some((d) => existsSync(`${d}/${cmd}`));
  if (!onPath('dockerd') && !onPath('apt-get')) return 'dockerd is not installed and apt-get is not available to install docker.io';
  return undefined;
}

export const hasCommand = (cmd: string) => SBIN_PATH.split(':').some((d) => existsSync(`${d}/${cmd}`));

/** A veth pair in the machine's namespace: both ends up, IPv6 off before they come up (no link-local route). */
export async function addVethPair(name: string, peer: string): Promise<void> {
  for (const n of [name, peer]) {
    if (!n.startsWith(PREFIX) || n.length > 15) throw new Error(`refusing to create link ${n}: test links are vgwt*, at most 15 characters`);
  }
  await deleteLink(name);
  await deleteLink(peer);
  await must('ip', ['link', 'add', name, 'type', 'veth', 'peer', 'name', peer]);
  for (const n of [name, peer]) {
    await must('sh', ['-c', 'echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"', 'sh', n]);
    await must('ip', ['link', 'set', n, 'up']);
  }
}

export async function deleteLink(name: string): Promise<void> {
  if (!name.startsWith(PREFIX)) throw new Error(`refusing to delete link ${name}`);
  if (existsSync(`/sys/class/net/${name}`)) await run('ip', ['link', 'del', name]);
}

/** Links in the machine's namespace whose name starts with vgwt (ours). */
export async function ourLinks(): Promise<string[]> {
  const r = await must('ip', ['-o', 'link', 'show']);
  return r.stdout.split('\n').map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '').filter((n) => n.startsWith(PREFIX));
}

export async function ourNetns(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(PREFIX));
}

export async function ourContainers(): Promise<string[]> {
  const r = await docker(['ps', '-a', '--format', '{{.Names}}']);
  return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}

export async function ourNetworks(): Promise<string[]> {
  const r = await docker(['network', 'ls', '--filter', 'type=custom', '--format', '{{.Name}}']);
  return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}

export const readIpForward = () => readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();

/** Polls fn until it returns a value other than undefined, or throws after timeoutMs with the last reason. */
export async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const deadline = now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (error) {
      last = error;
    }
    if (now() > deadline) throw new Error(`timed out after ${seconds(timeoutMs)} waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(everyMs);
  }
}
