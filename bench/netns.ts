/**
 * Throwaway network namespaces for the benchmark. Every name starts with `vgwbench-` and carries a random tag
 * of this run, so two runs on one machine never touch each other's namespaces. Everything the benchmark
 * builds lives inside them; deleting a namespace deletes its interfaces and rules. `cleanup()` deletes every
 * namespace this run created; run.ts calls it in `finally` and on SIGINT / SIGTERM.
 */
import { randomBytes } from 'node:crypto';
import type { Child, CommandRunner } from '../src/exec/runner.js';

const PREFIX = 'vgwbench-';

export class Namespaces {
  private readonly tag = randomBytes(3).toString('hex');
  private counter = 0;
  private readonly live = new Set<string>();
  /** Processes started inside a namespace (start()): a process keeps its namespace alive after `ip netns del`. */
  private readonly processes = new Map<string, Child[]>();

  constructor(private readonly runner: CommandRunner) {}

  /** Creates `vgwbench-<tag>-<label><n>` with loopback up and ip_forward as asked (a new namespace may
   *  inherit 1 from the root namespace). */
  async create(label: string, ipForward = 0): Promise<string> {
    const name = `${PREFIX}${this.tag}-${label}${++this.counter}`;
    this.live.add(name); // before the command: a half-made namespace is still deleted
    await this.runner.run(['ip', 'netns', 'add', name]);
    await this.runner.run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    await this.runner.run(['ip', 'netns', 'exec', name, 'sysctl', '-q', '-w', `net.ipv4.ip_forward=${ipForward}`]);
    return name;
  }

  /** Runs `ip -batch -` inside a namespace: hundreds of links in one process. */
  async batch(name: string, lines: string): Promise<void> {
    if (!this.live.has(name)) throw new Error(`${name} is not a namespace of this run`);
    await this.runner.run(['ip', '-n', name, '-batch', '-'], { input: lines });
  }

  /**
   * Starts a long-running process inside a namespace of this run (a host's traffic), its output ignored. It is
   * stopped when the namespace is removed (and so by cleanup()): it must not run on, holding a deleted namespace.
   */
  start(name: string, argv: readonly string[]): void {
    if (!this.live.has(name)) throw new Error(`${name} is not a namespace of this run`);
    const child = this.runner.start(['ip', 'netns', 'exec', name, ...argv]);
    this.processes.set(name, [...(this.processes.get(name) ?? []), child]);
  }

  async remove(name: string): Promise<void> {
    if (!this.live.has(name)) return;
    const children = this.processes.get(name) ?? [];
    this.processes.delete(name);
    await Promise.all(children.map((child) => child.stop()));
    await this.runner.run(['ip', 'netns', 'del', name], { allowFailure: true });
    this.live.delete(name);
  }

  /** Deletes every namespace this run created (and only those). */
  async cleanup(): Promise<void> {
    for (const name of [...this.live]) {
      try {
        await this.remove(name);
      } catch {
        // keep going: the others must still go
      }
    }
  }

  get names(): readonly string[] {
    return [...this.live];
  }

  /** Namespaces of this run that `ip netns list` still shows (should be none after cleanup). */
  async leftovers(): Promise<string[]> {
    const { stdout } = await this.runner.run(['ip', 'netns', 'list']);
    const mine = `${PREFIX}${this.tag}-`;
    return stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(mine));
  }
}
