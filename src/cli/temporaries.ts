/**
 * The files the gateway keeps between runs (the plan cache, the clears left to do in the state directory) are
 * written whole or not at all: to FILE.PID.tmp, then renamed over FILE. A process killed between the two (kill -9,
 * the OOM killer, a container stopped hard, a write cut short by a full /run) left its temporary there for ever,
 * one more at each such kill. The next start removes those that are abandoned (see removeAbandoned).
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** No write takes this long (one small file, then a rename): a temporary older than this is abandoned. */
const WRITE_MS = 60_000;

/** Where this process writes `file` before renaming it over `file`. */
export const temporaryOf = (file: string): string => `${file}.${process.pid}.tmp`;

/**
 * Whether the writer whose pid a temporary names is gone: no process has that pid, or this one has (a container
 * restarted with the same pid: this process writes and renames with nothing between, so no temporary of its own is
 * ever in the middle of a write when this is asked). A pid that another process of another user holds is alive.
 * Only within one PID namespace: see removeAbandoned.
 */
function writerGone(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Removes the temporaries in `dir` of the files `ours` accepts (by name) that are abandoned: written before this process
 * started, by a writer whose process is gone; or older than any write takes (a pid given to another process since).
 * Never another's file, and never one that a live process may be writing: a directory on a volume that containers
 * share (`-v vlan-gateway-run:/run/vlan-gateway`) holds the temporaries of writers of other PID namespaces, whose
 * pids mean nothing here (gone, or this process's own: the gateway has the same pid in every container), and whose
 * write in progress is younger than this process.
 */
export function removeAbandoned(dir: string, ours: (file: string) => boolean): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^(.+)\.(\d+)\.tmp$/.exec(name);
    if (!m || !ours(m[1]!)) continue;
    const path = join(dir, name);
    try {
      const written = statSync(path).mtimeMs;
      if ((written < performance.timeOrigin && writerGone(Number(m[2]))) || Date.now() - written > WRITE_MS) rmSync(path, { force: true });
    } catch {
      // gone meanwhile (renamed by its writer, removed by another start)
    }
  }
}
