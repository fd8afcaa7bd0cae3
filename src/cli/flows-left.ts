/**
 * The UDP flows a one-shot `apply` or `down` has still to clear, kept in a small file while it may be stopped before
 * it clears them. A pass clears the flows a change of the UDP port forwards leaves going the wrong way once the nat
 * table is written (apply/conntrack.ts). An apply killed between the two (Ctrl-C, a CI job's timeout, the OOM killer,
 * while `conntrack -D` reads a big table) leaves the forward in place and the flows where they were: the next apply
 * finds the nat table as planned and clears nothing, and a client that keeps sending from one port (a WireGuard or SIP
 * peer) never reaches the forward's host. `run` repairs it at its start with a listing of conntrack (first-pass.ts);
 * a one-shot apply cannot afford one every time (a no-op apply reads the tables and nothing else).
 *
 * So an apply that is about to write a change that calls for clears first writes them here, and removes them once
 * they are done; the next apply or down that finds the file clears what it names (after its own pass), says so, and
 * removes it. What could not be cleared (a conntrack that failed) stays for the next one; with no conntrack tool
 * there is nothing to retry. A file that cannot be written is no error: the apply goes on as it would without it.
 *
 * One file per network namespace, named by the namespace's inode (as the write lock is: instance-lock.ts), in
 * `/run/vlan-gateway/state` (VLAN_GATEWAY_STATE_DIR moves it), which goes with the machine's, or the container's,
 * restart, as do the flows. Written and read under the namespace's write lock; read only from a directory that root
 * owns and nobody else can write to, reached through none that others can change (private-dir.ts).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isIPv4 } from 'node:net';
import { clearStaleFlows, clearUnpolicedFlows, UNPOLICED_CONNTRACK_MISSING, unpolicedClearedMessage } from '../apply/conntrack.js';
import type { CommandRunner } from '../exec/runner.js';
import { mergeUnpoliced, portText } from '../plan/conntrack.js';
import type { ConntrackClear, Plan } from '../plan/types.js';
import { namespaceInode } from './instance-lock.js';
import { privateDir } from './private-dir.js';
import { removeAbandoned, temporaryOf } from './temporaries.js';

const DEFAULT_STATE_DIR = '/run/vlan-gateway/state';
const FORMAT = 1;

/** The directory from `VLAN_GATEWAY_STATE_DIR`, else the default. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.VLAN_GATEWAY_STATE_DIR?.trim() || DEFAULT_STATE_DIR;
}

const isPort = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65535;
const isPorts = (value: unknown): value is [number, number] =>
  Array.isArray(value) && value.length === 2 && isPort(value[0]) && isPort(value[1]) && value[0] <= value[1];

/** A clear as written here, whole (a file cut short or edited is not used). */
function isClear(value: unknown): value is ConntrackClear {
  if (typeof value !== 'object' || value === null) return false;
  const c = value as Record<string, unknown>;
  if (c.kind !== 'conntrack-clear' || !isPorts(c.ports) || !['added', 'removed', 'changed'].includes(c.forward as string)) return false;
  const local = c.local === undefined || (Array.isArray(c.local) && c.local.every((a) => typeof a === 'string' && isIPv4(a)));
  const target = c.target === undefined || (typeof c.target === 'object' && c.target !== null
    && isIPv4(String((c.target as Record<string, unknown>).address)) && isPorts((c.target as Record<string, unknown>).ports));
  return local && target && (c.local !== undefined || c.target !== undefined);
}

export class FlowsLeft {
  /** `name` undefined: the namespace could not be named (gone meanwhile), and nothing is kept. */
  private constructor(private readonly name: string | undefined, private readonly dir: string) {}

  /** The file of the namespace `--netns` names (or this process's own). */
  static async of(netns: string | undefined, dir = stateDir()): Promise<FlowsLeft> {
    const inode = await namespaceInode(netns).catch(() => undefined);
    return new FlowsLeft(inode === undefined ? undefined : `flows-${inode}.json`, dir);
  }

  /**
   * The file in the directory as resolved, when it and the way to it are ours alone (private-dir.ts): clears handed
   * to us by others could delete flows that are no business of theirs.
   */
  private trustedFile(create = false): string | undefined {
    if (this.name === undefined) return undefined;
    const dir = privateDir(this.dir, { create }).path;
    return dir === undefined ? undefined : join(dir, this.name);
  }

