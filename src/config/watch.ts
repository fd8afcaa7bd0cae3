/**
 * Watching what a reload reads: the config file and the user's templates. A config reaches the gateway in more
 * than one way, and each needs its own watch:
 *  - the file's directory: editors, `sed -i` and Kubernetes (which swaps a `..data` symlink) replace the file by a
 *    rename, which a watch on the file itself, left on the old inode, would miss;
 *  - the file itself: mounted on its own into a container, a write on the host reaches the file's inode but not
 *    the directory here, which belongs to another file system (a rename on the host reaches neither: loadConfig
 *    says so when it finds the file linked nowhere);
 *  - `rules.dir`, recursively: the user's templates; and its parent, for rules.dir itself coming and going;
 *  - where the file is a symlink, the directory of its target (of each link of a chain): a link to a file elsewhere
 *    that is missing (dangling) or replaced by a rename there changes nothing in the config's own directory. Where
 *    that directory is missing too, its nearest ancestor that exists, for the directory's next part: once it appears
 *    the watches are set again (and a reload asked for, should the file be there already).
 * Events are debounced into one call; the reload compares what it loaded with what runs, so a stray event costs
 * a read. `rearm` sets the watches again after each reload: the file may be a new inode, rules.dir may have moved.
 */
import { existsSync, lstatSync, readlinkSync, realpathSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

/** How many links of a chain of symlinks are followed (the kernel's own limit for a path is 40). */
const MAX_LINKS = 8;

/**
 * The targets of `path` when it is a symlink, link after link, as absolute paths (the last may be missing). Empty for a
 * file that is no link, or a path that is not there.
 */
export function linkTargets(path: string): string[] {
  const targets: string[] = [];
  for (let current = resolve(path); targets.length < MAX_LINKS;) {
    let target: string;
    try {
      if (!lstatSync(current).isSymbolicLink()) break;
      // From the directory the link really is in, as the kernel reads it (that directory may be reached by a link).
      target = resolve(realpathSync(dirname(current)), readlinkSync(current));
    } catch {
      break;
    }
    targets.push(target);
    current = target;
  }
  return targets;
}

/** The nearest ancestor of `dir` that exists, and the name of its child on the way to `dir`. */
function nearestExisting(dir: string): { ancestor: string; child: string } | undefined {
  for (let child = resolve(dir), ancestor = dirname(child); child !== ancestor; child = ancestor, ancestor = dirname(ancestor)) {
    if (existsSync(ancestor)) return { ancestor, child: basename(child) };
  }
  return undefined;
}

export interface ConfigWatchOptions {
  readonly debounceMs?: number;
  /** A watch that cannot be set (path missing, no inotify watches left): reload with SIGHUP meanwhile. */
  readonly onWatchError?: (path: string, error: unknown) => void;
}

export class ConfigWatch {
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Paths whose watch failed, and how, as reported. */
  private readonly reported = new Map<string, string>();
  /** The last rearm's arguments, for a rearm of our own (a missing directory of a symlink's target appeared). */
  private armed: [string | undefined, string | undefined] = [undefined, undefined];

  constructor(
    private readonly path: string,
    private readonly onChange: () => void,
    private readonly options: ConfigWatchOptions = {},
  ) {}

  /**
   * (Re)sets every watch: the config file's directory, the file, `rulesDir` when there is one, and `pendingRulesDir`:
   * the rules.dir of a config that was rejected (the directory missing, a template of it broken), which the user
   * makes or fixes next. A rules.dir missing (not made yet, or removed) is not reported while its parent is watched:
   * the parent tells.
   */
  rearm(rulesDir?: string, pendingRulesDir?: string): void {
    this.unwatch();
    if (this.closed) return;
    this.armed = [rulesDir, pendingRulesDir];
    const home = resolve(dirname(this.path));
    // Per directory, the names in it whose change is a reload: the file's, and those of the symlinks' targets.
    const names = new Map<string, Set<string>>([[home, new Set([basename(this.path), '..data'])]]);
    // Per ancestor that exists of a target's missing directory, the names that lead there.
    const ahead = new Map<string, Set<string>>();
    for (const target of linkTargets(this.path)) {
      const dir = dirname(target);
      if (existsSync(dir)) {
        if (!names.has(dir)) names.set(dir, new Set());
        names.get(dir)!.add(basename(target));
        continue;
      }
      const way = nearestExisting(dir);
      if (!way) continue;
      if (!ahead.has(way.ancestor)) ahead.set(way.ancestor, new Set());
      ahead.get(way.ancestor)!.add(way.child);
    }
    let dirWatched = false;
    for (const [dir, inDir] of names) {
      const next = ahead.get(dir);
      ahead.delete(dir);
      // The config's own directory as it was given (its watch's failure is reported); a target's is not: the
      // reload's error (the file missing, unreadable) says what matters.
      const set = this.add(dir === home ? dirname(this.path) : dir, false, (changed) => {
        if (changed === null || inDir.has(changed)) return true;
        if (next?.has(changed)) this.arrived();
        return false;
      }, dir === home);
      if (dir === home) dirWatched = set;
    }
    for (const [dir, next] of ahead) {
      this.add(dir, false, (changed) => {
        if (changed === null || next.has(changed)) this.arrived();
        return false;
      }, false);
    }
    // The file missing (removed, a dangling symlink) or unreadable: the reload says so, and the directory's watch
    // sees it put back or made readable; only a failure that would also hit a file mounted on its own is news.
    this.add(this.path, false, () => true, true, dirWatched ? ['ENOENT', 'EACCES'] : []);
    for (const dir of new Set([rulesDir, pendingRulesDir])) {
      if (!dir) continue;
      const report = dir === rulesDir;
      // rules.dir itself removed, created or swapped (rm -r, then made again; a rename over it): a watch on the
      // directory dies with it, so its parent tells, and the reload that follows sets the watch again. So rules.dir
      // missing is no watch error while its parent is watched (the reload's error says it is missing; no SIGHUP is
      // needed to see it made); its parent missing too is said once, as rules.dir's.
      const dirName = basename(dir);
      const parentWatched = this.add(dirname(dir), false, (changed) => changed === null || changed === dirName, report, ['ENOENT']);
      this.add(dir, true, () => true, report, parentWatched ? ['ENOENT'] : []);
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.unwatch();
  }

  /**
   * A directory on the way to a symlink's target appeared: the watches are set again, one level further, and a reload
   * is asked for when the config can be read through the link already (made before the new watch was set).
   */
  private arrived(): void {
    if (this.closed) return;
    this.rearm(...this.armed);
    if (existsSync(this.path)) this.fire();
  }

  /** Whether the watch was set. A failure is reported once (a rearm at each reload does not repeat it), until set. */
  private add(path: string, recursive: boolean, relevant: (name: string | null) => boolean, report = true, quiet: readonly string[] = []): boolean {
    try {
      const watcher = watch(path, { recursive, persistent: false }, (_event, name) => {
        if (relevant(name === null ? null : String(name))) this.fire();
      });
      // A watched path that goes away (the file renamed over) errors on some platforms: the next rearm replaces it.
      watcher.on('error', () => undefined);
      this.watchers.push(watcher);
      this.reported.delete(path);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      if (report && !quiet.includes(code) && this.reported.get(path) !== code) {
        this.reported.set(path, code);
        this.options.onWatchError?.(path, error);
      }
      return false;
    }
  }

  private fire(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(this.onChange, this.options.debounceMs ?? 200);
  }

  private unwatch(): void {
    for (const watcher of this.watchers) watcher.close();
    this.watchers = [];
  }
}
