/**
 * Directories whose files root trusts as it would its own memory: the plan cache (what it reads there becomes
 * iptables rules) and the state of flows left to clear (what it reads there is deleted from conntrack). Such a
 * directory must be root's alone, and so must the way to it: a directory that is root's but sits in one another
 * user can write to (or is reached through a link another user made, as in /tmp) can be swapped for another at any
 * moment, between a check and a read, and root would read, write and prune files where that user chose.
 *
 * So the path is walked one name at a time, links followed by hand: every directory and link on the way belongs to
 * root (or to this process's user), every directory on the way is writable by nobody else, or sticky (like /tmp:
 * others cannot rename or remove what is not theirs), and the directory itself is this user's and writable by
 * nobody else. What it resolves to has no link left in it and nothing another user can change: the callers do
 * their reads and writes there, not through the path they were given.
 */
import { lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';

/** Links followed before the walk gives up (the kernel's own limit, ELOOP). */
const MAX_LINKS = 40;

export type PrivateDir = { readonly path: string; readonly problem?: undefined } | { readonly path?: undefined; readonly problem: string; readonly code?: string };

/**
 * The real path of `dir` when it is a private directory (see above), else what is wrong with it: one sentence naming
 * the directory or link at fault (for a log line), with the error's code when one could not be read (ENOENT: it
 * does not exist). `create`: what does not exist yet is made (mode 0700), one directory at a time, each in one
 * already checked (never through a link: mkdir -p follows them).
 */
export function privateDir(dir: string, { create = false, uid = process.getuid?.() }: { create?: boolean; uid?: number } = {}): PrivateDir {
  const ours = (owner: number) => owner === 0 || owner === uid;
  let current = '/';
  const rootInfo = lstatSync('/');
  if (!ours(rootInfo.uid) || (rootInfo.mode & 0o022) !== 0) return { problem: '/ is writable by users other than root' };
  const names = resolve(dir).split('/').filter((n) => n !== '');
  let links = 0;
  while (names.length > 0) {
    const name = names.shift()!;
    if (name === '.') continue;
    if (name === '..') {
      current = dirname(current); // a directory already walked: its parents were checked on the way down
      continue;
    }
    const next = join(current, name);
    let info;
    try {
      if (create) makeDir(next);
      info = lstatSync(next);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      return { problem: code === 'ENOENT' ? `${next} does not exist` : (error as Error).message, ...(code ? { code } : {}) };
    }
    if (info.isSymbolicLink()) {
      if (!ours(info.uid)) return { problem: `${next} is a link that uid ${info.uid} owns, not root` };
      if (++links > MAX_LINKS) return { problem: `${dir} goes through more than ${MAX_LINKS} links` };
      const target = readlinkSync(next);
      names.unshift(...target.split('/').filter((n) => n !== ''));
      if (isAbsolute(target)) current = '/';
      continue;
    }
    if (!info.isDirectory()) return { problem: `${next} is not a directory` };
    if (!ours(info.uid)) return { problem: `${next} belongs to uid ${info.uid}, not root` };
    // The last directory is checked below; one on the way may be writable by others only when sticky.
    if (names.some((n) => n !== '.') && (info.mode & 0o022) !== 0 && (info.mode & 0o1000) === 0) {
      return { problem: `${next}, on the way to ${dir}, is writable by users other than root (and not sticky, as /tmp is)` };
    }
    current = next;
  }
  const info = lstatSync(current);
  if (info.uid !== uid) return { problem: `${current} belongs to uid ${info.uid}, not to uid ${uid} that runs this` };
  if ((info.mode & 0o022) !== 0) return { problem: `${current} is writable by users other than root` };
  return { path: current };
}

/** Makes a directory where nothing is (anything there, a link included, is left as it is for the walk to judge). */
function makeDir(path: string): void {
  try {
    mkdirSync(path, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
}
