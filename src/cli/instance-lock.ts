/**
 * Locks per network namespace: one supervisor (InstanceLock), and one one-shot apply or down at a time (WriteLock).
 *
 * One supervisor per network namespace. Two `run`s on one namespace each repair the other's "drift": with
 * different configs they rewrite each other's rules for ever, with the same one they race. The lock is a listening
 * socket in Linux's abstract socket namespace named after the target namespace's inode: the kernel frees it when
 * the process dies, however it dies, so there is no stale lock file to clean up. It answers with its holder's pid.
 *
 * Abstract sockets belong to the network namespace of the process that binds them: a supervisor inside the
 * container and one outside with --netns would not see each other; two of either kind do.
 *
 * A namespace named with --netns can be deleted under its supervisor (`ip netns del`, a lab or test torn down), and
 * the kernel gives a deleted namespace's inode to the next one made: a supervisor left running would hold the lock
 * of a namespace it has nothing to do with, and refuse that one's supervisor in its name. So the holder of a
 * --netns lock checks that its namespace is still the one it locked (every second, and before it answers a
 * newcomer); when it is not, it lets the lock go and says so (InstanceLock.watch), and the newcomer takes it.
 */
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { FailureError } from './errors.js';

/** The inode of the namespace `run` manages: the named one (ip netns), else this process's own. */
export async function namespaceInode(netns: string | undefined): Promise<string> {
  const path = netns === undefined ? '/proc/self/ns/net' : `/run/netns/${netns}`;
  const s = await stat(path);
  return `${s.dev}-${s.ino}`;
}

/** A process listening on a lock's name, as /proc shows it (see lockHolder). */
interface HolderProcess {
  readonly pid: number;
  readonly uid: number;
  readonly command: string;
  /**
   * Stopped (a SIGSTOP, Ctrl-Z in its terminal, a debugger): it holds the lock and does nothing until continued, and
   * it cannot say its pid either, so its waiters used to wait out their 60 s knowing neither who nor why.
   */
  readonly stopped: boolean;
}

/**
 * The process listening on the abstract socket `name`: the first found that runs as `uid` (this process's user),
 * else, when every listener on the name is found and none is, the first of them; undefined when none is found
 * (none, or another PID namespace's). An abstract socket has no owner or permissions: any local user in the
 * namespace can bind a lock's name before vlan-gateway does (on a host, `run --netns` and `apply --netns` bind
 * theirs in the machine's own namespace) and answer any pid it likes; such a process (see foreignHolder) is not a
 * vlan-gateway of root's, so neither its answer nor its hold is taken as one. Found from /proc/net/unix (the
 * listening socket's inode, in this process's network namespace) and the processes' open files; read only when
 * the name is taken.
 */
async function lockHolder(name: string, uid: number | undefined = process.getuid?.()): Promise<HolderProcess | undefined> {
  if (uid === undefined) return undefined;
  // /proc/net/unix shows an abstract name's NULs as "@"; node binds one padded with NULs to the whole sun_path.
  const shown = `@${name.slice(1)}`;
  const table = await readFile('/proc/net/unix', 'utf8').catch(() => '');
  // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: listening. A name with "@" written after it shows
  // alike: every such listener is looked at, and one that is ours is taken for the holder.
  const inodes = new Set(table.split('\n').map((line) => line.trim().split(/\s+/))
    .filter((f) => f[3] === '00010000' && f[7] !== undefined && f[7].startsWith(shown) && /^@*$/.test(f[7].slice(shown.length)))
    .map((f) => `socket:[${f[6]}]`));
  if (inodes.size === 0) return undefined;
  const found = new Map<string, HolderProcess>();
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    for (const fd of await readdir(`/proc/${entry}/fd`).catch(() => [])) {
      const link = await readlink(`/proc/${entry}/fd/${fd}`).catch(() => '');
      if (!inodes.has(link) || found.has(link)) continue;
      const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
      const effective = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1]);
      if (!Number.isInteger(effective)) continue;
      const holder = {
        pid: Number(entry),
        uid: effective,
        command: (await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '?')).trim(),
        // T: stopped by a signal; t: stopped by a tracer.
        stopped: /^State:\s+[Tt]\b/m.test(status),
      };
      if (effective === uid) return holder;
      found.set(link, holder);
    }
    if (found.size === inodes.size) break;
  }
  const holders = [...found.values()];
  return holders.length === inodes.size ? holders[0] : undefined;
}

