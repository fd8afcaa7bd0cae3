/**
 * The plan cache of the one-shot commands (`plan`, `apply`, `down`) and of the supervisor's start, which begin
 * with nothing parsed and nothing rendered. At 10,000 rule lines the YAML parse and validation of the config take
 * about a quarter of a second, and the render about as much CPU as reading the tables (BENCHMARKS.md). Both are pure functions
 * of their inputs, so their results are kept under a digest of those inputs and of the code that made them:
 *   - the config as validated, by the text of the file (only a valid config is kept: errors always come from
 *     the parser and the validator);
 *   - the desired state as rendered, by everything it is a function of (see planDesired).
 * A result is only ever found by a run that would make exactly it. Nothing here can make a run different: a file
 * that is missing, unreadable, malformed or made by other code is not used, and the work is done as before.
 *
 * Written after the command's work is done (the supervisor: after its start pass, and at its stop), never on the
 * way to the kernel; one file per result, the newest few of each kind kept. Only a directory owned by us and
 * writable by nobody else, reached through directories and links that nobody else can change, is read or written
 * (private-dir.ts).
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConfigCache } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { DesiredStore } from '../plan/desired.js';
import { packDesired, unpackDesired } from './packed-desired.js';
import { privateDir } from './private-dir.js';
import { removeAbandoned, temporaryOf } from './temporaries.js';

export const DEFAULT_PLAN_CACHE = '/run/vlan-gateway/plan-cache';
const FORMAT = 2;
/** Per kind: a config and its state, and a few before them (a NIC attached later is another state). */
const KEEP = 4;

type Kind = 'config' | 'desired';

/** The directory from `VLAN_GATEWAY_PLAN_CACHE` (a path, or `off`), else the default. */
export function planCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const value = env.VLAN_GATEWAY_PLAN_CACHE?.trim();
  if (value === 'off') return undefined;
  return value ? value : DEFAULT_PLAN_CACHE;
}

let identity: string | undefined;

/**
 * A digest of the code that renders: the bundle this runs from, or, run from source, every file under src/. A
 * build or an edit changes it, so a state rendered by other code is never taken for this code's.
 */
function codeIdentity(): string {
  identity ??= computeCodeIdentity();
  return identity;
}

/** codeIdentity, computed again (each new process does it once; the benchmark's "new process" too). */
export function computeCodeIdentity(): string {
  const here = fileURLToPath(import.meta.url);
  const hash = createHash('sha256');
  if (/\.[cm]?js$/.test(here)) {
    hash.update(readFileSync(here));
  } else {
    const root = dirname(dirname(here));
    const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).sort();
    for (const file of files) hash.update(`${relative(root, join(root, file))}\u0000`).update(readFileSync(join(root, file))).update('\u0000');
  }
  return hash.digest('base64url');
}

const fileDigest = (text: string) => createHash('sha256').update(text).digest('base64url').slice(0, 32);

interface StoredFile {
  readonly format: number;
  readonly code: string;
  readonly kind: Kind;
  readonly key: string;
  readonly value: unknown;
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null;
const isArray = (value: unknown): value is unknown[] => Array.isArray(value);

/** The config's parts every run reads, present and of the right kind (a file cut short or edited is not used). */
const configOf = (value: unknown): Config | undefined => (isObject(value) && isObject(value.uplink) && isArray(value.vlans) && isObject(value.forwarding)
  && isArray(value.forwarding.rules) && isArray(value.portForwards) && isObject(value.rules) ? value as unknown as Config : undefined);

export class PlanCache {
  private readonly pending: Array<{ kind: Kind; key: string; value: unknown }> = [];
  /** Results found in the cache, per kind (for the logs). */
  readonly hits: Record<Kind, number> = { config: 0, desired: 0 };
  /** The files those came from. */
  private readonly found = new Set<string>();

  /** The rendered states (see useDesiredStore). */
  readonly desired: DesiredStore = {
    load: (key) => this.read('desired', key, unpackDesired),
    // Packed when it is written (packDesired), after the command's work: a state that would not come back exactly is not kept.
    remember: (key, value) => this.remember('desired', key, value),
  };

  /** The configs as validated (see loadConfig). */
  readonly config: ConfigCache = {
    load: (key) => this.read('config', key, configOf),
    remember: (key, value) => this.remember('config', key, value),
  };

  constructor(readonly dir: string, private readonly code: () => string = codeIdentity) {}