  /** The clears left to do (none when there is no file, or one that is not ours or not whole). */
  read(): ConntrackClear[] {
    const file = this.trustedFile();
    if (file === undefined) return [];
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return [];
    }
    try {
      const parsed = JSON.parse(text) as { format?: unknown; clears?: unknown };
      return parsed.format === FORMAT && Array.isArray(parsed.clears) && parsed.clears.every(isClear) ? parsed.clears : [];
    } catch {
      return [];
    }
  }

  /** Keeps `clears` as what is left to do (none: removes the file). Best effort: never throws. */
  write(clears: readonly ConntrackClear[]): void {
    const unique = [...new Map(clears.map((c) => [JSON.stringify(c), c])).values()];
    try {
      // read-only, full, or not ours: the apply goes on as it would without the file
      const file = this.trustedFile(unique.length > 0);
      if (file === undefined) return;
      if (unique.length === 0) {
        rmSync(file, { force: true });
        return;
      }
      const temporary = temporaryOf(file);
      try {
        writeFileSync(temporary, JSON.stringify({ format: FORMAT, clears: unique }), { mode: 0o600 });
        renameSync(temporary, file);
      } catch (error) {
        rmSync(temporary, { force: true });
        throw error;
      }
    } catch {
      // as above
    }
  }
}

/**
 * Removes what a write of these files (FlowsLeft's, UnpolicedLeft's, of any namespace) killed before its rename left
 * (temporaries.ts): at the start of `run`, `apply` and `down`. Only from the directory these files are read from.
 */
export function removeAbandonedState(dir = stateDir()): void {
  const trusted = privateDir(dir).path;
  if (trusted !== undefined) removeAbandoned(trusted, (file) => /^(?:flows|unpoliced)-\d+-\d+\.json$|^http-\d+\.url$/.test(file));
}

/** "cleared N UDP flows to PORTS …": what the flows were, as far as the clears tell. */
function leftClearedText(cleared: number, ports: string, clears: readonly ConntrackClear[]): string {
  const what = clears.every((c) => c.local !== undefined)
    ? 'that reached the gateway itself although the port is forwarded'
    : clears.every((c) => c.target !== undefined) ? 'that a port forward removed or changed had sent to its old host'
    : 'that a change of the port forwards left going the wrong way';
  return `cleared ${cleared} UDP flow${cleared === 1 ? '' : 's'} to ${ports} ${what}`;
}

/**
 * Clears what the file held (`pending`): what to say of it (`cleared`, `warning`: one line each, without a
 * `vlan-gateway:` prefix or level) and what is still to clear (`still`: all of it when the conntrack tool failed;
 * nothing when there is no tool, as there is then nothing to retry).
 */
export async function clearPending(runner: CommandRunner, pending: readonly ConntrackClear[]): Promise<{ cleared?: string; warning?: string; still: ConntrackClear[] }> {
  const outcome = await clearStaleFlows(runner, pending);
  const ports = [...new Set(pending.map((c) => portText(c.ports)))].join(', ');
  return {
    cleared: outcome.cleared > 0 ? `${leftClearedText(outcome.cleared, ports, pending)}: left by an earlier apply or down that did not get to clear them` : undefined,
    warning: outcome.warning === undefined ? undefined : `UDP flows to ${ports} left by an earlier apply or down could not be cleared: ${outcome.warning}`,
    still: outcome.warning === undefined ? [] : [...pending],
  };
}

/** Plan.unpoliced: the flows forwarded without the policy or the NAT, and the gateway's own addresses then. */
export type Unpoliced = NonNullable<Plan['unpoliced']>;

/** An Unpoliced as written here, whole. */
function isUnpoliced(value: unknown): value is Unpoliced {
  if (typeof value !== 'object' || value === null) return false;
  const u = value as Record<string, unknown>;
  return Array.isArray(u.local) && u.local.every((a) => typeof a === 'string' && isIPv4(a)) && (u.bypassed === undefined || u.bypassed === true);
}

