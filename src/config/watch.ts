/**
 * Watching what a reload reads: the config file and the user's templates. A config reaches the gateway in more
 * than one way, and each needs its own watch:
 *  - the file's directory: editors, `sed -i` and Kubernetes (which swaps a `..data` symlink) replace the file by a
 *    rename, which a watch on the file itself, left on the old inode, would miss;
 *  - the file itself: mounted on its own into a container, a write on the host reaches the file's inode but not
 *    the directory here, which belongs to another file system (a rename on the host reaches neither: loadConfig
 *    says so when it finds the file linked nowhere);
 *  - `rules.dir`, recursively: the user's templates; and its parent, for rules.dir itself coming and going.
 * Events are debounced into one call; the reload compares what it loaded with what runs, so a stray event costs
 * a read. `rearm` sets the watches again after each reload: the file may be a new inode, rules.dir may have moved.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

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

  constructor(
    private readonly path: string,
    private readonly onChange: () => void,
    private readonly options: ConfigWatchOptions = {},
  ) {}

  /**
   * (Re)sets every watch: the config file's directory, the file, `rulesDir` when there is one, and `pendingRulesDir`:
   * the rules.dir of a config that was rejected (the directory missing, a template of it broken), which the user
   * makes or fixes next. A watch on it that cannot be set (not made yet) is not reported: its parent's tells.
   */
  rearm(rulesDir?: string, pendingRulesDir?: string): void {
    this.unwatch();
    if (this.closed) return;
    const name = basename(this.path);
    const dirWatched = this.add(dirname(this.path), false, (changed) => changed === null || changed === name || changed === '..data');
    // The file missing (removed, a dangling symlink) or unreadable: the reload says so, and the directory's watch
    // sees it put back or made readable; only a failure that would also hit a file mounted on its own is news.
    this.add(this.path, false, () => true, true, dirWatched ? ['ENOENT', 'EACCES'] : []);
    for (const dir of new Set([rulesDir, pendingRulesDir])) {
      if (!dir) continue;
      const report = dir === rulesDir;
      this.add(dir, true, () => true, report);
      // rules.dir itself removed, created or swapped (rm -r, then made again; a rename over it): a watch on the
      // directory dies with it, so its parent tells, and the reload that follows sets the watch again.
      const dirName = basename(dir);
      this.add(dirname(dir), false, (changed) => changed === null || changed === dirName, report);
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.unwatch();
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