  /**
   * A result to write at the next flush. Of each kind, the newest KEEP wait, as the flush's pruning would leave
   * them: a supervisor flushes at its start and its stop only, and each reload of a new config text in between
   * remembered its config, every one of them held in memory (and written, to be pruned at once) until the stop.
   */
  private remember(kind: Kind, key: string, value: unknown): void {
    const again = this.pending.findIndex((p) => p.kind === kind && p.key === key); // a config reloaded back: once, as the newest
    if (again !== -1) this.pending.splice(again, 1);
    this.pending.push({ kind, key, value });
    const ofKind = this.pending.filter((p) => p.kind === kind);
    if (ofKind.length > KEEP) this.pending.splice(this.pending.indexOf(ofKind[0]!), 1);
  }

  private fileFor(dir: string, kind: Kind, key: string): string {
    return join(dir, `${kind}-${fileDigest(`${this.code()}\u0000${kind}\u0000${key}`)}.json`);
  }

  /** The result under `key`, as `open` makes it from the file's value (undefined: not one this code wrote). */
  private read<T>(kind: Kind, key: string, open: (value: unknown) => T | undefined): T | undefined {
    // Ours alone, and the way to it: a directory that others could write to, or swap for one of theirs, could hand us rules.
    const dir = privateDir(this.dir).path;
    if (dir === undefined) return undefined;
    try {
      const file = this.fileFor(dir, kind, key);
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<StoredFile>;
      if (parsed.format !== FORMAT || parsed.code !== this.code() || parsed.kind !== kind || parsed.key !== key) return undefined;
      const value = open(parsed.value);
      if (value === undefined) return undefined;
      this.hits[kind]++;
      this.found.add(file);
      return value;
    } catch {
      return undefined;
    }
  }

  /**
   * Why the directory is not used though it is there (it, or the way to it, is not root's alone: see
   * private-dir.ts), for a one-shot command to say; undefined when it is used, or is simply missing, read-only or
   * full (a cache is best effort: those are said by a supervisor only).
   */
  distrusted(): string | undefined {
    const made = privateDir(this.dir);
    return made.path === undefined && made.code === undefined ? made.problem : undefined;
  }

  /**
   * Writes what was made since the last flush (best effort: a cache that cannot be written is no error). Returns
   * why nothing could be written, for a supervisor to say once; undefined when it was written, or nothing was due.
   */
  flush(): string | undefined {
    if (this.pending.length === 0) return undefined;
    try {
      const made = privateDir(this.dir, { create: true });
      if (made.path === undefined) {
        // Read-only, full: said as any other write would be.
        if (made.code !== undefined) throw Object.assign(new Error(made.problem), { code: made.code });
        return `${made.problem} (only a directory that root owns and nobody else can write to, reached through none that others can change, is used)`;
      }
      const dir = made.path;
      for (const { kind, key, value } of this.pending) {
        const file = this.fileFor(dir, kind, key);
        // A key always holds the same result: a file this process read whole is only marked as recent (pruning).
        if (this.found.has(file)) {
          const now = new Date();
          utimesSync(file, now, now);
          continue;
        }
        const stored = kind === 'desired' ? packDesired(value as Parameters<typeof packDesired>[0]) : value;
        if (stored === undefined) continue;
        const temporary = temporaryOf(file);
        const body: StoredFile = { format: FORMAT, code: this.code(), kind, key, value: stored };
        try {
          writeFileSync(temporary, JSON.stringify(body), { mode: 0o600 });
          renameSync(temporary, file);
        } catch (error) {
          // Full (the file cut short where the space ran out): not left taking what little space /run has.
          rmSync(temporary, { force: true });
          throw error;
        }
      }
      for (const kind of new Set(this.pending.map((p) => p.kind))) this.prune(dir, kind);
      return undefined;
    } catch (error) {
      // read-only, full, or not ours: the next run parses and renders, as it would without a cache
      const code = (error as NodeJS.ErrnoException).code;
      return code === 'EROFS' ? 'the file system is read-only' : code === 'ENOSPC' ? 'no space left' : (error as Error).message;
    } finally {
      this.pending.length = 0;
    }
  }

  private prune(dir: string, kind: Kind): void {
    const kept = readdirSync(dir)
      .filter((f) => f.startsWith(`${kind}-`) && f.endsWith('.json'))
      .map((f) => ({ path: join(dir, f), at: statSync(join(dir, f)).mtimeMs }))
      .sort((a, b) => b.at - a.at);
    for (const stale of kept.slice(KEEP)) rmSync(stale.path, { force: true });
    // A temporary whose run died before renaming it: at once, not a minute later (a container restarted at once kept
    // it until its stop, or its next start).
    removeAbandoned(dir, (file) => file.startsWith(`${kind}-`));
  }
}