/** The holder of a lock's name when it is a process of another user (see lockHolder), else undefined. */
async function foreignHolder(name: string, uid: number | undefined = process.getuid?.()): Promise<HolderProcess | undefined> {
  const holder = await lockHolder(name, uid);
  return holder !== undefined && holder.uid !== uid ? holder : undefined;
}

/** Said after what a waiter says of a holder that is stopped, else nothing. */
const stoppedText = (holder: HolderProcess | undefined) => (holder?.stopped
  ? `; pid ${holder.pid} is stopped (a SIGSTOP, Ctrl-Z in its terminal, or a debugger): it holds the lock and goes on only once continued (kill -CONT ${holder.pid})`
  : '');

const foreignText = (name: string, holder: HolderProcess) =>
  `the name of its lock (the abstract socket @${name.slice(1)}) is held by pid ${holder.pid} (${holder.command}, uid ${holder.uid}), `
  + `a process of another user, not a vlan-gateway of uid ${process.getuid?.()}: stop that process`;

/** What the holder of a --netns lock answers once its namespace is gone: it has let the lock go. */
const GONE = 'gone';

/** The most a holder's answer can be: a pid or GONE, and the HTTP address, each with its newline. */
const ANSWER_MAX = 160;

/** What a lock's holder says of itself: its pid (or GONE), and where a supervisor's HTTP endpoints listen. */
export interface HolderAnswer {
  /** A pid, GONE, or '' (it did not say). */
  readonly pid: string;
  /** `HOST:PORT` (`[IPv6]:PORT`) as the endpoints are bound, when they are. */
  readonly http?: string;
}

/**
 * Asks the holder of a lock for its pid ('' if it does not say within a second; GONE: see InstanceLock), or
 * undefined when nobody holds it: only when the kernel refuses the connection. A connection not seen within that
 * second (this process stalled on a loaded machine: its timer can fire before it sees the connect) is a holder.
 */
export async function holderPid(name: string): Promise<string | undefined> {
  return (await askHolder(name))?.pid;
}

/**
 * holderPid, with the HTTP address a supervisor adds on a second line once its endpoints listen (a first line alone
 * is how a holder answered before, and how one whose endpoints do not listen yet answers).
 */
export function askHolder(name: string): Promise<HolderAnswer | undefined> {
  return new Promise((resolve) => {
    let text = '';
    let refused = false;
    const socket = createConnection({ path: name });
    const done = () => {
      socket.destroy();
      if (refused) return resolve(undefined);
      const [first = '', second = ''] = text.split('\n').map((line) => line.trim());
      const pid = /^\d+$/.test(first) || first === GONE ? first : '';
      // Only what an address can be: the answer is printed and asked by `status`, and anyone may bind the name.
      const http = pid !== '' && /^(?:[0-9.]+|\[[0-9a-fA-F:.]+(?:%[\w.-]+)?\]):\d{1,5}$/.test(second) ? second : undefined;
      resolve(http === undefined ? { pid } : { pid, http });
    };
    socket.setTimeout(1000, done);
    // A pid (or GONE) and an address, a line each: more is no holder of ours (an abstract name anyone may bind, streaming to fill
    // this process's memory), and is read no further.
    socket.on('data', (chunk) => {
      text += String(chunk);
      if (text.length > ANSWER_MAX) {
        text = '';
        done();
      }
    });
    socket.on('end', done);
    socket.on('error', (error: NodeJS.ErrnoException) => {
      refused = error.code === 'ECONNREFUSED';
      done();
    });
  });
}

/**
 * How long an asker may keep its connection: an answer is a line, read at once (holderPid waits 1 s for it). A
 * local process that connected and never closed (an abstract socket has no permissions) held a file descriptor for
 * as long as the gateway ran, one per connection, and the lock's release, which waits for every connection to end,
 * held the stop for ever.
 */
export const ASKER_MAX_MS = 2000;

/**
 * Listens on the abstract socket `name` (answering with this pid, or what `answer` says), or undefined when another
 * process holds it.
 */