/**
 * The clear of the flows forwarded before the policy was there (Plan.unpoliced), kept while an apply may be stopped
 * before it runs it, as FlowsLeft keeps the port forwards' clears. The pass that puts the policy in where packets went
 * around it clears those flows once the tables are written; an apply killed between the two (kill -9, the OOM
 * killer, a container stopped while it started) left the policy in and the flows as they were: the next apply found
 * the tables as planned, planned no clear, and a flow the policy denies, answered before it came, went on being
 * forwarded (conntrack accepts its packets as established) for as long as it kept sending. Kept before anything is
 * written, removed once the clear has run; the next apply or down, or the supervisor's start, that finds it clears
 * those flows and says so. A file of its own beside FlowsLeft's, with the same rules.
 */
export class UnpolicedLeft {
  /**
   * The file's text as this instance read or wrote each clear: what `remove` takes away. Each write's text is its own
   * (a stamp), so that a clear written since, even one alike, is not taken for it.
   */
  private readonly held = new WeakMap<Unpoliced, string>();

  private constructor(private readonly name: string | undefined, private readonly dir: string) {}

  static async of(netns: string | undefined, dir = stateDir()): Promise<UnpolicedLeft> {
    const inode = await namespaceInode(netns).catch(() => undefined);
    return new UnpolicedLeft(inode === undefined ? undefined : `unpoliced-${inode}.json`, dir);
  }

  private trustedFile(create = false): string | undefined {
    if (this.name === undefined) return undefined;
    const dir = privateDir(this.dir, { create }).path;
    return dir === undefined ? undefined : join(dir, this.name);
  }

  /** The clear left to do, if any (none when there is no file, or one that is not ours or not whole). */
  read(): Unpoliced | undefined {
    const file = this.trustedFile();
    if (file === undefined) return undefined;
    try {
      const text = readFileSync(file, 'utf8');
      const parsed = JSON.parse(text) as { format?: unknown; unpoliced?: unknown };
      if (parsed.format !== FORMAT || !isUnpoliced(parsed.unpoliced)) return undefined;
      this.held.set(parsed.unpoliced, text);
      return parsed.unpoliced;
    } catch {
      return undefined;
    }
  }

  /** Keeps `unpoliced` as the clear left to do (undefined: removes the file). Best effort: never throws. */
  write(unpoliced: Unpoliced | undefined): void {
    try {
      const file = this.trustedFile(unpoliced !== undefined);
      if (file === undefined) return;
      if (unpoliced === undefined) {
        rmSync(file, { force: true });
        return;
      }
      const temporary = temporaryOf(file);
      const text = JSON.stringify({ format: FORMAT, unpoliced, written: randomUUID() });
      try {
        writeFileSync(temporary, text, { mode: 0o600 });
        renameSync(temporary, file);
        this.held.set(unpoliced, text);
      } catch (error) {
        rmSync(temporary, { force: true });
        throw error;
      }
    } catch {
      // read-only, full, or not ours: the apply goes on as it would without the file
    }
  }

  /**
   * Removes the file once the clear `done` (as this instance read or wrote it) has run, if the file still holds it:
   * not a clear written since by a pass beside this one (the supervisor's, while the start's clear of what an
   * earlier run left ran), which is still to do, and would be lost with the process killed before it ran. Read and
   * removed with nothing between (one process's sync calls; other processes write under the namespace's write lock).
   * Best effort: never throws.
   */
  remove(done: Unpoliced): void {
    try {
      const file = this.trustedFile();
      const text = this.held.get(done);
      if (file === undefined || text === undefined || readFileSync(file, 'utf8') !== text) return;
      rmSync(file, { force: true });
    } catch {
      // no file (removed already), or not ours: nothing to remove
    }
  }
}

/**
 * Clears what an earlier apply or start left (UnpolicedLeft): what to say of it, one line, without a `vlan-gateway:`
 * prefix, and whether to keep it (the conntrack tool there, but failing). `local`: the gateway's addresses now.
 */
export async function clearUnpolicedLeft(runner: CommandRunner, pending: Unpoliced, local: readonly string[]): Promise<{ cleared?: string; warning?: string; keep: boolean }> {
  const outcome = await clearUnpolicedFlows(runner, mergeUnpoliced(pending, { local: [...local] })!.local);
  const left = 'left by an earlier apply or start that did not get to clear them';
  return {
    cleared: outcome.cleared > 0 ? `${unpolicedClearedMessage(outcome.cleared, pending)} (${left})` : undefined,
    warning: outcome.warning !== undefined ? `${outcome.warning} (${left})` : outcome.missing ? UNPOLICED_CONNTRACK_MISSING : undefined,
    keep: outcome.warning !== undefined,
  };
}
