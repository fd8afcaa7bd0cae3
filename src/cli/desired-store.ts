/**
 * The planner's memo kept on disk for the CLI. `vlan-gateway apply` and `plan` start with nothing rendered, and at
 * 10,000 rules rendering costs about 75 ms of the 140 ms a no-op otherwise takes (BENCHMARKS.md). A state rendered
 * once is stored under a digest of everything it is a function of (the config, the templates, which NIC carries
 * which zone, the template engine: see planDesired) and of the code that rendered it, so a stored state is only
 * ever found by a run that would render exactly it. Nothing here can make an apply wrong: a file that is missing,
 * unreadable, malformed or made by other code is not used, and the state is rendered as before.
 *
 * Written after the command's work is done, never on the way to the kernel; one file per state, the newest few
 * kept. Only a directory owned by us and writable by nobody else is read or written.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DesiredStore, StoredDesired } from '../plan/desired.js';

export const DEFAULT_RENDER_CACHE = '/run/vlan-gateway/render';
const FORMAT = 1;
const KEEP = 8;
const PREFIX = 'desired-';

/** The directory from `VLAN_GATEWAY_RENDER_CACHE` (a path, or `off`), else the default. */
export function renderCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const value = env.VLAN_GATEWAY_RENDER_CACHE?.trim();
  if (value === 'off') return undefined;
  return value ? value : DEFAULT_RENDER_CACHE;
}

let identity: string | undefined;

/**
 * A digest of the code that renders: the bundle this runs from, or, run from source, every file under src/. A
 * build or an edit changes it, so a state rendered by other code is never taken for this code's.
 */
export function codeIdentity(): string {
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
  readonly key: string;
  readonly desired: StoredDesired;
}

const isArray = (value: unknown): value is unknown[] => Array.isArray(value);

/** The parts every plan reads, present and of the right kind (a file cut short or edited is not used). */
function wellFormed(value: unknown): value is StoredDesired {
  const d = value as Partial<Record<keyof StoredDesired, unknown>> | null;
  return typeof d === 'object' && d !== null && isArray(d.addresses) && isArray(d.chains) && isArray(d.jumps) && isArray(d.sets)
    && typeof d.sysctls === 'object' && d.sysctls !== null
    && d.chains.every((c) => typeof c === 'object' && c !== null && isArray((c as { rules?: unknown }).rules));
}

export class FileDesiredStore implements DesiredStore {
  private readonly pending = new Map<string, StoredDesired>();

  constructor(readonly dir: string, private readonly code: () => string = codeIdentity) {}

  private fileFor(key: string): string {
    return join(this.dir, `${PREFIX}${fileDigest(`${this.code()}\u0000${key}`)}.json`);
  }

  /** Ours alone: a directory that others could write to could hand us rules. */
  private trusted(): boolean {
    try {
      const s = statSync(this.dir);
      return s.isDirectory() && s.uid === process.getuid?.() && (s.mode & 0o022) === 0;
    } catch {
      return false;
    }
  }

  load(key: string): StoredDesired | undefined {
    if (!this.trusted()) return undefined;
    try {
      const parsed = JSON.parse(readFileSync(this.fileFor(key), 'utf8')) as Partial<StoredFile>;
      if (parsed.format !== FORMAT || parsed.code !== this.code() || parsed.key !== key || !wellFormed(parsed.desired)) return undefined;
      return parsed.desired;
    } catch {
      return undefined;
    }
  }

  remember(key: string, desired: StoredDesired): void {
    this.pending.set(key, desired);
  }

  /** Writes what was rendered since the last flush (best effort: a cache that cannot be written is no error). */
  flush(): void {
    if (this.pending.size === 0) return;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      if (!this.trusted()) return;
      for (const [key, desired] of this.pending) {
        const file = this.fileFor(key);
        const temporary = `${file}.${process.pid}.tmp`;
        const body: StoredFile = { format: FORMAT, code: this.code(), key, desired };
        writeFileSync(temporary, JSON.stringify(body), { mode: 0o600 });
        renameSync(temporary, file);
      }
      this.prune();
    } catch {
      // read-only, full, or not ours: the next run renders, as it would without a cache
    } finally {
      this.pending.clear();
    }
  }

  private prune(): void {
    const files = readdirSync(this.dir)
      .filter((f) => f.startsWith(PREFIX))
      .map((f) => ({ path: join(this.dir, f), at: statSync(join(this.dir, f)).mtimeMs }))
      .sort((a, b) => b.at - a.at);
    for (const stale of files.slice(KEEP)) rmSync(stale.path, { force: true });
  }
}