export async function listen(name: string, answer: () => Promise<string> = async () => String(process.pid)): Promise<Server | undefined> {
  const server = createServer((socket) => {
    // An asker gone before the answer (one that gave up waiting, or any local process that connects and resets: an
    // abstract socket has no permissions) is no error: unhandled, it ended the supervisor holding the lock.
    socket.on('error', () => undefined);
    const cut = setTimeout(() => socket.destroy(), ASKER_MAX_MS);
    cut.unref();
    socket.once('close', () => clearTimeout(cut));
    void answer().then((text) => socket.end(`${text}\n`), () => socket.end(`${process.pid}\n`));
  });
  server.unref(); // the lock does not keep the process alive
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: name }, () => resolve());
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    return undefined;
  }
  return server;
}

const where = (netns: string | undefined) => (netns === undefined ? 'this network namespace' : `network namespace ${netns}`);

abstract class Lock {
  protected constructor(private readonly server: Server) {}

  release(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export class InstanceLock extends Lock {
  private timer: NodeJS.Timeout | undefined;
  private lost = false;
  private onLost: (() => void) | undefined;
  private endpoints: (() => string | undefined) | undefined;

  private constructor(server: Server, private readonly netns: string | undefined, private readonly identity: string) {
    super(server);
  }

  /**
   * Takes the namespace's lock, or throws FailureError naming the pid of the supervisor that holds it. Throws
   * WaitStopped, holding nothing, when `stopWaiting` says so while it waits for an apply or down (see waitForWriters).
   */
  static async take(netns: string | undefined, options: { onWait?: (message: string) => void; stopWaiting?: () => boolean } = {}): Promise<InstanceLock> {
    const identity = await namespaceInode(netns);
    const name = `\0vlan-gateway-run-${identity}`;
    for (let attempt = 1; ; attempt++) {
      let lock: InstanceLock | undefined;
      const server = await listen(name, async () => (lock && !(await lock.present()) ? lock.lose() : lock?.answer() ?? String(process.pid)));
      if (server) {
        lock = new InstanceLock(server, netns, identity);
        await lock.waitForWriters(options.onWait ?? (() => undefined), options.stopWaiting).catch(async (error: unknown) => {
          await lock?.release();
          throw error;
        });
        return lock;
      }
      const holder = await lockHolder(name);
      if (holder && holder.uid !== process.getuid?.()) throw new FailureError(`cannot manage ${where(netns)}: ${foreignText(name, holder)}`);
      const pid = await holderPid(name);
      // Its holder's namespace is gone (this one has its inode now): it has let the lock go, or is closing it. Or
      // its holder has just exited.
      if ((pid === GONE || pid === undefined) && attempt < 20) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      // A stopped holder cannot say its pid: /proc can.
      const known = pid && /^\d+$/.test(pid) ? pid : holder?.pid;
      throw new FailureError(`another vlan-gateway run${known ? ` (pid ${known})` : ''} already manages ${where(netns)}: two would undo each other's changes; stop it first${stoppedText(holder)}`);
    }
  }

  /**
   * The pid of the supervisor managing the namespace ('' when one holds its lock but does not say), or undefined
   * when none does. `apply` and `down` ask it once they hold the write lock, and `take` waits for that lock after
   * taking its own: whichever of the two comes second sees the other.
   */
  static async holder(netns: string | undefined): Promise<string | undefined> {
    return (await InstanceLock.ask(netns))?.pid;
  }

  /** holder, with the address the supervisor's HTTP endpoints listen on when they do (`status` asks it). */
  static async ask(netns: string | undefined): Promise<HolderAnswer | undefined> {
    const name = `\0vlan-gateway-run-${await namespaceInode(netns)}`;
    const answer = await askHolder(name);
    // Another user's process on the name is no supervisor (though it keeps one from starting: see take).
    return answer === undefined || answer.pid === GONE || await foreignHolder(name) ? undefined : answer;
  }

  /** Where the holder's HTTP endpoints listen, said to those who ask after the pid (`HOST:PORT`, or undefined). */
  tellEndpoints(bound: () => string | undefined): void {
    this.endpoints = bound;
  }

  private answer(): string {
    const http = this.endpoints?.();
    return http === undefined ? String(process.pid) : `${process.pid}\n${http}`;
  }

  /**
   * Waits (up to the write lock's timeout) for an `apply` or `down` that was already writing when this supervisor
   * took its lock: its start pass then reads what that one left, instead of writing beside it.
   */
  private async waitForWriters(onWait: (message: string) => void, stopWaiting?: () => boolean): Promise<void> {
    const writer = await WriteLock.wait(this.netns, { timeoutMs: WRITE_LOCK_TIMEOUT_MS, onWait, ...(stopWaiting ? { stopWaiting } : {}) });
    await writer.release();
  }

  /**
   * With --netns: checks every `everyMs` that the namespace is still the one locked, and when it is not (deleted,
   * or its name given to another), lets the lock go and calls `onLost` once. Stopped by release().
   */
  watch(onLost: () => void, everyMs = 1000): void {
    this.onLost = onLost;
    if (this.netns === undefined || this.lost) return;
    this.timer = setInterval(() => {
      void this.present().then((present) => {
        if (!present) this.lose();
      });
    }, everyMs);
    this.timer.unref();
  }

  override release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    return this.lost ? Promise.resolve() : super.release();
  }

  /** Whether the namespace is still the one this lock was taken for (one's own always is). */
  private async present(): Promise<boolean> {
    if (this.netns === undefined) return true;
    return namespaceInode(this.netns).then((now) => now === this.identity, () => false);
  }

  private lose(): string {
    if (!this.lost) {
      this.lost = true;
      clearInterval(this.timer);
      this.timer = undefined;
      void super.release();
      this.onLost?.();
    }
    return GONE;
  }
}

/**
 * One `apply` or `down` at a time in a namespace. Two at once each read the namespace before the other wrote, and
 * wrote what their own reading called for: the tables ended as a mix of both configs (each exiting 0), or one
 * failed on what the other had just added and could not roll back. The second now waits for the first to finish,
 * then reads what it left, as iptables --wait does for the xtables lock.
 */
export class WriteLock extends Lock {
  /** The lock if no one holds it now; undefined, at once, if someone does. */
  static async take(netns: string | undefined): Promise<WriteLock | undefined> {
    const server = await listen(await writeLockName(netns));
    return server ? new WriteLock(server) : undefined;
  }

  /** `stopWaiting`: asked at every step of a wait; when it says so, the wait ends with WaitStopped. */
  static async wait(netns: string | undefined, options: { timeoutMs: number; onWait: (message: string) => void; stopWaiting?: () => boolean }): Promise<WriteLock> {
    const name = await writeLockName(netns);
    const deadline = performance.now() + options.timeoutMs;
    let said = false;
    let asked: string | undefined;
    let holder: HolderProcess | undefined;
    for (;;) {
      const server = await listen(name);
      if (server) return new WriteLock(server);
      const pid = await holderPid(name);
      // Looked at again only when the answer changes (a holder stopped or continued changes it: a stopped one does
      // not answer): a wait beside a long apply does not read /proc 20 times a second. And once more at the end.
      const last = performance.now() >= deadline;
      if (pid !== asked || !said || last) {
        holder = await lockHolder(name);
        if (holder && holder.uid !== process.getuid?.()) throw new FailureError(`cannot write to ${where(netns)}: ${foreignText(name, holder)}; nothing was changed`);
      }
      asked = pid;
      const known = pid || holder?.pid; // a stopped holder cannot say its pid: /proc can
      const other = `another vlan-gateway apply or down${known ? ` (pid ${known})` : ''}`;
      if (last) {
        throw new FailureError(`${other} still held ${where(netns)} after ${options.timeoutMs / 1000} s of waiting; nothing was changed${stoppedText(holder)}`);
      }
      if (options.stopWaiting?.()) throw new WaitStopped(`stopped while waiting for ${other} to finish with ${where(netns)}`);
      if (!said) options.onWait(`waiting for ${other} to finish with ${where(netns)}${stoppedText(holder)}`);
      said = true;
      await new Promise((resolve) => setTimeout(resolve, WAIT_STEP_MS));
    }
  }
}

const writeLockName = async (netns: string | undefined) => `\0vlan-gateway-write-${await namespaceInode(netns)}`;

/** A wait for the write lock that its caller ended (a supervisor asked to stop before its start): nothing is held. */
export class WaitStopped extends Error {
  override readonly name = 'WaitStopped';
}

const WAIT_STEP_MS = 50;
/** How long an apply or down waits for another one in the same namespace (10,000 rules apply in about a second). */
export const WRITE_LOCK_TIMEOUT_MS = 60_000;
